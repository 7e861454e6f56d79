"""The compiled ghost shift against its pure-PyTorch reference and against
hand-derived values; gradients against float64 gradcheck and depthwise
conv2d; dispatcher registration (opcheck, fake tensors, torch.compile)."""
import re
import warnings
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import requires_cuda
from ghostsr_mm.ops import (HAS_EXT, apply_epilogue, candidate_offsets,
                            ghost_shift,
                            ghost_shift_backward_reference,
                            ghost_shift_reference,
                            ghost_shift_weight_grad_reference,
                            learnable_ghost_shift, reference_mode)
from ghostsr_mm.ops import _ext

requires_ext = pytest.mark.skipif(
    not HAS_EXT, reason='ghostsr_mm._ext is not built (the reference-only '
    'tests of this module still run)')

ops = torch.ops.ghostsr
TOL = {
    torch.float64: dict(atol=1e-12, rtol=1e-12),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=5e-2, rtol=5e-2),
}


def sample(n=2, ci=4, h=5, w=6, dtype=torch.float32, device='cpu'):
    x = torch.randn(n, ci, h, w, dtype=torch.float64).to(device, dtype)
    src = torch.tensor([0, 1, 2, 3, 0, 1, 1, 3], device=device)
    offsets = torch.tensor(
        [[0, 0], [0, 0], [0, 0], [0, 0], [1, -1], [-2, 3], [7, 0], [0, -1]],
        device=device)
    return x, src, offsets


def layouts(x):
    yield 'contiguous', x
    yield 'channels_last', x.contiguous(memory_format=torch.channels_last)
    # Non-contiguous in both layouts: a transposed view.
    yield 'transposed', x.transpose(2, 3).contiguous().transpose(2, 3)


# The two implementations of every op: the compiled kernels and the
# pure-PyTorch reference (what runs when the extension is not built).
IMPLS = [pytest.param('compiled', marks=requires_ext), 'reference']


def impl_ops(impl):
    if impl == 'compiled':
        return (ops.ghost_shift, ops.ghost_shift_backward,
                ops.ghost_shift_weight_grad)
    return (ghost_shift_reference, ghost_shift_backward_reference,
            ghost_shift_weight_grad_reference)


@pytest.mark.parametrize('impl', IMPLS)
def test_hand_derived_values(impl):
    forward, backward, _ = impl_ops(impl)
    x = torch.arange(12.).view(1, 1, 3, 4)
    src = torch.tensor([0, 0, 0])
    offsets = torch.tensor([[0, 0], [1, 0], [0, -2]])
    out = forward(x, src, offsets)
    torch.testing.assert_close(out[0, 0], x[0, 0])
    torch.testing.assert_close(
        out[0, 1],
        torch.tensor([[0., 0, 0, 0], [0, 1, 2, 3], [4, 5, 6, 7]]))
    torch.testing.assert_close(
        out[0, 2],
        torch.tensor([[2., 3, 0, 0], [6, 7, 0, 0], [10, 11, 0, 0]]))
    # Input gradient: sources shared by three outputs accumulate; row 2
    # is not read by the dy=1 channel, columns 0-1 not by the dx=-2 one.
    grad = backward(torch.ones_like(out), src, offsets, 1)
    torch.testing.assert_close(
        grad[0, 0],
        torch.tensor([[2., 2, 3, 3], [2, 2, 3, 3], [1, 1, 2, 2]]))


@pytest.mark.parametrize('impl', IMPLS)
def test_non_finite_values_shifted_out_leave_zeros(impl):
    forward, _, _ = impl_ops(impl)
    x = torch.tensor([[[[float('inf'), 1.0], [float('nan'), 2.0]]]])
    out = forward(x, torch.tensor([0]), torch.tensor([[0, 1]]))
    # Column 0 reads outside the image; column 1 gets inf and NaN.
    assert out[0, 0, :, 0].tolist() == [0.0, 0.0]
    assert out[0, 0, 0, 1] == float('inf') and out[0, 0, 1, 1].isnan()


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_weight_grad_of_low_precision_does_not_overflow(impl, dtype):
    """A sum over N·H·W products beyond float16's 65504 (a scaled loss
    under autocast) is returned in float32, exactly: 300 * 300 ones at the
    centre candidate, 299 * 300 one row off, 299 * 299 at a corner."""
    _, _, weight_grad = impl_ops(impl)
    x = torch.ones(1, 1, 300, 300, dtype=dtype)
    grad = torch.ones(1, 1, 300, 300, dtype=dtype)
    out = weight_grad(grad, x, torch.tensor([0]), torch.tensor([0]), 1)
    assert out.dtype == torch.float32
    assert out[0, 1, 1].item() == 90000.0
    assert out[0, 0, 1].item() == 89700.0
    assert out[0, 0, 0].item() == 299.0 * 299


@requires_ext
@pytest.mark.parametrize('dtype', list(TOL))
def test_forward_matches_reference(dtype):
    x, src, offsets = sample(dtype=dtype)
    expected = ghost_shift_reference(x.contiguous(), src, offsets)
    for name, xi in layouts(x):
        out = ghost_shift(xi, src, offsets)
        assert out.dtype == dtype, name
        # A move: bit-identical in every dtype.
        assert torch.equal(out, expected), name


# (residual?, scale, relu): the epilogues the backbones use, and all three.
EPILOGUES = [(False, 1.0, True), (True, 0.1, False), (True, 1.0, True),
             (False, -0.5, False)]


