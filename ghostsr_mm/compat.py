"""Every fix that MMagic 1.2.0 and mmengine 0.10 need on today's PyTorch /
mmcv-lite stack.

Each fix is named after the upstream problem, applies only to the versions
that have it (and only when it is present), once, and says which error it
prevents. :func:`apply` runs when ``ghostsr_mm`` is imported, before any
MMagic model module is, so configs that list ``ghostsr_mm`` in
``custom_imports`` get them too.
"""
import contextlib
import importlib.machinery
import importlib.util
import re
import sys
import types
import warnings
from typing import Callable, List, Tuple

import numpy as np
import torch

from ghostsr_mm.utils import InputError

__all__ = [
    'apply', 'mmcv_has_compiled_ops', 'install_mmcv_ext_placeholder',
    'training_state_globals', 'mmengine_loads_under_weights_only',
    'allow_cpu_distributed', 'silence_dependency_import_warnings',
    'name_undecodable_images'
]


def _version(package: str) -> Tuple[int, ...]:
    from importlib.metadata import version
    return tuple(int(p) for p in re.findall(r'\d+', version(package))[:3])

# ---------------------------------------------------------------------------
# 1. mmcv-lite has no compiled ops.
#
# `import mmagic.models` imports every editor; several (BasicVSR++, EDVR,
# TDAN, StyleGAN, ...) run `from mmcv.ops import ...` at module level, which
# fails with `ModuleNotFoundError: No module named 'mmcv._ext'` under
# mmcv-lite even though the SR path never calls those kernels. A placeholder
# `mmcv._ext` lets the imports succeed; calling any of its kernels raises a
# RuntimeError that says what to install. With a full mmcv (which has a real
# `mmcv._ext`) nothing is installed.
# ---------------------------------------------------------------------------


class MMCVOpsUnavailableError(RuntimeError):
    """Raised when an mmcv kernel is called under mmcv-lite."""


def mmcv_has_compiled_ops() -> bool:
    """Whether the installed mmcv ships its compiled ops (``mmcv._ext``)."""
    if isinstance(sys.modules.get('mmcv._ext'), _MMCVExtPlaceholder):
        return False
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except ModuleNotFoundError:  # no mmcv at all
        return False


class _MMCVExtPlaceholder(types.ModuleType):
    """Stands in for ``mmcv._ext``: every kernel raises when called."""

    def __getattr__(self, name: str) -> Callable:
        if name.startswith('__'):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise MMCVOpsUnavailableError(
                f'mmcv op `{name}` is not available: the installed mmcv '
                '(mmcv-lite) has no compiled ops. Install a full mmcv==2.1.0 '
                'built with ops to use it (see README, "Full mmcv").')

        unavailable.__name__ = name
        return unavailable


def install_mmcv_ext_placeholder() -> bool:
    """Install the placeholder when mmcv has no compiled ops.

    Returns:
        bool: Whether the placeholder is (now) in place.
    """
    if mmcv_has_compiled_ops():
        return False
    if 'mmcv._ext' not in sys.modules:
        placeholder = _MMCVExtPlaceholder('mmcv._ext')
        # A spec, so that tools walking sys.modules (pkgutil) accept it.
        placeholder.__spec__ = importlib.machinery.ModuleSpec(
            'mmcv._ext', loader=None)
        sys.modules['mmcv._ext'] = placeholder
    return True


# ---------------------------------------------------------------------------
# 2. mmengine <= 0.10.7 loads checkpoints with plain `torch.load`, which torch
#    >= 2.6 runs with `weights_only=True`.
#
# `Runner(load_from=...)`, `--resume` and `load_checkpoint` then fail with
# `Weights only load failed ... Unsupported global:
# mmengine.logging.history_buffer.HistoryBuffer`. Rather than turning the
# safety off, the few classes an mmengine training checkpoint holds (its
# message hub's HistoryBuffer and the numpy scalars/arrays inside) are
# allowed around mmengine's loads of local files and this project's own
# (ghostsr_mm.checkpoint), and nowhere else: loading stays
# `weights_only=True`, and torch's allowlist for other loads is unchanged.
# ---------------------------------------------------------------------------


def checkpoint_safe_globals() -> List:
    """The classes and functions an mmengine training checkpoint pickles."""
    from mmengine.logging.history_buffer import HistoryBuffer
    try:  # numpy >= 2 renamed numpy.core to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [
        type(np.dtype(t)) for t in (np.float16, np.float32, np.float64,
                                    np.int8, np.int16, np.int32, np.int64,
                                    np.uint8, np.bool_)
    ]
    # numpy pickles its dtype classes as getattr(numpy.dtypes, name). The
    # weights-only unpickler still refuses to call whatever getattr returns
    # unless that is allowlisted too.
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype,
            getattr] + dtype_classes


def training_state_globals():
    """A context in which ``weights_only`` loads accept an mmengine training
    checkpoint (nothing changes outside it)."""
    if not hasattr(torch.serialization, 'safe_globals'):  # torch < 2.5
        return contextlib.nullcontext()
    return torch.serialization.safe_globals(checkpoint_safe_globals())


