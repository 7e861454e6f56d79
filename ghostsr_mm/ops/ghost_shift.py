"""The ghost shift op (GhostSR Eq. 1-2): intrinsic features moved by whole
pixels become ghost features, at no FLOPs.

``ghost_shift(intrinsic, src, offsets)`` writes every output channel in one
pass, with no concat::

    out[n, c, y, x] = intrinsic[n, src[c], y - offsets[c, 0], x - offsets[c, 1]]

zero where the source lies outside the image. An intrinsic channel kept in
place has ``offsets[c] == (0, 0)``; several output channels may share a source
(clustering maps a whole cluster onto one intrinsic channel).

``learnable_ghost_shift(intrinsic, src, channels, weight)`` is the same move
where the shift of each listed output channel is the argmax of a one-hot
(straight-through) weight over the (2d+1)x(2d+1) window, and the weight gets
the gradient of a depthwise correlation with padding d (Eq. 1): for candidate
(i, j) the sum over pixels of grad_out * intrinsic[y + i - d, x + j - d].

The compiled kernels (``csrc/``, registered as ``torch.ops.ghostsr.*``) are
used when the extension is built; otherwise a pure PyTorch reference with the
same semantics runs, after one warning.
"""
import warnings
from typing import Optional

import torch
from torch import Tensor

from ghostsr_mm.utils import ThreadLocalSwitch

try:
    from ghostsr_mm import _ext  # noqa: F401  (registers torch.ops.ghostsr)
    HAS_EXT = True
    _EXT_ERROR: Optional[BaseException] = None
except ImportError as err:  # the extension was not built
    HAS_EXT = False
    _EXT_ERROR = err

__all__ = [
    'HAS_EXT', 'ghost_shift', 'learnable_ghost_shift',
    'ghost_shift_reference', 'ghost_shift_backward_reference',
    'ghost_shift_weight_grad_reference', 'candidate_offsets', 'reference_mode',
    'apply_epilogue'
]

_warned = False
_force_reference = ThreadLocalSwitch()


def reference_mode():
    """Run the pure-PyTorch reference instead of the compiled op inside
    the block, e.g. to export ONNX graphs made only of standard operators."""
    return _force_reference.on()


def _use_ext() -> bool:
    global _warned
    if _force_reference:
        return False
    if not HAS_EXT and not _warned:
        _warned = True
        warnings.warn(
            'ghostsr_mm._ext is not built, so the ghost shift runs as a slow '
            f'pure-PyTorch reference ({_EXT_ERROR}). Build it with '
            '`pip install --no-build-isolation -e .` (see README).',
            RuntimeWarning,
            stacklevel=3)
    return HAS_EXT


# --------------------------------------------------------------------------
# Argument checks of the reference (the compiled op checks in C++).
# --------------------------------------------------------------------------
def _check_feature(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor) or t.dim() != 4:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f'ghost_shift: `{name}` must be a 4-D tensor '
                         f'(N, C, H, W), got {shape}')
    if not t.is_floating_point():
        raise ValueError(f'ghost_shift: `{name}` must be a floating point '
                         f'tensor, got {t.dtype}')


def _check_index(t: Tensor, name: str, like: Tensor) -> None:
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(
            f'ghost_shift: `{name}` must be an integer tensor, got {t.dtype}')
    if t.device != like.device:
        raise ValueError(f'ghost_shift: `{name}` must be on the same device '
                         f'as `input` ({like.device}), got {t.device}')


def _check_args(input: Tensor, src: Tensor, offsets: Tensor,
                in_channels: int) -> None:
    _check_index(src, 'src', input)
    _check_index(offsets, 'offsets', input)
    if src.dim() != 1:
        raise ValueError('ghost_shift: `src` must be 1-D (C_out,), got shape '
                         f'{tuple(src.shape)}')
    if tuple(offsets.shape) != (src.numel(), 2):
        raise ValueError('ghost_shift: `offsets` must have shape (C_out, 2) = '
                         f'({src.numel()}, 2), got {tuple(offsets.shape)}')
    if src.numel() and (int(src.min()) < 0 or int(src.max()) >= in_channels):
        raise ValueError(
            f'ghost_shift: `src` values must lie in [0, {in_channels}) (the '
            f'input channels), got values in [{int(src.min())}, '
            f'{int(src.max())}]')


# --------------------------------------------------------------------------
# Pure PyTorch reference: the test oracle and the fallback.
# --------------------------------------------------------------------------
def _gather_index(size: int, shift: Tensor):
    """Source positions pos - shift per channel, and where they are inside."""
    pos = torch.arange(size, device=shift.device)[None, :] - shift[:, None]
    inside = (pos >= 0) & (pos < size)
    return pos.clamp(0, size - 1), inside