@requires_ext
@pytest.mark.parametrize('dtype', list(TOL))
@pytest.mark.parametrize('with_residual, scale, relu', EPILOGUES)
def test_fused_epilogue_matches_standard_ops(dtype, with_residual, scale,
                                             relu):
    x, src, offsets = sample(dtype=dtype)
    residual = torch.randn(2, 8, 5, 6, dtype=torch.float64).to(dtype) \
        if with_residual else None
    # Independent of the reference: the plain move, then torch ops in
    # float64.
    moved = ghost_shift(x, src, offsets).double()
    expected = scale * moved
    if residual is not None:
        expected = expected + residual.double()
    if relu:
        expected = expected.clamp_min(0)
    for name, xi in layouts(x):
        res = residual
        if res is not None and name == 'channels_last':
            res = res.contiguous(memory_format=torch.channels_last)
        out = ghost_shift(xi, src, offsets, res, scale, relu)
        torch.testing.assert_close(out.double(), expected, **TOL[dtype],
                                   msg=name)
        ref = ghost_shift_reference(xi, src, offsets, res, scale, relu)
        torch.testing.assert_close(out, ref, **TOL[dtype], msg=name)
    # Hand-derived: outside the image a fused channel is act(residual).
    if residual is not None:
        out = ghost_shift(x, src, offsets, residual, scale, relu)
        far = residual[:, 6]  # channel 6 is moved 7 rows down: all outside
        torch.testing.assert_close(out[:, 6],
                                   far.clamp_min(0) if relu else far)


def test_fused_relu_keeps_nan_like_torch_relu():
    x = torch.tensor([[[[float('nan'), -1.0, 2.0]]]])
    out = ghost_shift(x, torch.tensor([0]),
                      torch.zeros(1, 2, dtype=torch.long), relu=True)
    assert torch.equal(out.isnan(), torch.relu(x).isnan())
    assert out[0, 0, 0, 1:].tolist() == [0.0, 2.0]


@requires_ext
def test_gradcheck_fused_epilogue_float64():
    x, src, offsets = sample(dtype=torch.float64)
    x.requires_grad_()
    residual = torch.randn(2, 8, 5, 6, dtype=torch.float64,
                           requires_grad=True)

    def fused(t, r):
        return ghost_shift(t, src, offsets, r, 0.3, True)

    assert torch.autograd.gradcheck(fused, (x, residual), eps=1e-6,
                                    atol=1e-8, rtol=1e-7)
    assert torch.autograd.gradgradcheck(fused, (x, residual))
    assert torch.autograd.gradcheck(
        lambda t: ghost_shift(t, src, offsets, None, -2.0, False), (x, ))


@requires_ext
def test_channels_last_in_channels_last_out():
    x, src, offsets = sample()
    out = ghost_shift(
        x.contiguous(memory_format=torch.channels_last), src, offsets)
    assert out.is_contiguous(memory_format=torch.channels_last)


@requires_ext
def test_expanded_per_layer_offsets_need_no_copy():
    x, src, _ = sample()
    per_layer = torch.tensor([[1, -1]]).expand(src.numel(), 2)
    assert per_layer.stride() == (0, 1)
    torch.testing.assert_close(
        ghost_shift(x, src, per_layer),
        ghost_shift_reference(x, src, per_layer.contiguous()))


@requires_ext
@pytest.mark.parametrize('dtype', list(TOL))
def test_backward_matches_reference(dtype):
    x, src, offsets = sample(dtype=dtype)
    grad = torch.randn(2, 8, 5, 6, dtype=torch.float64).to(dtype)
    expected = ghost_shift_backward_reference(grad.double(), src, offsets,
                                              4)
    for name, gi in layouts(grad):
        out = ops.ghost_shift_backward(gi, src, offsets, 4)
        torch.testing.assert_close(out.double(), expected, **TOL[dtype])
        # The input gradient keeps a channels_last gradient's layout (no
        # copy to NCHW and back), as the fake kernel says.
        assert out.is_contiguous(memory_format=torch.channels_last) == (
            name == 'channels_last'), name


@requires_ext
@pytest.mark.parametrize('dtype', list(TOL))
def test_weight_grad_matches_conv2d_weight(dtype):
    x, src, _ = sample(dtype=dtype)
    grad = torch.randn(2, 8, 5, 6, dtype=torch.float64).to(dtype)
    channels = torch.tensor([4, 5, 6, 7])
    for d in (0, 1, 2):
        expected = ghost_shift_weight_grad_reference(grad.double(),
                                                     x.double(), src,
                                                     channels, d)
        out = ops.ghost_shift_weight_grad(grad, x, src, channels, d)
        assert out.shape == (4, 2 * d + 1, 2 * d + 1)
        tol = TOL[dtype]
        scale = expected.abs().max().item()
        torch.testing.assert_close(
            out.double(), expected, atol=tol['atol'] * scale * 10,
            rtol=tol['rtol'])


@requires_ext
@pytest.mark.parametrize('h, w', [(48, 48), (17, 33), (1, 40), (3, 1)])
@pytest.mark.parametrize('d', [1, 2, 3])
def test_weight_grad_float32_on_larger_planes(h, w, d):
    """float32 planes long enough for the vectorised window products (3x3
    and 5x5 windows; 7x7 takes the scalar loop), with every tail length:
    the float64 reference within float32 rounding of the sum."""
    gen = torch.Generator().manual_seed(h * 100 + w + d)
    x = torch.randn(3, 4, h, w, generator=gen)
    grad = torch.randn(3, 8, h, w, generator=gen)
    src = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    channels = torch.tensor([4, 5, 6, 7])
    out = ops.ghost_shift_weight_grad(grad, x, src, channels, d)
    expected = ghost_shift_weight_grad_reference(grad.double(), x.double(),
                                                 src, channels, d)
    # The sums run over 3 * h * w products of unit-variance terms.
    atol = 1e-6 * (3 * h * w)**0.5 * 10
    torch.testing.assert_close(out.double(), expected, atol=atol, rtol=1e-5)


@requires_ext
def test_gradcheck_input_float64():
    x, src, offsets = sample(dtype=torch.float64)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ghost_shift(t, src, offsets),
                                    (x, ))
    assert torch.autograd.gradgradcheck(
        lambda t: ghost_shift(t, src, offsets), (x, ))


