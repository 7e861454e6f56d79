from .editors import (CARNNet, GhostCARNNet, GhostEDSRNet, GhostModelMixin,
                      GhostRDNNet, MultiScaleEditModel)
from .layers import GhostConv2d, convert_to_inference, ghost_layers

__all__ = [
    'CARNNet', 'GhostCARNNet', 'GhostEDSRNet', 'GhostModelMixin',
    'GhostRDNNet', 'MultiScaleEditModel', 'GhostConv2d', 'convert_to_inference', 'ghost_layers'
]
