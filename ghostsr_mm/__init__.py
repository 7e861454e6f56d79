"""GhostSR (Nie et al., "Learning Ghost Features for Efficient Image
Super-Resolution") as an MMagic plugin.

Importing ``ghostsr_mm`` (directly or through a config's
``custom_imports = dict(imports=['ghostsr_mm'])``) registers its models and losses into
MMagic's ``MODELS``, its hooks into ``HOOKS`` and its metrics into
``METRICS``.
"""
from . import compat

compat.apply()  # before any MMagic model module is imported

from . import engine, evaluation, models, ops  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ['compat', 'engine', 'evaluation', 'models', 'ops', '__version__']