class _WindowShift(torch.autograd.Function):
    """sum_k W[c, k] * shift_k(x)[c] for the listed channels: linear in W,
    its forward built from the forward op, its backward from the compiled
    weight-gradient kernel, so gradcheck compares that kernel with a
    numerical Jacobian."""

    @staticmethod
    def forward(ctx, weight, x, src, channels, d):
        ctx.save_for_backward(x, src, channels)
        ctx.d = d
        k = 2 * d + 1
        out = 0
        for idx in range(k * k):
            off = candidate_offsets(torch.tensor(idx), d).expand(
                src.numel(), 2)
            shifted = ghost_shift(x, src, off)[:, channels]
            out = out + weight[:, idx // k, idx % k][None, :, None,
                                                     None] * shifted
        return out

    @staticmethod
    def backward(ctx, grad):
        x, src, channels = ctx.saved_tensors
        full = grad.new_zeros(grad.shape[0], src.numel(), *grad.shape[2:])
        full[:, channels] = grad
        return ops.ghost_shift_weight_grad(full, x, src, channels,
                                           ctx.d), None, None, None, None


@requires_ext
@pytest.mark.parametrize('d', [1, 2])
def test_gradcheck_weight_grad_float64(d):
    x, src, _ = sample(dtype=torch.float64)
    channels = torch.tensor([4, 6, 7])
    k = 2 * d + 1
    weight = torch.randn(3, k, k, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w: _WindowShift.apply(w, x, src, channels, d), (weight, ))


def one_hot_ste(logits):
    """Straight-through one-hot of per-row argmax (Eq. 5-6)."""
    soft = logits.flatten(1).softmax(1)
    hard = F.one_hot(soft.argmax(1), soft.shape[1]).to(soft)
    return (hard - soft.detach() + soft).view_as(logits)


@pytest.mark.parametrize('shared', [False, True])
@pytest.mark.parametrize('max_offset', [1, 2])
def test_learnable_shift_gradients_equal_depthwise_conv(shared, max_offset):
    """Forward and both gradients of the learnable shift equal those of a
    depthwise correlation with the one-hot kernel (GhostSR Eq. 1)."""
    x, src, _ = sample(dtype=torch.float64)
    channels = torch.tensor([4, 5, 6, 7])
    k = 2 * max_offset + 1
    logits = torch.randn(1 if shared else 4, k, k, dtype=torch.float64)
    x1 = x.clone().requires_grad_()
    l1 = logits.clone().requires_grad_()
    out = learnable_ghost_shift(x1, src, channels, one_hot_ste(l1))
    x2 = x.clone().requires_grad_()
    l2 = logits.clone().requires_grad_()
    kernel = one_hot_ste(l2).expand(4, k, k)[:, None]
    ghosts = F.conv2d(
        x2[:, src[channels]], kernel, padding=max_offset, groups=4)
    ref = x2[:, src].clone()
    ref[:, channels] = ghosts
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(l1.grad, l2.grad)


@pytest.mark.parametrize('impl', ['compiled', 'reference'])
@pytest.mark.parametrize('scale, relu', [(1.0, True), (0.1, False),
                                         (0.5, True)])
def test_learnable_shift_fused_epilogue(impl, scale, relu):
    """The epilogue fused into the learnable shift gives the output and the
    gradients (input, W', residual) of the shift followed by separate ops."""
    if impl == 'compiled' and not HAS_EXT:
        pytest.skip('ghostsr_mm._ext is not built')
    x, src, _ = sample(dtype=torch.float64)
    channels = torch.tensor([4, 5, 6, 7])
    logits = torch.randn(4, 3, 3, dtype=torch.float64)
    residual = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    leaves = [[t.clone().requires_grad_() for t in (x, logits, residual)]
              for _ in range(2)]
    g = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    with (reference_mode() if impl == 'reference' else nullcontext()):
        (x1, l1, r1), (x2, l2, r2) = leaves
        fused = learnable_ghost_shift(x1, src, channels, one_hot_ste(l1),
                                      r1, scale, relu)
        moved = learnable_ghost_shift(x2, src, channels, one_hot_ste(l2))
        plain = apply_epilogue(moved, r2, scale, relu)
        torch.testing.assert_close(fused, plain)
        fused.backward(g)
        plain.backward(g)
    for a, b in zip(*leaves):
        assert a.grad.abs().sum() > 0
        torch.testing.assert_close(a.grad, b.grad)


def test_candidate_offsets_follow_eq1():
    # Candidate (i, j) reads input[y + i - d, x + j - d].
    idx = torch.arange(9)
    off = candidate_offsets(idx, 1)
    assert off[0].tolist() == [1, 1]  # reads (y-1, x-1): content moves +1
    assert off[4].tolist() == [0, 0]  # centre
    assert off[5].tolist() == [0, -1]  # reads (y, x+1)


@requires_ext
def test_opcheck():
    x, src, offsets = sample()
    grad = torch.randn(2, 8, 5, 6)
    channels = torch.tensor([4, 5])
    xr = x.clone().requires_grad_()
    torch.library.opcheck(ops.ghost_shift.default, (xr, src, offsets))
    torch.library.opcheck(
        ops.ghost_shift.default,
        (x.contiguous(memory_format=torch.channels_last), src, offsets))
    torch.library.opcheck(ops.ghost_shift_backward.default,
                          (grad, src, offsets, 4))
    torch.library.opcheck(ops.ghost_shift_weight_grad.default,
                          (grad, x, src, channels, 1))
    residual = torch.randn(2, 8, 5, 6, requires_grad=True)
    torch.library.opcheck(ops.ghost_shift.default,
                          (xr, src, offsets, residual, 0.5, True))
    weight = one_hot_ste(torch.randn(2, 3, 3)).detach().requires_grad_()
    torch.library.opcheck(ops.learnable_ghost_shift.default,
                          (xr, src, channels, weight))
    torch.library.opcheck(ops.learnable_ghost_shift.default,
                          (xr, src, channels, weight, residual, 0.5, True))


# --------------------------------------------------------------------------
# Writing into a view (out=): a channel slice of a concatenation buffer.
# --------------------------------------------------------------------------
def concat_buffer(channels_last, n=2, h=5, w=6, dtype=torch.float32):
    """A NaN-filled (N, 3 + 8 + 2, H, W) buffer and its channels 3:11."""
    buf = torch.full((n, 13, h, w), float('nan'), dtype=dtype)
    if channels_last:
        buf = buf.contiguous(memory_format=torch.channels_last)
    return buf, buf[:, 3:11]