def _check_residual(residual: Tensor, input: Tensor, out_channels: int):
    _check_feature(residual, 'residual')
    if residual.dtype != input.dtype:
        raise ValueError('ghost_shift: `residual` must have the dtype of '
                         f'`input` ({input.dtype}), got {residual.dtype}')
    if residual.device != input.device:
        raise ValueError('ghost_shift: `residual` must be on the same device '
                         f'as `input` ({input.device}), got {residual.device}')
    n, _, h, w = input.shape
    _check_residual_shape(residual, (n, out_channels, h, w))


def _check_residual_shape(residual: Tensor, shape) -> None:
    if tuple(residual.shape) != tuple(shape):
        raise ValueError('ghost_shift: `residual` must have the output\'s '
                         f'shape {tuple(shape)}, got {tuple(residual.shape)}')


def _check_out(out: Tensor, like: Tensor, shape) -> None:
    """`out` of the shape ``shape`` and with the dtype and device of
    ``like``."""
    if not isinstance(out, Tensor):
        raise ValueError(f'`out` must be a Tensor, got {type(out).__name__}')
    if out.dtype != like.dtype or out.device != like.device:
        raise ValueError(f'`out` must have dtype {like.dtype} on '
                         f'{like.device} (the input\'s), got {out.dtype} on '
                         f'{out.device}')
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f'`out` must have shape {tuple(shape)}, got '
                         f'{tuple(out.shape)}')


def ghost_shift_reference(input: Tensor,
                          src: Tensor,
                          offsets: Tensor,
                          residual: Optional[Tensor] = None,
                          scale: float = 1.0,
                          relu: bool = False) -> Tensor:
    """Reference of :func:`ghost_shift` by advanced indexing.

    Args:
        input (Tensor): Intrinsic features, shape (N, C_in, H, W).
        src (Tensor): int64 (C_out,), the source channel of each output.
        offsets (Tensor): int (C_out, 2), the (dy, dx) shift of each output.
        residual, scale, relu: The epilogue, as :func:`ghost_shift`.

    Returns:
        Tensor: Shape (N, C_out, H, W).
    """
    _check_feature(input, 'input')
    _check_args(input, src, offsets, input.size(1))
    if residual is not None:
        _check_residual(residual, input, src.numel())
    h, w = input.shape[-2:]
    offsets = offsets.long()
    ys, in_y = _gather_index(h, offsets[:, 0])  # (C_out, H)
    xs, in_x = _gather_index(w, offsets[:, 1])  # (C_out, W)
    out = input[:, src.long()[:, None, None], ys[:, :, None], xs[:, None, :]]
    mask = (in_y[:, :, None] & in_x[:, None, :]).to(input.dtype)
    return apply_epilogue(out * mask, residual, scale, relu)


def apply_epilogue(moved: Tensor,
                   residual: Optional[Tensor] = None,
                   scale: float = 1.0,
                   relu: bool = False,
                   inplace: bool = False,
                   out: Optional[Tensor] = None) -> Tensor:
    """``act(scale * moved + residual)`` with standard ops: what the fused
    epilogue of :func:`ghost_shift` computes in the same pass.

    Args:
        inplace (bool): Overwrite ``moved`` (a fresh output that nothing
            else holds, e.g. a conv's) instead of allocating. Default: False.
        out (Tensor, optional): Write the result into this tensor (e.g. a
            channel slice of a concatenation buffer) in the same pass, and
            return it. Default: None.
    """
    if residual is not None:
        _check_residual_shape(residual, moved.shape)
    if out is not None:
        _check_out(out, moved, moved.shape)
        if torch.is_grad_enabled() and (moved.requires_grad or (
                residual is not None and residual.requires_grad)):
            # out= ops do not record gradients; copy_ into a view does.
            return out.copy_(apply_epilogue(moved, residual, scale, relu))
        if residual is not None:
            torch.add(residual, moved, alpha=scale, out=out)
        elif scale != 1:
            torch.mul(moved, scale, out=out)
        elif relu:
            return torch.clamp_min(moved, 0, out=out)
        else:
            return out.copy_(moved)
        return out.relu_() if relu else out
    if not inplace:
        out = moved if scale == 1 else moved * scale
        if residual is not None:
            out = residual + out
        return torch.relu(out) if relu else out
    if scale != 1:
        moved.mul_(scale)
    if residual is not None:
        moved.add_(residual)
    return moved.relu_() if relu else moved


