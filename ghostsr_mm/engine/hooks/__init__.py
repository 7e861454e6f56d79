from .cluster_init_hook import GhostClusterInitHook
from .gumbel_anneal_hook import GumbelAnnealHook

__all__ = ['GhostClusterInitHook', 'GumbelAnnealHook']