@requires_ext
@pytest.mark.parametrize('dtype', list(TOL))
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('with_residual, scale, relu', EPILOGUES)
def test_out_writes_the_slice_in_place(dtype, channels_last, with_residual,
                                       scale, relu):
    x, src, offsets = sample(dtype=dtype)
    residual = torch.randn(2, 8, 5, 6).to(dtype) if with_residual else None
    buf, part = concat_buffer(channels_last, dtype=dtype)
    expected = ghost_shift_reference(x, src, offsets, residual, scale, relu)
    for name, xi in layouts(x):
        buf[:, 3:11] = float('nan')
        out = ghost_shift(xi, src, offsets, residual, scale, relu, out=part)
        assert out.data_ptr() == part.data_ptr(), name
        torch.testing.assert_close(buf[:, 3:11], expected, **TOL[dtype],
                                   msg=name)
        # Every other channel of the buffer is untouched.
        assert buf[:, :3].isnan().all() and buf[:, 11:].isnan().all(), name


@requires_ext
def test_out_of_other_strides_and_reference_mode():
    x, src, offsets = sample()
    expected = ghost_shift_reference(x, src, offsets)
    transposed = torch.empty(2, 8, 6, 5).transpose(2, 3)  # neither order
    ghost_shift(x, src, offsets, out=transposed)
    assert torch.equal(transposed, expected)
    _, part = concat_buffer(False)
    with reference_mode():
        ghost_shift(x, src, offsets, out=part)
    assert torch.equal(part, expected)
    # out may be the residual itself: an in-place residual add.
    residual = torch.randn(2, 8, 5, 6)
    expected = residual + expected
    ghost_shift(x, src, offsets, residual, out=residual)
    torch.testing.assert_close(residual, expected)


def test_out_under_autograd_copies_and_keeps_gradients():
    x, src, offsets = sample(dtype=torch.float64)
    x.requires_grad_()
    buf, part = concat_buffer(False, dtype=torch.float64)
    buf[:, :3] = 0
    buf[:, 11:] = 0

    def through_buffer(t):
        b = buf.clone()
        ghost_shift(t, src, offsets, relu=True, out=b[:, 3:11])
        return b

    assert torch.autograd.gradcheck(through_buffer, (x, ))
    torch.testing.assert_close(
        through_buffer(x)[:, 3:11],
        ghost_shift_reference(x, src, offsets, relu=True))


@requires_ext
def test_out_sharing_memory_with_input_or_residual():
    """What the op reads is never changed by what it writes: an `out` that
    overlaps the input or the residual gets the result computed from their
    values before the call."""
    src, offsets = torch.arange(8), torch.ones(8, 2, dtype=torch.long)
    for n in (1, 2):  # dense and non-dense channel slices
        buf = torch.randn(n, 9, 5, 6)
        x, residual = buf[:, 1:].clone(), buf[:, :8].clone()
        expected = ghost_shift_reference(x, src, offsets)
        ghost_shift(buf[:, 1:], src, offsets, out=buf[:, :8])
        assert torch.equal(buf[:, :8], expected), n
        buf = torch.randn(n, 9, 5, 6)
        residual = buf[:, 1:].clone()
        expected = ghost_shift_reference(x, src, offsets, residual)
        ghost_shift(x, src, offsets, buf[:, 1:], out=buf[:, :8])
        torch.testing.assert_close(buf[:, :8], expected, msg=str(n))


@requires_ext
def test_opcheck_out():
    x, src, offsets = sample()
    for channels_last in (False, True):
        buf, part = concat_buffer(channels_last)
        torch.library.opcheck(ops.ghost_shift_into.default,
                              (x, src, offsets, None, 1.0, False, part))
    residual = torch.randn(2, 8, 5, 6)
    torch.library.opcheck(
        ops.ghost_shift_into.default,
        (x, src, offsets, residual, 0.5, True, torch.empty(2, 8, 5, 6)))


@pytest.mark.slow
@requires_ext
def test_torch_compile_matches_eager():
    x, src, offsets = sample()
    fn = torch.compile(
        lambda t: ghost_shift(t * 2, src, offsets).relu(),
        backend='aot_eager',
        fullgraph=True)
    xr = x.clone().requires_grad_()
    out = fn(xr)
    out.sum().backward()
    xe = x.clone().requires_grad_()
    ref = ghost_shift(xe * 2, src, offsets).relu()
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(xr.grad, xe.grad)


@pytest.mark.slow
@requires_ext
def test_inductor_writes_out_into_a_buffer():
    """Compiled by inductor (which may pick the layouts of the op's inputs:
    the ops are tagged flexible_layout), a write into a channel slice of a
    buffer lands in that slice, and the rest of the buffer is kept."""
    from torch._inductor import config
    src, offsets = sample()[1:]
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def f(x):
        buf = torch.full((2, 13, 5, 6), 7.0)
        buf[:, :3] = x
        ghost_shift(conv(x), src, offsets, out=buf[:, 3:11])
        return buf, conv(buf[:, 3:6])

    x = torch.rand(2, 3, 5, 6)
    with torch.no_grad(), config.patch(force_disable_caches=True):
        expected = f(x)
        got = torch.compile(f, fullgraph=True)(x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    assert (got[0][:, 11:] == 7).all()


@requires_ext
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3),
    ci=st.integers(1, 5),
    co=st.integers(1, 9),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    max_shift=st.integers(0, 12),
    seed=st.integers(0, 2**31 - 1),
    layout=st.sampled_from(['contiguous', 'channels_last', 'transposed']))
