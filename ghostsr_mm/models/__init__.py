from .editors import (CARNNet, GhostCARNNet, GhostEDSRNet, GhostModelMixin,
                      GhostRDNNet)
from .layers import GhostConv2d, convert_to_inference, ghost_layers

__all__ = [
    'CARNNet', 'GhostCARNNet', 'GhostEDSRNet', 'GhostModelMixin',
    'GhostRDNNet', 'GhostConv2d', 'convert_to_inference', 'ghost_layers'
]
