"""Every fix that MMagic 1.2.0 and mmengine 0.10 need on today's PyTorch /
mmcv-lite stack: each is named after the upstream problem, says which error
it prevents and applies once, only to the versions that have it.
:func:`apply` runs when ``ghostsr_mm`` is imported (also through a config's
``custom_imports``), before any MMagic model module is.
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

# 1. mmcv-lite has no compiled ops: `import mmagic.models` imports editors
# (BasicVSR++, EDVR, StyleGAN, ...) that run `from mmcv.ops import ...` and
# fail with `No module named 'mmcv._ext'`, though SR never calls them. A
# placeholder `mmcv._ext` lets them import; its kernels raise when called.


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
    """Install the placeholder when mmcv has no compiled ops; returns
    whether it is (now) in place."""
    if mmcv_has_compiled_ops():
        return False
    if 'mmcv._ext' not in sys.modules:
        placeholder = _MMCVExtPlaceholder('mmcv._ext')
        # A spec, so that tools walking sys.modules (pkgutil) accept it.
        placeholder.__spec__ = importlib.machinery.ModuleSpec(
            'mmcv._ext', loader=None)
        sys.modules['mmcv._ext'] = placeholder
    return True


# 2. mmengine <= 0.10.7 loads checkpoints with plain `torch.load`, which
# torch >= 2.6 runs weights-only: `load_from` and `--resume` fail with
# `Unsupported global: mmengine.logging.history_buffer.HistoryBuffer`. The
# few classes a training checkpoint holds are allowed around mmengine's
# loads of local files and this project's own, nowhere else.


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
    :func:`training_state_globals`; returns whether it is wrapped."""
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


# 3. mmengine <= 0.10.7's `_init_dist_pytorch` calls `torch.cuda.set_device`
# first, so `--launcher pytorch` without a GPU fails with `Found no NVIDIA
# driver on your system`; where no GPU is visible the call is skipped.


def allow_cpu_distributed() -> bool:
    """Let mmengine's PyTorch launcher start without a GPU; returns whether
    the launcher was wrapped."""
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


# 4. Deprecation warnings printed on every import of MMagic: diffusers 0.24
# calls `torch.utils._pytree._register_pytree_node` (deprecated since torch
# 2.2) and mmengine imports `pkg_resources` (deprecated by setuptools 80).


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


# 5. MMagic <= 1.2.0's `LoadImageFromFile` returns None for a corrupt file,
# and training stops in `cv2.cvtColor` (`!_src.empty()`) naming no file.


def name_undecodable_images() -> bool:
    """Make MMagic's image loader name a file it cannot decode; returns
    whether the loader is wrapped."""
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
    """Apply every fix whose problem is present, once."""
    silence_dependency_import_warnings()
    install_mmcv_ext_placeholder()
    mmengine_loads_under_weights_only()
    allow_cpu_distributed()
    name_undecodable_images()