def test_fuzz_against_reference(n, ci, co, h, w, max_shift, seed, layout):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ci, h, w, generator=gen)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == 'transposed':
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
    src = torch.randint(0, ci, (co, ), generator=gen)  # repeats likely
    if seed % 2:  # runs of consecutive sources, as a by-order layer has
        src = torch.arange(co) % ci
    offsets = torch.randint(-max_shift, max_shift + 1, (co, 2), generator=gen)
    if seed % 3 == 0:  # one shift per layer
        offsets[:] = offsets[0]
    out = ghost_shift(x, src, offsets)
    assert torch.equal(out, ghost_shift_reference(x, src, offsets))
    grad = torch.randn(n, co, h, w, generator=gen)
    torch.testing.assert_close(
        ops.ghost_shift_backward(grad, src, offsets, ci),
        ghost_shift_backward_reference(grad, src, offsets, ci))
    channels = torch.arange(co)
    d = min(max_shift, 2)
    torch.testing.assert_close(
        ops.ghost_shift_weight_grad(grad, x, src, channels, d),
        ghost_shift_weight_grad_reference(grad, x, src, channels, d),
        atol=1e-4,
        rtol=1e-4)
    for dtype in (torch.float16, torch.bfloat16):
        low = ghost_shift(x.to(dtype), src, offsets)
        torch.testing.assert_close(low.float(), out, **TOL[dtype])
    residual = torch.randn(n, co, h, w, generator=gen).contiguous(
        memory_format=torch.channels_last
        if layout == 'channels_last' else torch.contiguous_format)
    scale, relu = (0.1, seed % 2 == 0) if seed % 5 else (1.0, True)
    torch.testing.assert_close(
        ghost_shift(x, src, offsets, residual, scale, relu),
        ghost_shift_reference(x, src, offsets, residual, scale, relu))


BAD_INPUTS = [
    (lambda x, s, o: (x[0], s, o), ValueError,
     r'`input` must be a 4-D tensor \(N, C, H, W\), got 3-D with shape '
     r'\[4, 5, 6\]'),
    (lambda x, s, o: (x.long(), s, o), TypeError,
     '`input` must be a floating point tensor, got Long'),
    (lambda x, s, o: (x, s.float(), o), TypeError,
     '`src` must be an integer tensor, got Float'),
    (lambda x, s, o: (x, s[None], o), ValueError,
     r'`src` must be 1-D \(C_out,\), got shape \[1, 8\]'),
    (lambda x, s, o: (x, s + 4, o), ValueError,
     r'`src` values must lie in \[0, 4\) \(the input channels\), got '
     r'values in \[4, 7\]'),
    (lambda x, s, o: (x, s - 1, o), ValueError,
     r'`src` values must lie in \[0, 4\).*\[-1, 2\]'),
    (lambda x, s, o: (x, s, o[:3]), ValueError,
     r'`offsets` must have shape \(C_out, 2\) = \(8, 2\), got \[3, 2\]'),
    (lambda x, s, o: (x, s, o.float()), TypeError,
     '`offsets` must be an integer tensor, got Float'),
    (lambda x, s, o: (x, s, o, torch.randn(2, 4, 5, 6)), ValueError,
     r"`residual` must have the output's shape \(2, 8, 5, 6\), got "
     r'\[2, 4, 5, 6\]'),
    (lambda x, s, o: (x, s, o, torch.randn(2, 8, 5, 6).double()), ValueError,
     r'`residual` must have the dtype of `input` \(Float\), got Double'),
    (lambda x, s, o: (x, s, o, torch.randn(8, 5, 6)), ValueError,
     '`residual` must be a 4-D tensor'),
]


def raised(fn, *args):
    with pytest.raises(Exception) as info:
        fn(*args)
    return info.value


def assert_same_error(compiled: Exception, ref: Exception) -> None:
    """Same type, and the same message (ATen appends a C++ stack trace
    below the first line in debug builds)."""
    assert type(compiled) is type(ref)
    assert str(compiled).splitlines()[0] == str(ref)


@pytest.mark.parametrize('make, error, message', BAD_INPUTS)
def test_bad_input_one_error_contract(make, error, message):
    """The compiled op and the reference raise the same error type with the
    same message (the reference runs when the extension is not built)."""
    x, src, offsets = sample()
    args = make(x, src, offsets)
    ref = raised(ghost_shift_reference, *args)
    assert type(ref) is error
    assert re.search(message, str(ref)), str(ref)
    assert str(ref).startswith('ghost_shift: ')
    if HAS_EXT:
        assert_same_error(raised(ops.ghost_shift, *args), ref)


BAD_BACKWARD = [
    (lambda g, s, o: (g, s, o, 0), '`in_channels` must be positive, got 0'),
    (lambda g, s, o: (g, s[0], o, 4),
     r'`src` must be 1-D \(C_out,\), got shape \[\]'),
    (lambda g, s, o: (g[:, :5], s, o, 4),
     r'`grad_output` must have C_out = 8 channels \(len\(src\)\), got 5'),
]


@pytest.mark.parametrize('make, message', BAD_BACKWARD)
def test_bad_backward_arguments(make, message):
    """0-D src and zero input channels get a message naming them, from both
    implementations."""
    grad = torch.randn(2, 8, 5, 6)
    _, src, offsets = sample()
    args = make(grad, src, offsets)
    ref = raised(ghost_shift_backward_reference, *args)
    assert type(ref) is ValueError and re.search(message, str(ref)), ref
    if HAS_EXT:
        assert_same_error(raised(ops.ghost_shift_backward, *args), ref)


BAD_OUTS = [
    (lambda o: o[..., :5],
     r'`out` must have shape \(2, 8, 5, 6\), got \[2, 8, 5, 5\]'),
    (lambda o: o.double(),
     r'`out` must have the dtype of `input` \(Float\), got Double'),
    (lambda o: o[0], '`out` must be a 4-D tensor'),
    (lambda o: o[:1, :1, :1, :1].expand(2, 8, 5, 6),
     '`out` has elements that share memory'),
]