def ghost_shift_backward_reference(grad_output: Tensor, src: Tensor,
                                   offsets: Tensor, in_channels: int) -> Tensor:
    """Reference gradient of :func:`ghost_shift` to its input.

    The inverse shift of every output channel, summed per source channel.
    """
    _check_feature(grad_output, 'grad_output')
    inverse = ghost_shift_reference(grad_output,
                                    torch.arange(src.numel(),
                                                 device=src.device),
                                    -offsets.long())
    n, _, h, w = grad_output.shape
    grad_input = grad_output.new_zeros(n, in_channels, h, w)
    return grad_input.index_add_(1, src.long(), inverse)


def ghost_shift_weight_grad_reference(grad_output: Tensor, input: Tensor,
                                      src: Tensor, channels: Tensor,
                                      max_offset: int) -> Tensor:
    """Reference gradient of the one-hot shift weights of ``channels``.

    The weight gradient of a depthwise correlation with padding
    ``max_offset``, computed by ``torch.nn.grad.conv2d_weight``.

    Returns:
        Tensor: Shape (len(channels), 2d+1, 2d+1).
    """
    k = 2 * max_offset + 1
    channels = channels.long()
    features = input[:, src.long()[channels]]
    grads = grad_output[:, channels]
    weight = torch.nn.grad.conv2d_weight(
        features, (channels.numel(), 1, k, k),
        grads,
        padding=max_offset,
        groups=channels.numel())
    return weight[:, 0]