def mmengine_loads_under_weights_only() -> bool:
    """Run mmengine's loader of local checkpoint files inside
    :func:`training_state_globals`.

    Returns:
        bool: Whether the loader is wrapped (mmengine <= 0.10.7 with a torch
        that loads weights-only by default).
    """
    import inspect
    default = inspect.signature(torch.load).parameters['weights_only'].default
    if default not in (None, True) or _version('mmengine') > (0, 10, 7):
        return False
    from mmengine.runner.checkpoint import CheckpointLoader
    original = CheckpointLoader._schemes['']
    if getattr(original, '_ghostsr_safe_globals', False):
        return True

    def load_from_local(*args, **kwargs):
        with training_state_globals():
            return original(*args, **kwargs)

    load_from_local._ghostsr_safe_globals = True
    CheckpointLoader._schemes[''] = load_from_local
    return True


# ---------------------------------------------------------------------------
# 3. mmengine <= 0.10.7's PyTorch launcher assumes a GPU.
#
# `mmengine.dist.utils._init_dist_pytorch` calls `torch.cuda.set_device`
# before `init_process_group`, so `--launcher pytorch` on a machine without
# a GPU (gloo backend) fails with `RuntimeError: Found no NVIDIA driver on
# your system`. Where no GPU is visible, the call is skipped; everything
# else is mmengine's own code path.
# ---------------------------------------------------------------------------


def allow_cpu_distributed() -> bool:
    """Let mmengine's PyTorch launcher start on a machine without a GPU.

    Returns:
        bool: Whether the launcher was wrapped (only where no GPU is seen).
    """
    if torch.cuda.is_available() or _version('mmengine') > (0, 10, 7):
        return False
    from mmengine.dist import utils as dist_utils
    original = dist_utils._init_dist_pytorch
    if getattr(original, '_ghostsr_cpu', False):
        return True

    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if init_backend != 'torch':
            return original(backend, init_backend=init_backend, **kwargs)
        torch.distributed.init_process_group(backend=backend, **kwargs)

    _init_dist_pytorch._ghostsr_cpu = True
    dist_utils._init_dist_pytorch = _init_dist_pytorch
    return True


# ---------------------------------------------------------------------------
# 4. Deprecation warnings that MMagic's dependencies print on every import.
#
# `diffusers/utils/outputs.py` (0.24) registers its output classes with
# `torch.utils._pytree._register_pytree_node`, which torch >= 2.2 marks
# deprecated, and mmengine imports `pkg_resources`, which setuptools 80
# (pinned because mmengine needs it) marks deprecated: every process that
# imports MMagic prints these FutureWarning / UserWarnings, each several
# times, on every tool run. Only those two messages are silenced.
# ---------------------------------------------------------------------------


def silence_dependency_import_warnings() -> None:
    """Ignore diffusers' deprecated-pytree FutureWarning and the
    pkg_resources deprecation UserWarning (nothing else)."""
    warnings.filterwarnings(
        'ignore',
        message=r'`torch\.utils\._pytree\._register_pytree_node` is '
        r'deprecated',
        category=FutureWarning,
        module=r'diffusers\.')
    warnings.filterwarnings(
        'ignore',
        message=r'pkg_resources is deprecated as an API',
        category=UserWarning)


# ---------------------------------------------------------------------------
# 5. MMagic <= 1.2.0: a corrupt image file stops training with an OpenCV
#    assertion that names no file.
#
# MMagic's `LoadImageFromFile._load_image` returns what `mmcv.imfrombytes`
# decodes, which is None for a truncated or corrupt file; the next step
# fails in `cv2.cvtColor` (`!_src.empty()`) with no file name, mid-training.
# The wrapped loader raises an error naming the file instead. (The tools also
# check the data before training: ghostsr_mm.datasets.check_config_data.)
# ---------------------------------------------------------------------------


def name_undecodable_images() -> bool:
    """Make MMagic's image loader name a file it cannot decode.

    Returns:
        bool: Whether the loader was wrapped (now or before).
    """
    if _version('mmagic') > (1, 2, 0):
        return False
    from mmagic.datasets.transforms import loading
    original = loading.LoadImageFromFile._load_image
    if getattr(original, '_ghostsr_names_file', False):
        return True

    def _load_image(self, filename):
        img = original(self, filename)
        if img is None:
            raise InputError(f'{filename}: cannot be decoded as an image '
                             '(truncated or corrupt file?)')
        return img

    _load_image._ghostsr_names_file = True
    loading.LoadImageFromFile._load_image = _load_image
    return True


def apply() -> None:
    """Apply every fix whose problem is present (each checks that it has
    not been applied already)."""
    silence_dependency_import_warnings()
    install_mmcv_ext_placeholder()
    mmengine_loads_under_weights_only()
    allow_cpu_distributed()
    name_undecodable_images()
