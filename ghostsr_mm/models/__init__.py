from . import losses
from .editors import (CARNNet, ClassSR, ClassSRClassifier, ClassSRNet,
                      GhostCARNNet, GhostEDSRNet, GhostModelMixin,
                      GhostRDNNet, MultiScaleEditModel,
                      narrowed_state_dict)
from .layers import GhostConv2d, convert_to_inference, ghost_layers
from .utils import unwrap_generator

__all__ = [
    'CARNNet', 'ClassSR', 'ClassSRClassifier', 'ClassSRNet', 'GhostCARNNet',
    'GhostEDSRNet', 'GhostModelMixin', 'GhostRDNNet', 'MultiScaleEditModel',
    'GhostConv2d', 'convert_to_inference', 'ghost_layers',
    'narrowed_state_dict', 'unwrap_generator'
]