@pytest.mark.parametrize('make, message', BAD_OUTS)
def test_bad_out(make, message):
    x, src, offsets = sample()
    out = make(torch.empty(2, 8, 5, 6))
    with reference_mode():
        ref = raised(ghost_shift, x, src, offsets, None, 1.0, False, out)
    assert type(ref) is ValueError and re.search(message, str(ref)), ref
    if HAS_EXT:
        assert_same_error(
            raised(ops.ghost_shift_into, x, src, offsets, None, 1.0, False,
                   out), ref)


@requires_ext
def test_ghost_shift_into_refuses_what_autograd_would_record():
    """Called directly, the in-place op does not silently drop gradients,
    and it bumps the version of `out` so a saved `out` is caught."""
    x, src, offsets = sample()
    out = torch.empty(2, 8, 5, 6)
    with pytest.raises(ValueError, match='records no gradient'):
        ops.ghost_shift_into(x.clone().requires_grad_(), src, offsets, None,
                             1.0, False, out)
    version = out._version
    with torch.no_grad():  # nothing recorded: allowed
        ops.ghost_shift_into(x.clone().requires_grad_(), src, offsets, None,
                             1.0, False, out)
    assert out._version > version
    assert torch.equal(out, ghost_shift_reference(x, src, offsets))
    # An `out` saved for backward and then overwritten: autograd says so.
    w = torch.randn(2, 8, 5, 6, requires_grad=True)
    y = w * out
    ops.ghost_shift_into(x, src, offsets, None, 1.0, False, out)
    with pytest.raises(RuntimeError, match='modified by an inplace'):
        y.sum().backward()