# --------------------------------------------------------------------------
# The compiled op, registered with the dispatcher.
# --------------------------------------------------------------------------
if HAS_EXT:

    @torch.library.register_fake('ghostsr::ghost_shift')
    def _ghost_shift_fake(input, src, offsets, residual=None, scale=1.0,
                          relu=False):
        fmt = (torch.channels_last
               if (not input.is_contiguous() and input.is_contiguous(
                   memory_format=torch.channels_last)) else
               torch.contiguous_format)
        n, _, h, w = input.shape
        return torch.empty((n, src.shape[0], h, w),
                           dtype=input.dtype,
                           device=input.device,
                           memory_format=fmt)

    @torch.library.register_fake('ghostsr::ghost_shift_into')
    def _ghost_shift_into_fake(input, src, offsets, residual, scale, relu,
                               out):
        return None

    @torch.library.register_fake('ghostsr::ghost_shift_backward')
    def _ghost_shift_backward_fake(grad_output, src, offsets, in_channels):
        n, _, h, w = grad_output.shape
        return grad_output.new_empty((n, in_channels, h, w))

    @torch.library.register_fake('ghostsr::ghost_shift_weight_grad')
    def _ghost_shift_weight_grad_fake(grad_output, input, src, channels,
                                      max_offset):
        k = 2 * max_offset + 1
        return input.new_empty((channels.shape[0], k, k))

    def _ghost_shift_setup(ctx, inputs, output):
        input, src, offsets, residual, scale, relu = inputs
        # With ReLU the mask out > 0 comes from the output itself.
        ctx.save_for_backward(src, offsets, output if relu else None)
        ctx.in_channels = input.shape[1]
        ctx.scale = scale

    def _ghost_shift_backward(ctx, grad):
        src, offsets, output = ctx.saved_tensors
        if output is not None:
            grad = grad * (output > 0).to(grad.dtype)
        # needs_input_grad covers only the arguments actually passed.
        needs = ctx.needs_input_grad
        grad_input = grad_residual = None
        if needs[0]:
            grad_input = torch.ops.ghostsr.ghost_shift_backward(
                grad, src, offsets, ctx.in_channels)
            if ctx.scale != 1:
                grad_input = grad_input * ctx.scale
        if len(needs) > 3 and needs[3]:
            grad_residual = grad
        return (grad_input, None, None, grad_residual, None, None)[:len(needs)]

    torch.library.register_autograd(
        'ghostsr::ghost_shift',
        _ghost_shift_backward,
        setup_context=_ghost_shift_setup)

    # The backward is linear too; its adjoint is the forward shift, which
    # makes double backward work.
    def _backward_setup(ctx, inputs, output):
        _, src, offsets, _ = inputs
        ctx.save_for_backward(src, offsets)

    def _backward_backward(ctx, grad):
        src, offsets = ctx.saved_tensors
        return torch.ops.ghostsr.ghost_shift(grad, src, offsets), None, None, \
            None

    torch.library.register_autograd(
        'ghostsr::ghost_shift_backward',
        _backward_backward,
        setup_context=_backward_setup)


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
        shape (N, C_out, H, W). The epilogue costs no extra memory pass.
    """
    use_ext = _use_ext()
    if out is None:
        if use_ext:
            return torch.ops.ghostsr.ghost_shift(input, src, offsets,
                                                 residual, scale, relu)
        return ghost_shift_reference(input, src, offsets, residual, scale,
                                     relu)
    records_grad = torch.is_grad_enabled() and (
        input.requires_grad or (residual is not None
                                and residual.requires_grad))
    if use_ext and not records_grad:
        torch.ops.ghostsr.ghost_shift_into(input, src, offsets, residual,
                                           scale, relu, out)
        return out
    moved = ghost_shift(input, src, offsets, residual, scale, relu)
    _check_out(out, moved, moved.shape)
    return out.copy_(moved)


def candidate_offsets(index: Tensor, max_offset: int) -> Tensor:
    """(dy, dx) shifts of flat window indices (Eq. 2's (i_o, j_o)).

    Candidate (i, j) of the (2d+1)x(2d+1) window reads
    ``input[y + i - d, x + j - d]``, i.e. the shift (d - i, d - j).
    """
    k = 2 * max_offset + 1
    return torch.stack([max_offset - index // k, max_offset - index % k], -1)


@torch.library.custom_op('ghostsr::learnable_ghost_shift', mutates_args=())
def _learnable_ghost_shift(input: Tensor, src: Tensor, channels: Tensor,
                           weight: Tensor) -> Tensor:
    offsets = _offsets_from_weight(src, channels, weight)
    if _use_ext():
        return torch.ops.ghostsr.ghost_shift(input, src, offsets)
    return ghost_shift_reference(input, src, offsets)


def _offsets_from_weight(src: Tensor, channels: Tensor,
                         weight: Tensor) -> Tensor:
    max_offset = (weight.shape[-1] - 1) // 2
    shifts = candidate_offsets(weight.flatten(1).argmax(1), max_offset)
    offsets = src.new_zeros(src.shape[0], 2)
    offsets[channels] = shifts.expand(channels.shape[0], 2)
    return offsets


@_learnable_ghost_shift.register_fake
def _(input, src, channels, weight):
    n, _, h, w = input.shape
    return input.new_empty((n, src.shape[0], h, w))


def _learnable_setup(ctx, inputs, output):
    input, src, channels, weight = inputs
    ctx.save_for_backward(input, src, channels, weight)


def _learnable_backward(ctx, grad):
    input, src, channels, weight = ctx.saved_tensors
    offsets = _offsets_from_weight(src, channels, weight)
    max_offset = (weight.shape[-1] - 1) // 2
    grad_input = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_input = (
            torch.ops.ghostsr.ghost_shift_backward(grad, src, offsets,
                                                   input.shape[1])
            if _use_ext() else ghost_shift_backward_reference(
                grad, src, offsets, input.shape[1]))
    if ctx.needs_input_grad[3]:
        grad = grad.to(input.dtype)
        grad_weight = (
            torch.ops.ghostsr.ghost_shift_weight_grad(grad, input, src,
                                                      channels, max_offset)
            if _use_ext() else ghost_shift_weight_grad_reference(
                grad, input, src, channels, max_offset))
        if weight.shape[0] == 1:  # one shift shared by the layer
            grad_weight = grad_weight.sum(0, keepdim=True)
        grad_weight = grad_weight.to(weight.dtype)
    return grad_input, None, None, grad_weight


_learnable_ghost_shift.register_autograd(
    _learnable_backward, setup_context=_learnable_setup)


def learnable_ghost_shift(input: Tensor, src: Tensor, channels: Tensor,
                          weight: Tensor) -> Tensor:
    """Ghost shift whose offsets are the argmax of one-hot window weights.

    Args:
        input (Tensor): Intrinsic features, shape (N, C_in, H, W).
        src (Tensor): int64 (C_out,), the source channel of each output.
        channels (Tensor): int64 (G,), the output channels whose shift is
            learned; every other output channel is copied in place.
        weight (Tensor): (G, 2d+1, 2d+1), or (1, 2d+1, 2d+1) for one shift
            shared by the layer. Its value must be one-hot per channel (the
            straight-through ``W - S.detach() + S`` of Eq. 6 is); its
            gradient is that of a depthwise correlation with this kernel.

    Returns:
        Tensor: Shape (N, C_out, H, W).
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
    return _learnable_ghost_shift(input, src, channels, weight)
