"""The learnable shift as one custom op (GhostSR Eq. 1-2 with the
straight-through weight of Eq. 5-6).

``learnable_ghost_shift(intrinsic, src, channels, weight)`` is the ghost
shift where the shift of each listed output channel is the argmax of a
one-hot (straight-through) weight over the (2d+1)x(2d+1) window, and the
weight gets the gradient of a depthwise correlation with padding d (Eq. 1):
for candidate (i, j) the sum over pixels of
``grad_out * intrinsic[y + i - d, x + j - d]``. The relaxation that makes
the weight (Eq. 3-6) lives in the layer,
:class:`ghostsr_mm.models.layers.GhostConv2d`.
"""
from typing import Optional

import torch
from torch import Tensor

from ._ext import use_ext
from .reference import (_output_format, ghost_shift_backward_reference,
                        ghost_shift_reference,
                        ghost_shift_weight_grad_reference)

__all__ = ['candidate_offsets', 'learnable_ghost_shift']


def candidate_offsets(index: Tensor, max_offset: int) -> Tensor:
    """(dy, dx) shifts of flat window indices (Eq. 2's (i_o, j_o)).

    Candidate (i, j) of the (2d+1)x(2d+1) window reads
    ``input[y + i - d, x + j - d]``, i.e. the shift (d - i, d - j).
    """
    k = 2 * max_offset + 1
    return torch.stack([max_offset - index // k, max_offset - index % k], -1)


def _offsets_from_weight(src: Tensor, channels: Tensor,
                         weight: Tensor) -> Tensor:
    max_offset = (weight.shape[-1] - 1) // 2
    shifts = candidate_offsets(weight.flatten(1).argmax(1), max_offset)
    offsets = src.new_zeros(src.shape[0], 2)
    offsets[channels] = shifts.expand(channels.shape[0], 2)
    return offsets


@torch.library.custom_op('ghostsr::learnable_ghost_shift', mutates_args=())
def _learnable_ghost_shift(input: Tensor,
                           src: Tensor,
                           channels: Tensor,
                           weight: Tensor,
                           residual: Optional[Tensor] = None,
                           scale: float = 1.0,
                           relu: bool = False) -> Tensor:
    offsets = _offsets_from_weight(src, channels, weight)
    if use_ext():
        return torch.ops.ghostsr.ghost_shift(input, src, offsets, residual,
                                             scale, relu)
    return ghost_shift_reference(input, src, offsets, residual, scale, relu)


@_learnable_ghost_shift.register_fake
def _(input, src, channels, weight, residual=None, scale=1.0, relu=False):
    n, _, h, w = input.shape
    return torch.empty((n, src.shape[0], h, w),
                       dtype=input.dtype,
                       device=input.device,
                       memory_format=_output_format(input))


def _learnable_setup(ctx, inputs, output):
    input, src, channels, weight, _, scale, relu = inputs
    # With ReLU the mask out > 0 comes from the output itself.
    ctx.save_for_backward(input, src, channels, weight,
                          output if relu else None)
    ctx.scale = scale


def _learnable_backward(ctx, grad):
    input, src, channels, weight, output = ctx.saved_tensors
    if output is not None:
        grad = torch.ops.aten.threshold_backward(grad, output, 0)  # ReLU
    # needs_input_grad covers only the arguments actually passed.
    needs = ctx.needs_input_grad
    grad_residual = grad if len(needs) > 4 and needs[4] else None
    if ctx.scale != 1:
        grad = grad * ctx.scale
    offsets = _offsets_from_weight(src, channels, weight)
    max_offset = (weight.shape[-1] - 1) // 2
    ext = use_ext()
    grad_input = grad_weight = None
    if needs[0]:
        grad_input = (
            torch.ops.ghostsr.ghost_shift_backward(grad, src, offsets,
                                                   input.shape[1])
            if ext else ghost_shift_backward_reference(
                grad, src, offsets, input.shape[1]))
    if needs[3]:
        grad = grad.to(input.dtype)
        # float32 for float16/bfloat16 inputs: no overflow before the cast
        # to the weight's dtype (float32 under autocast).
        grad_weight = (
            torch.ops.ghostsr.ghost_shift_weight_grad(grad, input, src,
                                                      channels, max_offset)
            if ext else ghost_shift_weight_grad_reference(
                grad, input, src, channels, max_offset))
        if weight.shape[0] == 1:  # one shift shared by the layer
            grad_weight = grad_weight.sum(0, keepdim=True)
        grad_weight = grad_weight.to(weight.dtype)
    return (grad_input, None, None, grad_weight, grad_residual, None,
            None)[:len(needs)]


_learnable_ghost_shift.register_autograd(
    _learnable_backward, setup_context=_learnable_setup)


def learnable_ghost_shift(input: Tensor,
                          src: Tensor,
                          channels: Tensor,
                          weight: Tensor,
                          residual: Optional[Tensor] = None,
                          scale: float = 1.0,
                          relu: bool = False) -> Tensor:
    """Ghost shift whose offsets are the argmax of one-hot window weights,
    with ``ghost_shift``'s fused epilogue.

    Args:
        input (Tensor): Intrinsic features, shape (N, C_in, H, W).
        src (Tensor): int64 (C_out,), the source channel of each output.
        channels (Tensor): int64 (G,), the output channels whose shift is
            learned; every other output channel is copied in place.
        weight (Tensor): (G, 2d+1, 2d+1), or (1, 2d+1, 2d+1) for one shift
            shared by the layer. Its value must be one-hot per channel (the
            straight-through ``W - S.detach() + S`` of Eq. 6 is); its
            gradient is that of a depthwise correlation with this kernel.
        residual, scale, relu: The epilogue ``act(scale * moved +
            residual)``, applied in the shift's pass as by ``ghost_shift``
            (a training step then runs no separate ReLU / add passes,
            forward or backward). Default: none.

    Returns:
        Tensor: Shape (N, C_out, H, W), laid out as ``ghost_shift``'s.
    """
    if weight.dim() != 3 or weight.shape[-1] != weight.shape[-2] or \
            weight.shape[-1] % 2 == 0:
        raise ValueError('learnable_ghost_shift: `weight` must have shape '
                         '(G or 1, 2d+1, 2d+1), got '
                         f'{tuple(weight.shape)}')
    if weight.shape[0] not in (1, channels.shape[0]):
        raise ValueError('learnable_ghost_shift: `weight` must have 1 or '
                         f'len(channels) = {channels.shape[0]} rows, got '
                         f'{weight.shape[0]}')
    return _learnable_ghost_shift(input, src, channels, weight, residual,
                                  scale, relu)
