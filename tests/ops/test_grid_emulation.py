"""The CUDA kernels, run on the CPU: ``csrc/pytorch/cuda/ghost_shift_cuda.cu``
itself (kernels and launchers) compiled as host code over
``tests/csrc/grid_emulation.h``, launched with the grids its launchers
compute, against the pure-PyTorch reference. Never skipped: it needs a C++
compiler, not a GPU."""
import os.path as osp

import pytest
import torch
from torch.utils.cpp_extension import load

from ghostsr_mm.ops import (ghost_shift_backward_reference,
                            ghost_shift_reference,
                            ghost_shift_weight_grad_reference)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOL = {
    torch.float64: dict(atol=1e-12, rtol=1e-12),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=5e-2, rtol=5e-2),
}
EPILOGUES = [(False, 1.0, False), (True, 0.1, False), (True, 1.0, True),
             (False, -0.5, True)]


@pytest.fixture(scope='module')
def grid():
    """torch.ops.ghostsr_grid: the CUDA kernels as CPU ops (built once;
    ninja rebuilds it when a source changes)."""
    build = osp.join(ROOT, 'build', 'grid_emulation')
    import os
    os.makedirs(build, exist_ok=True)
    load(name='ghostsr_grid_emulation',
         sources=[osp.join(ROOT, 'tests', 'csrc', 'grid_emulation.cpp'),
                  osp.join(ROOT, 'csrc', 'pytorch', 'ghost_shift_args.cpp')],
         extra_include_paths=[osp.join(ROOT, 'csrc', 'common')],
         extra_cflags=['-O2'],
         build_directory=build,
         is_python_module=False)
    ops = torch.ops.ghostsr_grid
    ops.launches()  # forget earlier launches
    return ops


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture(params=[32, 64], ids=['index32', 'index64'])
def index_bits(request, grid):
    """32: the kernels' 32-bit index path; 64: the limit lowered to 0, so the
    64-bit path runs (on a GPU it takes 2^31 elements)."""
    previous = grid.set_index_32_limit(2**31 - 1 if request.param == 32 else
                                       0)
    yield request.param
    grid.set_index_32_limit(previous)


def sample(n=3, ci=4, h=17, w=33, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ci, h, w, generator=gen, dtype=torch.float64).to(dtype)
    src = torch.tensor([0, 1, 2, 3, 0, 1, 1, 3])
    offsets = torch.tensor([[0, 0], [0, 0], [0, 0], [0, 0], [1, -1], [-2, 3],
                            [7, 0], [0, -1]])
    return x, src, offsets


def in_layout(x, layout):
    if layout == 'channels_last':
        return x.contiguous(memory_format=torch.channels_last)
    if layout == 'transposed':  # neither NCHW nor channels_last
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    return x


@pytest.mark.parametrize('dtype', list(TOL))
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last',
                                    'transposed'])
@pytest.mark.parametrize('with_residual, scale, relu', EPILOGUES)
@pytest.mark.parametrize('into', [None, 'nchw_slice', 'nhwc_slice'])
def test_forward_over_the_grid(grid, index_bits, dtype, layout, with_residual,
                               scale, relu, into):
    x, src, offsets = sample(dtype=dtype)
    x = in_layout(x, layout)
    residual = (in_layout(torch.randn(3, 8, 17, 33).to(dtype), layout)
                if with_residual else None)
    expected = ghost_shift_reference(x, src, offsets, residual, scale, relu)
    if into is None:
        got = grid.ghost_shift(x, src, offsets, residual, scale, relu)
        assert got.is_contiguous(memory_format=torch.channels_last) == (
            layout == 'channels_last')
    else:
        fmt = (torch.channels_last
               if into == 'nhwc_slice' else torch.contiguous_format)
        buf = torch.full((3, 12, 17, 33), float('nan'),
                         dtype=dtype).contiguous(memory_format=fmt)
        got = buf[:, 3:11]
        grid.ghost_shift_into(x, src, offsets, residual, scale, relu, got)
        assert buf[:, :3].isnan().all() and buf[:, 11:].isnan().all()
    if with_residual or scale != 1 or relu:
        torch.testing.assert_close(got, expected, **TOL[dtype])
    else:  # a plain move is bit-exact
        assert torch.equal(got, expected)
    assert grid.launches() == grid.element_launch(got.numel())[:3]


