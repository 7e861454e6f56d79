from .hooks import DumpMetricsHook, GhostClusterInitHook, GumbelAnnealHook

__all__ = ['DumpMetricsHook', 'GhostClusterInitHook', 'GumbelAnnealHook']
