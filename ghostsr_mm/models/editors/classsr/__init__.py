from .classsr import ClassSR
from .classsr_net import ClassSRClassifier, ClassSRNet, class_counts

__all__ = ['ClassSR', 'ClassSRClassifier', 'ClassSRNet', 'class_counts']
