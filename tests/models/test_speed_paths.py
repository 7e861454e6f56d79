"""The paths the speed work relies on give the same outputs: inference
graph vs training model in eval mode, channels_last vs contiguous, and
torch.compile vs eager (no timing is asserted here; see benchmarks/)."""
import pytest
import torch
from mmagic.registry import MODELS

from conftest import requires_cuda

CFGS = {
    'GhostEDSRNet': dict(in_channels=3, out_channels=3, mid_channels=16,
                         num_blocks=2, upscale_factor=2),
    'GhostRDNNet': dict(in_channels=3, out_channels=3, mid_channels=16,
                        num_blocks=2, num_layers=2, channel_growth=8,
                        upscale_factor=2),
    'GhostCARNNet': dict(mid_channels=16, efficient=True, upscale_factor=2),
}


def trained_looking(name):
    torch.manual_seed(0)
    model = MODELS.build(dict(type=name, **CFGS[name]))
    for _, layer in model.ghost_layers():
        with torch.no_grad():
            layer.shift_logits.normal_()
    return model.eval()


@pytest.mark.parametrize('name', list(CFGS))
def test_channels_last_matches_contiguous(name):
    model = trained_looking(name).convert_to_inference()
    x = torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CFGS))
def test_torch_compile_matches_eager(name):
    model = trained_looking(name).convert_to_inference()
    x = torch.rand(1, 3, 12, 12)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.slow
def test_torch_compile_trains_learnable_shift():
    """Compiled, the learnable shifts get the gradients eager computes (the
    noise switched off, so both draw the same shifts)."""
    import copy
    model = MODELS.build(dict(type='GhostEDSRNet', **CFGS['GhostEDSRNet'],
                              gumbel_decay=0.0))
    model.set_gumbel_state(epoch=2)  # noise scale a^(t-1) = 0
    twin = copy.deepcopy(model)
    x = torch.rand(2, 3, 12, 12)
    model(x).abs().mean().backward()
    torch.compile(twin, backend='aot_eager')(x).abs().mean().backward()
    layers = dict(twin.ghost_layers())
    for name, layer in model.ghost_layers():
        assert layer.shift_logits.grad.abs().sum() > 0, name
        torch.testing.assert_close(layers[name].shift_logits.grad,
                                   layer.shift_logits.grad, msg=name)


def _compiled_code(model, x):
    from torch._inductor import config
    from torch._inductor.utils import run_and_get_code

    # Inductor's caches do not key on an op's tags: code compiled before
    # the extension was rebuilt could come back.
    with torch.no_grad(), config.patch(force_disable_caches=True):
        out, code = run_and_get_code(torch.compile(model, fullgraph=True), x)
    return out, '\n'.join(code)


@pytest.mark.slow
@pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                    reason='inductor picks channels_last convs with oneDNN')
def test_compiled_shift_takes_the_conv_layout():
    """The shift reads the convolution's channels_last output as it is and
    the next convolution reads the shift's: inductor adds no layout
    conversion around the op (its kernels accept any strides)."""
    import re
    model = trained_looking('GhostEDSRNet').convert_to_inference()
    x = torch.rand(1, 3, 12, 12)
    out, code = _compiled_code(model, x)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-5)
    conv_outputs = set(re.findall(
        r'(buf\d+) = extern_kernels\.convolution\(', code))
    shift_inputs = re.findall(
        r'= torch\.ops\.ghostsr\.ghost_shift\.default\((buf\d+),', code)
    assert len(shift_inputs) == len(list(model.ghost_layers()))
    assert set(shift_inputs) <= conv_outputs, code
    # No kernel of inductor's own copies a shift's input or output.
    assert not re.search(r'cpp_fused\w*ghost_shift', code), code


@pytest.mark.slow
def test_compiled_concat_is_torch_cat():
    """Under torch.compile a dense block concatenates with torch.cat, which
    inductor lays out itself, not by writes into an eager buffer (whose
    layout would differ from the convolutions' and cost a conversion per
    layer)."""
    model = trained_looking('GhostRDNNet').convert_to_inference()
    x = torch.rand(1, 3, 12, 12)
    out, code = _compiled_code(model, x)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-5)
    assert 'ghost_shift_into' not in code
    assert 'ghost_shift.default' in code


@requires_cuda
@pytest.mark.parametrize('name', list(CFGS))
def test_cuda_graph_replays_the_inference_graph(name):
    """A deployed ghost model runs under CUDA-graph capture once it has run
    eagerly (its channel maps are checked on the host at the first call,
    not while capturing), and a replay on new input equals eager."""
    model = trained_looking(name).convert_to_inference().cuda()
    x = torch.rand(2, 3, 12, 10, device='cuda')
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream
            model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = model(x)
        x.copy_(torch.rand_like(x))
        graph.replay()
        torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-5)


@requires_cuda
@pytest.mark.parametrize('name', list(CFGS))
def test_cuda_compile_reduce_overhead_matches_eager(name):
    """torch.compile(mode='reduce-overhead'), which replays CUDA graphs,
    gives the eager model's output."""
    model = trained_looking(name).convert_to_inference().cuda()
    compiled = torch.compile(model, mode='reduce-overhead', fullgraph=True)
    with torch.no_grad():
        for _ in range(3):  # record, then replay
            x = torch.rand(1, 3, 12, 12, device='cuda')
            torch.testing.assert_close(compiled(x).clone(), model(x),
                                       atol=1e-5, rtol=1e-5)