@pytest.mark.parametrize('impl', IMPLS)
def test_learnable_output_layout_matches_its_fake(impl):
    """The fake kernel of learnable_ghost_shift promises the layout the real
    one returns (channels_last in, channels_last out)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    x, src, _ = sample()
    x = x.contiguous(memory_format=torch.channels_last)
    channels = torch.tensor([4, 5])
    weight = one_hot_ste(torch.randn(2, 3, 3))
    if impl == 'reference':
        with reference_mode():
            real = learnable_ghost_shift(x, src, channels, weight)
    else:
        real = learnable_ghost_shift(x, src, channels, weight)
    with FakeTensorMode() as mode:
        fake = learnable_ghost_shift(
            mode.from_tensor(x), mode.from_tensor(src),
            mode.from_tensor(channels), mode.from_tensor(weight))
    assert real.is_contiguous(memory_format=torch.channels_last)
    assert fake.stride() == real.stride()


@requires_ext
def test_opcheck_learnable_channels_last():
    x, src, _ = sample()
    xr = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = one_hot_ste(torch.randn(2, 3, 3)).detach().requires_grad_()
    torch.library.opcheck(ops.learnable_ghost_shift.default,
                          (xr, src, torch.tensor([4, 5]), weight))


def test_fallback_warns_once(monkeypatch):
    """Without the extension the public op runs the reference, after one
    warning that says how to build it."""
    monkeypatch.setitem(_ext._state, 'available', False)
    monkeypatch.setitem(_ext._state, 'warned', False)
    x, src, offsets = sample()
    with pytest.warns(RuntimeWarning, match='not built.*pip install'):
        out = ghost_shift(x, src, offsets)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ghost_shift(x, src, offsets)  # no second warning
    assert torch.equal(out, ghost_shift_reference(x, src, offsets))
    # The learnable op and its gradients take the same path.
    channels = torch.tensor([4, 5])
    logits = torch.randn(2, 3, 3, requires_grad=True)
    moved = learnable_ghost_shift(x, src, channels, one_hot_ste(logits))
    (moved * torch.randn_like(moved)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# --------------------------------------------------------------------------
# CUDA: the same checks on the GPU kernels.
# --------------------------------------------------------------------------
@requires_cuda
@pytest.mark.parametrize('dtype', list(TOL))
def test_cuda_forward_backward_weight_grad(dtype):
    x, src, offsets = sample(n=3, ci=4, h=17, w=33, dtype=dtype)
    grad = torch.randn(3, 8, 17, 33, dtype=torch.float64).to(dtype)
    channels = torch.tensor([4, 5, 6, 7])
    for name, xi in layouts(x):
        out = ghost_shift(xi.cuda(), src.cuda(), offsets.cuda())
        assert torch.equal(out.cpu(), ghost_shift(xi, src, offsets)), name
    torch.testing.assert_close(
        ops.ghost_shift_backward(grad.cuda(), src.cuda(), offsets.cuda(),
                                 4).cpu().double(),
        ghost_shift_backward_reference(grad.double(), src, offsets, 4),
        **TOL[dtype])
    ref = ghost_shift_weight_grad_reference(grad.double(), x.double(), src,
                                            channels, 1)
    out = ops.ghost_shift_weight_grad(grad.cuda(), x.cuda(), src.cuda(),
                                      channels.cuda(), 1)
    scale = ref.abs().max().item()
    torch.testing.assert_close(
        out.cpu().double(), ref, atol=TOL[dtype]['atol'] * scale * 10,
        rtol=TOL[dtype]['rtol'])


@requires_cuda
@pytest.mark.parametrize('with_residual, scale, relu', EPILOGUES)
def test_cuda_fused_epilogue(with_residual, scale, relu):
    x, src, offsets = sample(n=3, ci=4, h=17, w=33)
    residual = torch.randn(3, 8, 17, 33) if with_residual else None
    for name, xi in layouts(x):
        res = residual
        if res is not None and name == 'channels_last':
            res = res.contiguous(memory_format=torch.channels_last)
        out = ghost_shift(xi.cuda(), src.cuda(), offsets.cuda(),
                          None if res is None else res.cuda(), scale, relu)
        torch.testing.assert_close(
            out.cpu(), ghost_shift(xi, src, offsets, res, scale, relu),
            msg=name)


@requires_cuda
@pytest.mark.parametrize('channels_last', [False, True])
def test_cuda_out_writes_the_slice_in_place(channels_last):
    x, src, offsets = sample(n=3, ci=4, h=17, w=33)
    residual = torch.randn(3, 8, 17, 33)
    buf = concat_buffer(channels_last, n=3, h=17, w=33)[0].cuda()
    part = buf[:, 3:11]
    for name, xi in layouts(x):
        out = ghost_shift(xi.cuda(), src.cuda(), offsets.cuda(),
                          residual.cuda(), 0.5, True, out=part)
        assert out.data_ptr() == part.data_ptr(), name
        torch.testing.assert_close(
            buf[:, 3:11].cpu(),
            ghost_shift(xi, src, offsets, residual, 0.5, True), msg=name)
        assert buf[:, :3].isnan().all() and buf[:, 11:].isnan().all(), name
    torch.library.opcheck(ops.ghost_shift_into.default,
                          (x.cuda(), src.cuda(), offsets.cuda(), None, 1.0,
                           False, part))


@requires_cuda
def test_cuda_gradcheck_and_opcheck():
    x, src, offsets = sample(dtype=torch.float64, device='cuda')
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ghost_shift(t, src, offsets),
                                    (x, ))
    torch.library.opcheck(ops.ghost_shift.default, (x, src, offsets))


@requires_cuda
def test_cuda_mixed_devices_raise():
    x, src, offsets = sample()
    with pytest.raises(ValueError, match='`src` must be on the same device'):
        ops.ghost_shift(x.cuda(), src, offsets.cuda())


@requires_cuda
def test_cuda_autocast():
    x, src, offsets = sample(device='cuda')
    conv = torch.nn.Conv2d(4, 4, 3, padding=1).cuda()
    with torch.autocast('cuda', dtype=torch.float16):
        out = ghost_shift(conv(x), src, offsets)
    assert out.dtype == torch.float16
    torch.testing.assert_close(
        out.float(), ghost_shift(conv(x), src, offsets), atol=1e-2,
        rtol=1e-2)


# --------------------------------------------------------------------------
# The static form (ONNX export of deployed models).
# --------------------------------------------------------------------------
@pytest.mark.parametrize('mapping', ['by_order', 'clustered', 'far'])
def test_static_shift_equals_reference(mapping):
    from ghostsr_mm.ops import ghost_shift_static
    x = torch.randn(2, 6, 7, 9)
    if mapping == 'by_order':  # two runs: intrinsic, then shifted ghosts
        src = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
        offsets = torch.tensor([[0, 0]] * 6 + [[1, -1]] * 6)
    elif mapping == 'clustered':  # sources out of order: the gather form
        src = torch.tensor([3, 0, 5, 1, 0, 4, 2, 2, 5, 3, 1, 4])
        offsets = torch.tensor([[0, 0], [0, 0], [-1, 1], [0, 0], [-1, 1],
                                [0, 0], [0, 0], [-1, 1], [0, 0], [-1, 1],
                                [0, 0], [0, 0]])
    else:  # shifts as large as the image
        src = torch.tensor([0, 1, 2, 3])
        offsets = torch.tensor([[7, 0], [0, -9], [-3, 4], [6, 8]])
    residual = torch.randn(2, src.numel(), 7, 9)
    for args in ((), (residual, 0.5, True), (None, -0.5, True),
                 (None, 2.0, True)):
        torch.testing.assert_close(
            ghost_shift_static(x, src, offsets, *args),
            ghost_shift_reference(x, src, offsets, *args))


@pytest.mark.parametrize('h, w, dy, dx', [(1, 5, 1, 0), (2, 2, 3, 0),
                                          (2, 2, 0, -2), (3, 4, -5, 9)])
def test_static_shift_as_large_as_the_image(h, w, dy, dx):
    """A 1-pixel-high tile, shifts of the whole size and more: zeros, as
    the reference gives (a pad cannot crop more than the size)."""
    from ghostsr_mm.ops import ghost_shift_static
    x = torch.randn(1, 2, h, w)
    src, offsets = torch.tensor([0, 1, 0]), torch.tensor([[0, 0], [dy, dx],
                                                          [dy, 0]])
    torch.testing.assert_close(ghost_shift_static(x, src, offsets),
                               ghost_shift_reference(x, src, offsets))


# --------------------------------------------------------------------------
# CUDA against the CPU kernel, on the same inputs, over the CPU tests' grid.
# --------------------------------------------------------------------------
@requires_cuda
@requires_ext
@pytest.mark.parametrize('dtype', list(TOL))
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last',
                                    'transposed'])
@pytest.mark.parametrize('with_residual, scale, relu', EPILOGUES)
@pytest.mark.parametrize('into', [None, 'nchw_slice', 'nhwc_slice'])
def test_cuda_equals_cpu_over_the_grid(dtype, layout, with_residual, scale,
                                       relu, into):
    x, src, offsets = sample(n=3, ci=4, h=17, w=33, dtype=dtype)
    x = dict(layouts(x))[layout]
    residual = (torch.randn(3, 8, 17, 33, dtype=torch.float64).to(dtype)
                if with_residual else None)
    expected = ghost_shift(x, src, offsets, residual, scale, relu)
    cuda = dict(input=x.cuda(), src=src.cuda(), offsets=offsets.cuda(),
                residual=None if residual is None else residual.cuda())
    if into is None:
        got = ghost_shift(cuda['input'], cuda['src'], cuda['offsets'],
                          cuda['residual'], scale, relu)
    else:
        buf = concat_buffer(into == 'nhwc_slice', n=3, h=17, w=33,
                            dtype=dtype)[0].cuda()
        got = ghost_shift(cuda['input'], cuda['src'], cuda['offsets'],
                          cuda['residual'], scale, relu, out=buf[:, 3:11])
        assert buf[:, :3].isnan().all() and buf[:, 11:].isnan().all()
    torch.testing.assert_close(got.cpu(), expected, **TOL[dtype])
    grad = torch.randn(3, 8, 17, 33, dtype=torch.float64).to(dtype)
    grad = dict(layouts(grad))[layout]
    torch.testing.assert_close(
        ops.ghost_shift_backward(grad.cuda(), cuda['src'], cuda['offsets'],
                                 4).cpu(),
        ops.ghost_shift_backward(grad, src, offsets, 4), **TOL[dtype])
    channels = torch.tensor([4, 5, 6, 7])
    w_cpu = ops.ghost_shift_weight_grad(grad, x, src, channels, 1)
    w_cuda = ops.ghost_shift_weight_grad(grad.cuda(), cuda['input'],
                                         cuda['src'], channels.cuda(), 1)
    assert w_cuda.dtype == w_cpu.dtype == torch.promote_types(
        dtype, torch.float32)
    scale_ = w_cpu.abs().max().item()
    torch.testing.assert_close(w_cuda.cpu(), w_cpu,
                               atol=TOL[dtype]['atol'] * scale_ * 10,
                               rtol=TOL[dtype]['rtol'])


@requires_cuda
@requires_ext
def test_cuda_empty_tensors():
    """Empty inputs give empty outputs and launch nothing. (A src value out
    of range stops the kernel with a device-side assert:
    test_grid_emulation.py checks it without wrecking a CUDA context.)"""
    x, src, offsets = sample(device='cuda')
    empty = x[:0]
    assert ghost_shift(empty, src, offsets).shape == (0, 8, 5, 6)
    grad = torch.randn(0, 8, 5, 6, device='cuda')
    assert ops.ghost_shift_backward(grad, src, offsets, 4).shape == \
        (0, 4, 5, 6)
    channels = torch.tensor([4, 5], device='cuda')
    weight = ops.ghost_shift_weight_grad(grad, empty, src, channels, 1)
    assert weight.shape == (2, 3, 3) and not weight.any()  # a sum of nothing
    out = torch.empty(0, 8, 5, 6, device='cuda')
    ghost_shift(empty, src, offsets, out=out)  # nothing to write
    torch.testing.assert_close(
        ghost_shift(x, src, offsets).cpu(),
        ghost_shift(x.cpu(), src.cpu(), offsets.cpu()))


@requires_cuda
@requires_ext
def test_cuda_layers_make_no_host_sync():
    """A ghost layer's maps are not read back to the host: a training step
    and inference run from the first call under
    torch.cuda.set_sync_debug_mode('error'), which raises on a sync."""
    from ghostsr_mm.models.layers import GhostConv2d
    layer = GhostConv2d(8, 16, 3, padding=1, gumbel_decay=0.9).cuda()
    layer.gumbel_epoch = 2  # Eq. 3's noise on, decaying
    x = torch.randn(2, 8, 12, 12, device='cuda', requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        layer(x, relu=True).square().sum().backward()
        layer.eval()
        with torch.no_grad():
            out = layer(x)
    finally:
        torch.cuda.set_sync_debug_mode('default')
        layer.train()
    assert torch.isfinite(layer.shift_logits.grad).all()
    torch.testing.assert_close(out.cpu(), layer.cpu().eval()(x.detach().cpu()))


@requires_cuda
@requires_ext
def test_cuda_backward_needs_no_host_sync():
    """The backward's channel map is built on the device: the op runs while
    a CUDA graph is captured (a host sync would fail the capture)."""
    x, src, offsets = sample(device='cuda')
    grad = torch.randn(2, 8, 5, 6, device='cuda')
    ops.ghost_shift_backward(grad, src, offsets, 4)  # warm-up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.ghost_shift_backward(grad, src, offsets, 4)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(
        out.cpu(), ops.ghost_shift_backward(grad.cpu(), src.cpu(),
                                            offsets.cpu(), 4))


@requires_cuda
@requires_ext
@pytest.mark.skipif(
    not torch.cuda.is_available()
    or torch.cuda.get_device_properties(0).total_memory < 24 * 2**30,
    reason='needs a GPU with 24 GiB for tensors of more than 2^31 elements')
def test_cuda_more_than_2_31_elements():
    """An output, a gradient and an input gradient of more than 2^31
    elements (float16; 64-bit offsets in every kernel): equal to the same
    shift made by slicing, which indexes with 64 bits."""
    h, w = 32768, 36000  # 1.18e9 elements per plane
    x = torch.randn(1, 1, h, w, device='cuda', dtype=torch.float16)
    src = torch.tensor([0, 0], device='cuda')
    offsets = torch.tensor([[0, 0], [1, -1]], device='cuda')
    out = ghost_shift(x, src, offsets)
    assert out.numel() > 2**31
    assert torch.equal(out[0, 0], x[0, 0])
    shifted = torch.zeros_like(x[0, 0])
    shifted[1:, :-1] = x[0, 0, :-1, 1:]
    assert torch.equal(out[0, 1], shifted)
    del out, shifted
    grad = torch.randn(1, 2, h, w, device='cuda', dtype=torch.float16)
    grad_input = ops.ghost_shift_backward(grad, src, offsets, 1)
    expected = grad[0, 0].clone()
    expected[:-1, 1:] += grad[0, 1, 1:, :-1]
    assert torch.equal(grad_input[0, 0], expected)


@requires_ext
def test_src_written_behind_the_version_counter_is_seen():
    """Nothing about `src` is remembered between calls: writes that do not
    bump a tensor's version (through `.data`, a NumPy alias, `set_` onto
    the same storage) are refused at the next call on the CPU (on a GPU
    the kernels' asserts stop them: test_grid_emulation.py)."""
    x, src, offsets = sample()
    ghost_shift(x, src, offsets)
    src.data[0] = 4
    with pytest.raises(ValueError, match=r'`src` values must lie in \[0, 4\)'):
        ops.ghost_shift(x, src, offsets)
    src.data[0] = 0
    ops.ghost_shift(x, src, offsets)
    src.numpy()[1] = -1
    with pytest.raises(ValueError, match=r'got values in \[-1, 3\]'):
        ops.ghost_shift(x, src, offsets)
    other = torch.tensor([0, 1, 2, 3, 0, 1, 1, 9])
    with torch.no_grad():
        src.set_(other.untyped_storage(), 0, src.shape)
    with pytest.raises(ValueError, match=r'got values in \[0, 9\]'):
        ops.ghost_shift(x, src, offsets)
