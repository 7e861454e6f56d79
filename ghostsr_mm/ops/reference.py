"""Pure-PyTorch reference of the ghost shift ops: the test oracle, and what
runs when the extension is not built (or inside ``reference_mode()``, e.g.
for an ONNX export made of standard operators).

Same semantics, argument checks and errors as the compiled kernels; see
:func:`ghostsr_mm.ops.ghost_shift` for the op itself.
"""
from typing import Optional

import torch
from torch import Tensor

from ._checks import (check_feature, check_index, check_residual,
                      check_scale, check_src_offsets, shape_str)
from .epilogue import apply_epilogue

__all__ = [
    'ghost_shift_reference', 'ghost_shift_backward_reference',
    'ghost_shift_weight_grad_reference'
]


def _gather_index(size: int, shift: Tensor):
    """Source positions pos - shift per channel, and where they are inside."""
    pos = torch.arange(size, device=shift.device)[None, :] - shift[:, None]
    inside = (pos >= 0) & (pos < size)
    return pos.clamp(0, size - 1), inside


def _output_format(input: Tensor) -> torch.memory_format:
    """The compiled kernels' output layout: channels_last for an input that
    is channels_last and not also contiguous."""
    if not input.is_contiguous() and input.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def ghost_shift_reference(input: Tensor,
                          src: Tensor,
                          offsets: Tensor,
                          residual: Optional[Tensor] = None,
                          scale: float = 1.0,
                          relu: bool = False) -> Tensor:
    """Reference of :func:`~ghostsr_mm.ops.ghost_shift` by advanced
    indexing.

    Args:
        input (Tensor): Intrinsic features, shape (N, C_in, H, W).
        src (Tensor): int64 (C_out,), the source channel of each output.
        offsets (Tensor): int (C_out, 2), the (dy, dx) shift of each output.
        residual, scale, relu: The epilogue, as ``ghost_shift``.

    Returns:
        Tensor: Shape (N, C_out, H, W), in the layout the kernels return.
    """
    check_feature(input, 'input')
    check_scale(scale)
    check_src_offsets(input, src, offsets, input.size(1))
    if residual is not None:
        check_residual(residual, input, src.numel())
    h, w = input.shape[-2:]
    offsets = offsets.long()
    ys, in_y = _gather_index(h, offsets[:, 0])  # (C_out, H)
    xs, in_x = _gather_index(w, offsets[:, 1])  # (C_out, W)
    out = input[:, src.long()[:, None, None], ys[:, :, None], xs[:, None, :]]
    # where(), not a multiplication by the mask: an inf or NaN moved out of
    # the image leaves a 0, as in the kernels.
    inside = in_y[:, :, None] & in_x[:, None, :]
    out = torch.where(inside, out, out.new_zeros(()))
    out = apply_epilogue(out, residual, scale, relu)
    return out.contiguous(memory_format=_output_format(input))


def ghost_shift_backward_reference(grad_output: Tensor, src: Tensor,
                                   offsets: Tensor, in_channels: int) -> Tensor:
    """Reference gradient of the ghost shift to its input.

    The inverse shift of every output channel, summed per source channel.
    """
    check_feature(grad_output, 'grad_output')
    if in_channels <= 0:
        raise ValueError('ghost_shift_backward: `in_channels` must be '
                         f'positive, got {in_channels}')
    check_src_offsets(grad_output, src, offsets, in_channels)
    if grad_output.shape[1] != src.shape[0]:
        raise ValueError('ghost_shift_backward: `grad_output` must have '
                         f'C_out = {src.shape[0]} channels (len(src)), got '
                         f'{grad_output.shape[1]}')
    inverse = ghost_shift_reference(
        grad_output, torch.arange(src.numel(), device=src.device),
        -offsets.long())
    n, _, h, w = grad_output.shape
    grad_input = grad_output.new_zeros(n, in_channels, h, w)
    grad_input.index_add_(1, src.long(), inverse)
    return grad_input.contiguous(memory_format=_output_format(grad_output))


def ghost_shift_weight_grad_reference(grad_output: Tensor, input: Tensor,
                                      src: Tensor, channels: Tensor,
                                      max_offset: int) -> Tensor:
    """Reference gradient of the one-hot shift weights of ``channels``.

    The weight gradient of a depthwise correlation with padding
    ``max_offset``, computed by ``torch.nn.grad.conv2d_weight``.

    Returns:
        Tensor: Shape (len(channels), 2d+1, 2d+1), float32 for float16 and
        bfloat16 inputs (as the kernels: a sum over N·H·W products
        overflows float16), else the input's dtype.
    """
    check_feature(grad_output, 'grad_output')
    check_feature(input, 'input')
    if max_offset < 0:
        raise ValueError('ghost_shift_weight_grad: `max_offset` must be >= '
                         f'0, got {max_offset}')
    check_index(channels, 'channels', input)
    if channels.dim() != 1:
        raise ValueError('ghost_shift_weight_grad: `channels` must be 1-D, '
                         f'got shape {shape_str(channels.shape)}')
    k = 2 * max_offset + 1
    acc = torch.promote_types(input.dtype, torch.float32)
    channels = channels.long()
    features = input[:, src.long()[channels]].to(acc)
    grads = grad_output[:, channels].to(acc)
    weight = torch.nn.grad.conv2d_weight(
        features, (channels.numel(), 1, k, k),
        grads,
        padding=max_offset,
        groups=channels.numel())
    return weight[:, 0]
