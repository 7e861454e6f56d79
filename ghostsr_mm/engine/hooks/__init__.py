from .cluster_init_hook import GhostClusterInitHook
from .dump_metrics_hook import DumpMetricsHook
from .freeze_hook import FreezeModulesHook
from .gumbel_anneal_hook import GumbelAnnealHook

__all__ = [
    'DumpMetricsHook', 'FreezeModulesHook', 'GhostClusterInitHook',
    'GumbelAnnealHook'
]
