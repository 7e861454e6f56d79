"""Every fix that MMagic 1.2.0 needs on today's PyTorch / mmcv stack.

Each fix applies only when its problem is present and says which error it
prevents. :func:`apply` runs when ``ghostsr_mm`` is imported, before any
MMagic model module is, so configs that list ``ghostsr_mm`` in
``custom_imports`` get them too.
"""
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Callable, List

import numpy as np
import torch

__all__ = [
    'apply', 'mmcv_has_compiled_ops', 'install_mmcv_ext_placeholder',
    'checkpoint_safe_globals', 'allow_mmengine_checkpoints',
    'allow_cpu_distributed', 'silence_dependency_import_warnings',
    'name_undecodable_images', 'install_controlnet_aux_placeholder'
]

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
# 2. torch >= 2.6 loads checkpoints with `weights_only=True`.
#
# mmengine 0.10.7 calls plain `torch.load`, so `Runner(load_from=...)`,
# `--resume` and `load_checkpoint` fail with `Weights only load failed ...
# Unsupported global: mmengine.logging.history_buffer.HistoryBuffer`. Rather
# than turning the safety off, the few classes an mmengine checkpoint holds
# (its message hub's HistoryBuffer and the numpy scalars/arrays inside) are
# added to torch's allowlist. Loading stays `weights_only=True`.
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


def _weights_only_is_default() -> bool:
    import inspect
    default = inspect.signature(torch.load).parameters['weights_only'].default
    return default is None or default is True


def allow_mmengine_checkpoints() -> bool:
    """Allowlist mmengine's checkpoint classes for ``weights_only`` loads.

    Returns:
        bool: Whether the allowlist was extended (only where torch loads with
        ``weights_only=True`` by default and has ``add_safe_globals``).
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return False
    if not _weights_only_is_default():
        return False
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    return True


# ---------------------------------------------------------------------------
# 3. mmengine's PyTorch launcher assumes a GPU.
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
    if torch.cuda.is_available():
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
# 5. A corrupt image file stops training with an OpenCV assertion that names
#    no file.
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
    from mmagic.datasets.transforms import loading
    original = loading.LoadImageFromFile._load_image
    if getattr(original, '_ghostsr_names_file', False):
        return True

    def _load_image(self, filename):
        img = original(self, filename)
        if img is None:
            raise ValueError(f'{filename}: cannot be decoded as an image '
                             '(truncated or corrupt file?)')
        return img

    _load_image._ghostsr_names_file = True
    loading.LoadImageFromFile._load_image = _load_image
    return True


# ---------------------------------------------------------------------------
# 6. `from mmagic.apis import MMagicInferencer` needs controlnet_aux.
#
# `mmagic/apis/inferencers/controlnet_animation_inferencer.py` runs
# `from controlnet_aux import HEDdetector` at module level, and
# `mmagic.apis` imports every inferencer, so without controlnet_aux (a
# ControlNet package with a long chain of vision dependencies, unused by
# super-resolution) `from mmagic.apis import MMagicInferencer` fails with
# `No module named 'controlnet_aux'`. A placeholder module lets the import
# succeed; using HEDdetector (the ControlNet animation inferencer) raises a
# clear error. With controlnet_aux installed nothing is installed.
# ---------------------------------------------------------------------------


class ControlNetAuxUnavailableError(RuntimeError):
    """Raised when the controlnet_aux placeholder is used."""


def install_controlnet_aux_placeholder() -> bool:
    """Install a placeholder ``controlnet_aux`` when it is not installed.

    Returns:
        bool: Whether the placeholder is (now) in place.
    """
    current = sys.modules.get('controlnet_aux')
    if current is not None:
        return getattr(current, '_ghostsr_placeholder', False)
    if importlib.util.find_spec('controlnet_aux') is not None:
        return False

    class HEDdetector:
        """Stands in for controlnet_aux.HEDdetector."""

        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            raise ControlNetAuxUnavailableError(
                'controlnet_aux is not installed; MMagic\'s ControlNet '
                'animation inferencer needs it (`pip install controlnet_aux`)'
                '. Super-resolution does not.')

    module = types.ModuleType('controlnet_aux')
    module.__spec__ = importlib.machinery.ModuleSpec(
        'controlnet_aux', loader=None)
    module.HEDdetector = HEDdetector
    module._ghostsr_placeholder = True
    sys.modules['controlnet_aux'] = module
    return True


def apply() -> None:
    """Apply every fix whose problem is present."""
    silence_dependency_import_warnings()
    install_mmcv_ext_placeholder()
    allow_mmengine_checkpoints()
    allow_cpu_distributed()
    name_undecodable_images()
    install_controlnet_aux_placeholder()
