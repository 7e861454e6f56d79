"""GhostSR (Nie et al., "Learning Ghost Features for Efficient Image
Super-Resolution") as an MMagic plugin.

Importing ``ghostsr_mm`` (directly or through a config's
``custom_imports = dict(imports=['ghostsr_mm'])``) registers its models into
MMagic's ``MODELS`` and its hooks into MMagic's ``HOOKS``.
"""
from . import compat

compat.apply()  # before any MMagic model module is imported

from . import engine, models, ops  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ['compat', 'engine', 'models', 'ops', '__version__']
