from .hooks import GhostClusterInitHook, GumbelAnnealHook

__all__ = ['GhostClusterInitHook', 'GumbelAnnealHook']
