from .cluster_init_hook import GhostClusterInitHook
from .dump_metrics_hook import DumpMetricsHook
from .gumbel_anneal_hook import GumbelAnnealHook

__all__ = ['DumpMetricsHook', 'GhostClusterInitHook', 'GumbelAnnealHook']
