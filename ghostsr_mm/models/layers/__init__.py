from .concat import GrowingConcat, concat_with_torch_cat
from .ghost_conv import (SHIFT_MODES, GhostConv2d, by_order_mapping,
                         conv_epilogue, convert_to_inference, ghost_layers,
                         ghostify)

__all__ = [
    'SHIFT_MODES', 'GhostConv2d', 'GrowingConcat', 'by_order_mapping',
    'concat_with_torch_cat', 'conv_epilogue', 'convert_to_inference',
    'ghost_layers', 'ghostify'
]
