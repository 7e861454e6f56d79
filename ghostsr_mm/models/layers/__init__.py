from .cheap_ops import CHEAP_OPS, CheapOperation, cheap_operation
from .concat import GrowingConcat, concat_with_torch_cat
from .ghost_conv import GhostConv2d, by_order_mapping, conv_epilogue
from .surgery import convert_to_inference, ghost_layers, ghostify

__all__ = [
    'CHEAP_OPS', 'CheapOperation', 'GhostConv2d',
    'GrowingConcat', 'by_order_mapping', 'cheap_operation',
    'concat_with_torch_cat', 'conv_epilogue', 'convert_to_inference',
    'ghost_layers', 'ghostify'
]
