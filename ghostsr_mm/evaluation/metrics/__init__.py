from .routing import ClassSRRouting

__all__ = ['ClassSRRouting']
