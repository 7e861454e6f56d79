"""The paths the speed work relies on give the same outputs: inference
graph vs training model in eval mode, channels_last vs contiguous, and
torch.compile vs eager (no timing is asserted here; see benchmarks/)."""
import pytest
import torch
from mmagic.registry import MODELS

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


@pytest.mark.parametrize('name', list(CFGS))
def test_torch_compile_matches_eager(name):
    model = trained_looking(name).convert_to_inference()
    x = torch.rand(1, 3, 12, 12)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5,
                                   rtol=1e-5)


def test_torch_compile_trains_learnable_shift():
    model = MODELS.build(dict(type='GhostEDSRNet', **CFGS['GhostEDSRNet']))
    compiled = torch.compile(model, backend='aot_eager')
    x = torch.rand(2, 3, 12, 12)
    compiled(x).abs().mean().backward()
    for name, layer in model.ghost_layers():
        assert layer.shift_logits.grad is not None, name
