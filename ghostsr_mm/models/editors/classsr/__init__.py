from .classsr import ClassSR
from .classsr_net import ClassSRClassifier, ClassSRNet, class_counts
from .narrowing import NarrowedPretrainedInit, narrowed_state_dict
from .routing import branch_flops, routed_inference, routing_flops

__all__ = [
    'ClassSR', 'ClassSRClassifier', 'ClassSRNet', 'NarrowedPretrainedInit',
    'branch_flops', 'class_counts', 'narrowed_state_dict',
    'routed_inference', 'routing_flops'
]