@pytest.mark.parametrize('dtype', list(TOL))
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last',
                                    'transposed'])
def test_backward_over_the_grid(grid, index_bits, dtype, layout):
    _, src, offsets = sample()
    grad = in_layout(torch.randn(3, 8, 17, 33, dtype=torch.float64), layout)
    got = grid.ghost_shift_backward(grad.to(dtype), src, offsets, 4)
    # channels_last stays channels_last (no copy to NCHW and back)
    assert got.is_contiguous(memory_format=torch.channels_last) == (
        layout == 'channels_last')
    expected = ghost_shift_backward_reference(grad, src, offsets, 4)
    torch.testing.assert_close(got.double(), expected, **TOL[dtype])
    assert grid.launches() == grid.element_launch(got.numel())[:3]


def check_weight_grad(grid, grad, x, src, channels, d, dtype):
    got = grid.ghost_shift_weight_grad(grad.to(dtype), x.to(dtype), src,
                                       channels, d)
    assert got.dtype == torch.promote_types(dtype, torch.float32)
    expected = ghost_shift_weight_grad_reference(grad.double(), x.double(),
                                                 src, channels, d)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got.double(), expected,
                               atol=TOL[dtype]['atol'] * scale * 10,
                               rtol=TOL[dtype]['rtol'])
    k = 2 * d + 1
    n, _, h, w = x.shape
    cfg = grid.weight_grad_launch(len(channels) * k * k, n * h * w)
    launches = grid.launches()
    assert launches[:3] == cfg[:3]
    if cfg[1] > 1:  # the splits' partial sums, then their sum
        finish = grid.element_launch(len(channels) * k * k)[:3]
        assert launches[3:] == finish
    return got


@pytest.mark.parametrize('dtype', list(TOL))
def test_weight_grad_over_the_grid(grid, index_bits, dtype):
    x, src, _ = sample()
    grad = torch.randn(3, 8, 17, 33, dtype=torch.float64)
    check_weight_grad(grid, grad, x, src, torch.tensor([4, 5, 6, 7]), 1,
                      dtype)


@pytest.mark.parametrize('n, h, w, d, channels', [
    (2, 1, 1, 1, [0, 3]),  # 1x1 images: every shifted candidate reads zeros
    (2, 3, 2, 2, [1, 2, 3]),  # a window wider than the image
    (4, 64, 64, 1, [5]),  # one channel: the positions split over blocks
    (3, 57, 61, 2, [0, 7]),  # splits of a size that is not a block multiple
])
def test_weight_grad_edges(grid, n, h, w, d, channels):
    x = torch.randn(n, 4, h, w, dtype=torch.float64)
    grad = torch.randn(n, 8, h, w, dtype=torch.float64)
    _, src, _ = sample()
    check_weight_grad(grid, grad, x, src, torch.tensor(channels), d,
                      torch.float32)


def test_weight_grad_splits_when_few_channels(grid):
    """A 32-channel layer with d = 1 on 64x64 patches: far more blocks than
    its 288 (channel, candidate) pairs, and the same result every run."""
    pairs, positions = 32 * 9, 16 * 64 * 64
    grid_x, grid_y, block, chunk = grid.weight_grad_launch(pairs, positions)
    assert (grid_x, block) == (pairs, 256)
    assert grid_x * grid_y >= 4 * 132 and grid_y * chunk >= positions
    x = torch.randn(2, 4, 64, 64)
    grad = torch.randn(2, 8, 64, 64)
    _, src, _ = sample()
    channels = torch.tensor([6])
    first = check_weight_grad(grid, grad, x, src, channels, 1, torch.float32)
    again = grid.ghost_shift_weight_grad(grad, x, src, channels, 1)
    grid.launches()
    assert torch.equal(first, again)


@pytest.mark.parametrize('case', ['one_pixel', 'huge_shifts', 'odd_channels',
                                  'empty_batch', 'no_channels'])
