from .carn import CARNNet, GhostCARNNet
from .edsr import GhostEDSRNet
from .ghost_base import GhostModelMixin, ghost_cfg
from .rdn import GhostRDNNet

__all__ = [
    'CARNNet', 'GhostCARNNet', 'GhostEDSRNet', 'GhostModelMixin',
    'GhostRDNNet', 'ghost_cfg'
]
