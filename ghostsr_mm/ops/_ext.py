"""Loading the compiled op, and the switch to the pure-PyTorch reference.

Importing ``ghostsr_mm._ext`` registers ``torch.ops.ghostsr.*`` (schemas in
``csrc/pytorch/ghost_shift.cpp``, CPU and CUDA kernels beside it). When the
extension was not built, every op runs its reference
(:mod:`ghostsr_mm.ops.reference`) after one warning.
"""
import warnings
from typing import Optional

from ghostsr_mm.utils import ThreadLocalSwitch

try:
    from ghostsr_mm import _ext  # noqa: F401  (registers torch.ops.ghostsr)
    HAS_EXT = True
    EXT_ERROR: Optional[BaseException] = None
except ImportError as err:  # the extension was not built
    HAS_EXT = False
    EXT_ERROR = err

__all__ = ['HAS_EXT', 'EXT_ERROR', 'reference_mode', 'use_ext']

_state = dict(warned=False, available=HAS_EXT)
_force_reference = ThreadLocalSwitch()


def reference_mode():
    """Run the pure-PyTorch reference instead of the compiled op inside
    the block, e.g. to export ONNX graphs made only of standard operators."""
    return _force_reference.on()


def use_ext() -> bool:
    """Whether the compiled op runs here: built, and not inside
    :func:`reference_mode`. Warns once when it was not built."""
    if _force_reference:
        return False
    if not _state['available'] and not _state['warned']:
        _state['warned'] = True
        warnings.warn(
            'ghostsr_mm._ext is not built, so the ghost shift runs as a slow '
            f'pure-PyTorch reference ({EXT_ERROR}). Build it with '
            '`pip install --no-build-isolation -e .` (see README).',
            RuntimeWarning,
            stacklevel=3)
    return _state['available']
