"""Metrics, registered in MMagic's ``METRICS``."""
from .metrics import ClassSRRouting

__all__ = ['ClassSRRouting']