def test_forward_backward_edges(grid, case):
    gen = torch.Generator().manual_seed(1)
    n, ci, co, h, w, reach = 2, 4, 8, 5, 6, 2
    if case == 'one_pixel':
        h = w = 1
    elif case == 'huge_shifts':
        reach = 40  # most shifts are >= H or W
    elif case == 'odd_channels':
        ci, co = 7, 33  # not multiples of a warp
    elif case == 'empty_batch':
        n = 0
    elif case == 'no_channels':
        co = 0
    x = torch.randn(n, ci, h, w, generator=gen)
    src = torch.randint(0, ci, (co, ), generator=gen)
    offsets = torch.randint(-reach, reach + 1, (co, 2), generator=gen)
    assert torch.equal(grid.ghost_shift(x, src, offsets),
                       ghost_shift_reference(x, src, offsets))
    grad = torch.randn(n, co, h, w, generator=gen)
    torch.testing.assert_close(
        grid.ghost_shift_backward(grad, src, offsets, ci),
        ghost_shift_backward_reference(grad, src, offsets, ci))
    channels = torch.arange(co)
    weight = grid.ghost_shift_weight_grad(grad, x, src, channels, 1)
    if co == 0:
        assert weight.shape == (0, 3, 3)
    else:  # an empty batch sums nothing: zeros
        torch.testing.assert_close(
            weight,
            ghost_shift_weight_grad_reference(grad, x, src, channels, 1),
            atol=1e-5, rtol=1e-5)
    grid.launches()


def test_more_blocks_than_one_grid_dimension_holds(grid):
    """16.8M outputs: the grid stops at 65535 blocks of 256 threads and the
    threads stride over the rest."""
    x = torch.randn(1, 1, 4100, 4100)
    src, offsets = torch.tensor([0]), torch.tensor([[1, -2]])
    total = x.numel()
    grid_x, grid_y, block, _ = grid.element_launch(total)
    assert (grid_x, grid_y, block) == (65535, 1, 256)
    assert grid_x * block < total
    out = grid.ghost_shift(x, src, offsets)
    assert grid.launches() == [65535, 1, 256]
    assert torch.equal(out, ghost_shift_reference(x, src, offsets))


def test_src_is_asserted_before_narrowing(grid):
    """A src value past the input channels stops the kernel (an assert on
    the GPU), also one that int32 would wrap into range (2^32 -> 0)."""
    x, src, offsets = sample()
    for bad in (4, 2**32, -1):
        with pytest.raises(RuntimeError, match='device-side assert failed: s '
                           '>= 0 && s < d.Ci'):
            grid.forward_unchecked(x, torch.full_like(src, bad), offsets)
    grid.launches()


def test_non_finite_contract_matches_cpu(grid):
    """An infinite input value reaches exactly the candidates that read it,
    on the CPU kernels and the CUDA ones alike; a non-finite scale is
    refused by both and by the reference."""
    from ghostsr_mm.ops import HAS_EXT
    x, src, _ = sample(n=1, h=6, w=7)
    x[0, 1, 0, 0] = float('inf')
    grad = torch.ones(1, 8, 6, 7)
    channels = torch.tensor([1, 5])  # both read intrinsic channel 1
    got = grid.ghost_shift_weight_grad(grad, x, src, channels, 1)
    grid.launches()
    # (0, 0) is read by the candidates looking up and left, i.e. shifts
    # (dy, dx) with dy, dx >= 0: i, j <= d.
    inf = torch.zeros(3, 3, dtype=torch.bool)
    inf[:2, :2] = True
    assert torch.equal(got.isinf(), inf.expand(2, 3, 3))
    assert torch.isfinite(got[:, ~inf]).all()
    if HAS_EXT:
        cpu = torch.ops.ghostsr.ghost_shift_weight_grad(grad, x, src,
                                                        channels, 1)
        torch.testing.assert_close(cpu, got, equal_nan=True)
    for scale in (float('inf'), float('nan')):
        for op in (grid.ghost_shift, ghost_shift_reference) + (
                (torch.ops.ghostsr.ghost_shift, ) if HAS_EXT else ()):
            with pytest.raises(ValueError, match='`scale` must be finite'):
                op(x, src, torch.zeros(8, 2, dtype=torch.long), None, scale)
