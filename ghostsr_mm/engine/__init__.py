from .hooks import (DumpMetricsHook, FreezeModulesHook, GhostClusterInitHook,
                    GumbelAnnealHook)
from .optimizers import BF16AmpOptimWrapper

__all__ = [
    'BF16AmpOptimWrapper', 'DumpMetricsHook', 'FreezeModulesHook',
    'GhostClusterInitHook', 'GumbelAnnealHook'
]
