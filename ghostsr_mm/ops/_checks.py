"""Argument checks of the reference, with the compiled op's contract
(``csrc/pytorch/ghost_shift.cpp``): a wrong dtype raises ``TypeError``, any
other bad argument ``ValueError``, with the same message on both paths."""
import math
from typing import Sequence

import torch
from torch import Tensor

# ATen's names of dtypes, as the C++ checks print them.
_ATEN_NAMES = {
    torch.float64: 'Double', torch.float32: 'Float', torch.float16: 'Half',
    torch.bfloat16: 'BFloat16', torch.int64: 'Long', torch.int32: 'Int',
    torch.int16: 'Short', torch.int8: 'Char', torch.uint8: 'Byte',
    torch.bool: 'Bool', torch.complex64: 'ComplexFloat',
    torch.complex128: 'ComplexDouble'
}


def aten_name(dtype: torch.dtype) -> str:
    return _ATEN_NAMES.get(dtype, str(dtype))


def shape_str(shape: Sequence[int]) -> str:
    """A shape as ATen prints it: ``[2, 3]``."""
    return str(list(shape))


def check_feature(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f'ghost_shift: `{name}` must be a Tensor, got '
                        f'{type(t).__name__}')
    if t.dim() != 4:
        raise ValueError(f'ghost_shift: `{name}` must be a 4-D tensor (N, C, '
                         f'H, W), got {t.dim()}-D with shape '
                         f'{shape_str(t.shape)}')
    if not t.is_floating_point():
        raise TypeError(f'ghost_shift: `{name}` must be a floating point '
                        f'tensor, got {aten_name(t.dtype)}')


def check_scale(scale: float) -> None:
    # 0 * inf is NaN: the zeros outside the image would not stay zeros.
    if not math.isfinite(scale):
        raise ValueError(f'ghost_shift: `scale` must be finite, got {scale}')


def check_index(t: Tensor, name: str, like: Tensor) -> None:
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f'ghost_shift: `{name}` must be an integer tensor, '
                        f'got {aten_name(t.dtype)}')
    if t.device != like.device:
        raise ValueError(f'ghost_shift: `{name}` must be on the same device '
                         f'as `input` ({like.device}), got {t.device}')


def check_src_offsets(input: Tensor, src: Tensor, offsets: Tensor,
                      in_channels: int) -> None:
    check_index(src, 'src', input)
    if src.dim() != 1:
        raise ValueError('ghost_shift: `src` must be 1-D (C_out,), got shape '
                         f'{shape_str(src.shape)}')
    if src.numel():
        lo, hi = int(src.min()), int(src.max())
        if lo < 0 or hi >= in_channels:
            raise ValueError(
                f'ghost_shift: `src` values must lie in [0, {in_channels}) '
                f'(the input channels), got values in [{lo}, {hi}]')
    check_index(offsets, 'offsets', input)
    if offsets.dim() != 2 or offsets.shape[1] != 2 or \
            offsets.shape[0] != src.shape[0]:
        raise ValueError('ghost_shift: `offsets` must have shape (C_out, 2) = '
                         f'({src.shape[0]}, 2), got '
                         f'{shape_str(offsets.shape)}')


def _four(shape) -> str:
    return '(' + ', '.join(str(s) for s in shape) + ')'


def _check_like_input(t: Tensor, name: str, input: Tensor) -> None:
    """``t`` (the residual or the output) has the dtype and device of
    ``input``."""
    if t.dtype != input.dtype:
        raise ValueError(f'ghost_shift: `{name}` must have the dtype of '
                         f'`input` ({aten_name(input.dtype)}), got '
                         f'{aten_name(t.dtype)}')
    if t.device != input.device:
        raise ValueError(f'ghost_shift: `{name}` must be on the same device '
                         f'as `input` ({input.device}), got {t.device}')


def check_residual(residual: Tensor, input: Tensor, out_channels: int):
    check_feature(residual, 'residual')
    _check_like_input(residual, 'residual', input)
    n, _, h, w = input.shape
    check_residual_shape(residual, (n, out_channels, h, w))


def check_residual_shape(residual: Tensor, shape) -> None:
    if tuple(residual.shape) != tuple(shape):
        raise ValueError('ghost_shift: `residual` must have the output\'s '
                         f'shape {_four(shape)}, got '
                         f'{shape_str(residual.shape)}')


def check_out(out: Tensor, like: Tensor, shape) -> None:
    """``out`` of the shape ``shape`` and with the dtype and device of
    ``like``, one memory place per element."""
    check_feature(out, 'out')
    _check_like_input(out, 'out', like)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f'ghost_shift: `out` must have shape {_four(shape)}, '
                         f'got {shape_str(out.shape)}')
    if any(st == 0 and sz > 1 for st, sz in zip(out.stride(), out.shape)):
        raise ValueError('ghost_shift: `out` has elements that share memory '
                         '(e.g. an expanded tensor); it needs one place per '
                         'element')
