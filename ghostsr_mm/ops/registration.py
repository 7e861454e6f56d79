"""Fake (meta) kernels and autograd of the compiled ops, registered with the
dispatcher so that fake tensors, ``torch.compile`` and
``torch.library.opcheck`` see them. Imported only when the extension is
built (the schemas come from ``csrc/pytorch/ghost_shift.cpp``).

``ghost_shift_into`` (a write into ``out``) has its autograd kernel in C++:
it refuses calls autograd would have to record.
"""
import torch

from .reference import _output_format

_ops = torch.ops.ghostsr


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The kernels' accumulation type: float32 for float16 and bfloat16."""
    return torch.promote_types(dtype, torch.float32)


@torch.library.register_fake('ghostsr::ghost_shift')
def _ghost_shift_fake(input, src, offsets, residual=None, scale=1.0,
                      relu=False):
    n, _, h, w = input.shape
    return torch.empty((n, src.shape[0], h, w),
                       dtype=input.dtype,
                       device=input.device,
                       memory_format=_output_format(input))


@torch.library.register_fake('ghostsr::ghost_shift_into')
def _ghost_shift_into_fake(input, src, offsets, residual, scale, relu, out):
    return None


@torch.library.register_fake('ghostsr::ghost_shift_backward')
def _ghost_shift_backward_fake(grad_output, src, offsets, in_channels):
    n, _, h, w = grad_output.shape
    return grad_output.new_empty((n, in_channels, h, w)).contiguous(
        memory_format=_output_format(grad_output))


@torch.library.register_fake('ghostsr::ghost_shift_weight_grad')
def _ghost_shift_weight_grad_fake(grad_output, input, src, channels,
                                  max_offset):
    k = 2 * max_offset + 1
    return input.new_empty((channels.shape[0], k, k),
                           dtype=opmath_dtype(input.dtype))


def _ghost_shift_setup(ctx, inputs, output):
    input, src, offsets, residual, scale, relu = inputs
    # With ReLU the mask out > 0 comes from the output itself.
    ctx.save_for_backward(src, offsets, output if relu else None)
    ctx.in_channels = input.shape[1]
    ctx.scale = scale


def _ghost_shift_backward(ctx, grad):
    src, offsets, output = ctx.saved_tensors
    if output is not None:
        grad = torch.ops.aten.threshold_backward(grad, output, 0)  # ReLU
    # needs_input_grad covers only the arguments actually passed.
    needs = ctx.needs_input_grad
    grad_input = grad_residual = None
    if needs[0]:
        grad_input = _ops.ghost_shift_backward(grad, src, offsets,
                                               ctx.in_channels)
        if ctx.scale != 1:
            grad_input = grad_input * ctx.scale
    if len(needs) > 3 and needs[3]:
        grad_residual = grad
    return (grad_input, None, None, grad_residual, None, None)[:len(needs)]


torch.library.register_autograd(
    'ghostsr::ghost_shift', _ghost_shift_backward,
    setup_context=_ghost_shift_setup)


# The backward is linear too; its adjoint is the forward shift, which makes
# double backward work.
def _backward_setup(ctx, inputs, output):
    _, src, offsets, _ = inputs
    ctx.save_for_backward(src, offsets)


def _backward_backward(ctx, grad):
    src, offsets = ctx.saved_tensors
    return _ops.ghost_shift(grad, src, offsets), None, None, None


torch.library.register_autograd(
    'ghostsr::ghost_shift_backward', _backward_backward,
    setup_context=_backward_setup)
