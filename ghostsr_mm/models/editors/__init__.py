from .carn import CARNNet, GhostCARNNet
from .classsr import ClassSR, ClassSRClassifier, ClassSRNet, narrowed_state_dict
from .edsr import GhostEDSRNet
from .ghost_base import GhostModelMixin, ghost_layer_args
from .multi_scale_edit_model import MultiScaleEditModel
from .rdn import GhostRDNNet

__all__ = [
    'CARNNet', 'ClassSR', 'ClassSRClassifier', 'ClassSRNet', 'GhostCARNNet',
    'GhostEDSRNet', 'GhostModelMixin', 'GhostRDNNet', 'MultiScaleEditModel',
    'ghost_layer_args', 'narrowed_state_dict'
]
