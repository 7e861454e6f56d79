"""The ghost shift op (GhostSR Eq. 1-2): intrinsic features moved by whole
pixels become ghost features, at no FLOPs.

``ghost_shift(intrinsic, src, offsets)`` writes every output channel in one
pass, with no concat::

    out[n, c, y, x] = intrinsic[n, src[c], y - offsets[c, 0], x - offsets[c, 1]]

zero where the source lies outside the image. An intrinsic channel kept in
place has ``offsets[c] == (0, 0)``; several output channels may share a source
(clustering maps a whole cluster onto one intrinsic channel).

The compiled kernels (``csrc/``, ``torch.ops.ghostsr.*``) run when the
extension is built (:mod:`._ext`); otherwise the reference
(:mod:`.reference`) with the same semantics and errors, after one warning.
The learned shift of Eq. 3-6 is :mod:`.learnable`.
"""
from typing import Optional

import torch
from torch import Tensor

from ._checks import check_out
from ._ext import HAS_EXT, use_ext
from .reference import ghost_shift_reference
from .static import ghost_shift_static

if HAS_EXT:
    from . import registration  # noqa: F401

__all__ = ['ghost_shift']


def ghost_shift(input: Tensor,
                src: Tensor,
                offsets: Tensor,
                residual: Optional[Tensor] = None,
                scale: float = 1.0,
                relu: bool = False,
                out: Optional[Tensor] = None) -> Tensor:
    """Move intrinsic channels into their output places (GhostSR Eq. 1-2).

    Args:
        input (Tensor): Intrinsic features, shape (N, C_in, H, W), float16,
            bfloat16, float32 or float64; contiguous or channels_last.
        src (Tensor): int64 (C_out,), the intrinsic channel each output
            channel comes from. Repeats are allowed.
        offsets (Tensor): int (C_out, 2), the (dy, dx) shift of each output
            channel; (0, 0) copies in place. A per-layer shift may be an
            expanded view (no copy is made).
        residual (Tensor, optional): (N, C_out, H, W), added in the same
            pass (a residual connection after the layer). Default: None.
        scale (float): Multiplies the moved values before the residual is
            added (EDSR's residual scaling). Default: 1.
        relu (bool): Apply ReLU last. Default: False.
        out (Tensor, optional): (N, C_out, H, W) tensor to write the result
            into and return, typically a channel slice of a concatenation
            buffer (NCHW or channels_last): the compiled op writes it in
            place, so the concat costs no copy. An ``input`` or
            ``residual`` sharing memory with ``out`` is read from a copy.
            Where autograd records the call, the result is copied into
            ``out`` instead. Default: None.

    Returns:
        Tensor: ``act(scale * moved + residual)`` where ``moved[n, c, y, x] =
        input[n, src[c], y - dy[c], x - dx[c]]``, zero outside the image;
        shape (N, C_out, H, W), channels_last for a channels_last input. The
        epilogue costs no extra memory pass.

    Raises:
        TypeError: A tensor of the wrong kind (``input`` not floating point,
            ``src`` or ``offsets`` not integer).
        ValueError: Any other bad argument (shapes, devices, ``src`` values
            outside the input channels). The compiled op and the reference
            raise the same error with the same message.
    """
    if torch.onnx.is_in_onnx_export():
        # A deployed model's offsets are constants: slices, pads, a concat.
        moved = ghost_shift_static(input, src, offsets, residual, scale,
                                   relu)
        return moved if out is None else out.copy_(moved)
    ext = use_ext()
    if out is None:
        if ext:
            return torch.ops.ghostsr.ghost_shift(input, src, offsets,
                                                 residual, scale, relu)
        return ghost_shift_reference(input, src, offsets, residual, scale,
                                     relu)
    records_grad = torch.is_grad_enabled() and (
        input.requires_grad or (residual is not None
                                and residual.requires_grad))
    if ext and not records_grad:
        torch.ops.ghostsr.ghost_shift_into(input, src, offsets, residual,
                                           scale, relu, out)
        return out
    moved = ghost_shift(input, src, offsets, residual, scale, relu)
    check_out(out, moved, moved.shape)
    return out.copy_(moved)
