from .carn import CARNNet, GhostCARNNet
from .edsr import GhostEDSRNet
from .ghost_base import GhostModelMixin, ghost_layer_args
from .multi_scale_edit_model import MultiScaleEditModel
from .rdn import GhostRDNNet

__all__ = [
    'CARNNet', 'GhostCARNNet', 'GhostEDSRNet', 'GhostModelMixin',
    'GhostRDNNet', 'MultiScaleEditModel', 'ghost_layer_args'
]
