from .hooks import DumpMetricsHook, GhostClusterInitHook, GumbelAnnealHook
from .optimizers import BF16AmpOptimWrapper

__all__ = [
    'BF16AmpOptimWrapper', 'DumpMetricsHook', 'GhostClusterInitHook',
    'GumbelAnnealHook'
]
