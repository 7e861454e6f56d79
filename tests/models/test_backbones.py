"""Ghost EDSR / RDN / CARN / CARN-M: shapes, Table 1 parameter counts,
gradients to the shift weights, determinism, inference graph, MMagic
checkpoint compatibility, and a run inside MMagic's own EDSR config."""
import pytest
import torch
from mmagic.registry import MODELS
from mmengine.runner import Runner

from ghostsr_mm.models import GhostConv2d
from ghostsr_mm.models.clustering import cluster_init
from ghostsr_mm.models.layers import by_order_mapping
from conftest import requires_cuda
from helpers import make_sr_data, tiny_sr_config


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def weights(model):
    """Parameters without the shift proxies (Table 1 counts filters)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if 'shift_logits' not in n)


# Paper, Table 1, x2 (millions).
TABLE1 = [
    ('EDSRNet', 'GhostEDSRNet', dict(mid_channels=256, num_blocks=32,
                                     res_scale=0.1), 40.72, 21.63),
    ('RDNNet', 'GhostRDNNet', dict(mid_channels=64, num_blocks=16), 22.11,
     11.54),
    ('CARNNet', 'GhostCARNNet', dict(multi_scale=True), 1.59, 1.19),
    ('CARNNet', 'GhostCARNNet', dict(multi_scale=True, efficient=True), 0.41,
     0.33),
]


@pytest.mark.parametrize('conv, ghost, kwargs, conv_m, ghost_m', TABLE1)
def test_parameter_counts_match_table1(conv, ghost, kwargs, conv_m,
                                       ghost_m):
    cfg = dict(in_channels=3, out_channels=3, upscale_factor=2, **kwargs)
    with torch.device('meta'):  # shapes only: no memory, no init
        regular = MODELS.build(dict(type=conv, **cfg))
        ghosted = MODELS.build(dict(type=ghost, **cfg))
    assert n_params(regular) / 1e6 == pytest.approx(conv_m, rel=0.02)
    assert weights(ghosted) / 1e6 == pytest.approx(ghost_m, rel=0.02)


SMALL = {
    'GhostEDSRNet':
    dict(in_channels=3, out_channels=3, mid_channels=16, num_blocks=2),
    'GhostRDNNet':
    dict(
        in_channels=3,
        out_channels=3,
        mid_channels=16,
        num_blocks=2,
        num_layers=2,
        channel_growth=8),
    'GhostCARNNet':
    dict(mid_channels=16),
    'GhostCARNNet-M':
    dict(mid_channels=16, efficient=True),
}


def build_small(name, scale, **extra):
    cfg = dict(SMALL[name], upscale_factor=scale, **extra)
    return MODELS.build(dict(type=name.replace('-M', ''), **cfg))


REGULAR = {'GhostEDSRNet': 'EDSRNet', 'GhostRDNNet': 'RDNNet',
           'GhostCARNNet': 'CARNNet', 'GhostCARNNet-M': 'CARNNet'}


@pytest.mark.parametrize('name', list(SMALL))
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_copy_ghost_model_equals_regular_model_with_repeated_filters(
        name, scale):
    """A ghost model whose cheap operation is a copy computes exactly the
    regular model in which every ghost filter repeats its intrinsic
    filter (by-order map): the same output, at every scale."""
    torch.manual_seed(0)
    ghost = build_small(name, scale, cheap_op='copy').eval()
    regular = MODELS.build(
        dict(type=REGULAR[name], upscale_factor=scale,
             **SMALL[name])).eval()
    state = regular.state_dict()
    for lname, layer in ghost.ghost_layers():
        keep, src, _ = by_order_mapping(layer.out_channels,
                                        layer.num_intrinsic,
                                        layer.conv.groups)
        for p in ('weight', 'bias'):
            state[f'{lname}.{p}'] = state[f'{lname}.{p}'][keep[src]]
    regular.load_state_dict(state)
    cluster_init(ghost, state, method='order')
    x = torch.rand(2, 3, 10, 12)
    with torch.no_grad():
        expected = regular(x)
        out = ghost(x)
    assert out.shape == (2, 3, 10 * scale, 12 * scale)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # And a shift is not a copy: with its ghosts moved by a pixel the same
    # model differs by far more than float rounding.
    for _, layer in ghost.ghost_layers():
        layer.offsets[layer.ghost_channels] = torch.tensor([1, 0])
    with torch.no_grad():
        moved = (ghost(x) - expected).abs().max().item()
    assert moved > 100 * (out - expected).abs().max().item() + 1e-6


@pytest.mark.parametrize('name', list(SMALL))
def test_training_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_small(name, 2).train()
    model(torch.rand(2, 3, 12, 12)).abs().mean().backward()
    layers = list(model.ghost_layers())
    assert layers, 'no ghost layer'
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    for lname, layer in layers:
        assert layer.shift_logits.grad.abs().sum() > 0, lname


@pytest.mark.parametrize('name', list(SMALL))
def test_eval_is_deterministic_and_inference_graph_identical(name):
    torch.manual_seed(0)
    model = build_small(name, 2)
    for _, layer in model.ghost_layers():
        with torch.no_grad():
            layer.shift_logits.normal_()
    x = torch.rand(1, 3, 12, 12)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        fixed = model.convert_to_inference()
        c = fixed(x)
    assert torch.equal(a, b)
    assert torch.equal(a, c)
    assert not any('shift_logits' in k for k in fixed.state_dict())


@pytest.mark.parametrize('name', list(SMALL))
@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('device, dtype', [
    ('cpu', torch.bfloat16),
    pytest.param('cuda', torch.float16, marks=requires_cuda),
    pytest.param('cuda', torch.bfloat16, marks=requires_cuda)
])
def test_autocast(name, train, device, dtype):
    """Under autocast (CPU bfloat16; CUDA float16 and bfloat16) the convs
    run in the low precision and the ghost layers' shifts (with their
    epilogues and concatenations) take its inputs: the output stays within
    its rounding of the float32 model's (atol 2e-2 on [0, 1] images)."""
    torch.manual_seed(0)
    model = build_small(name, 2).train(train).to(device)
    x = torch.rand(1, 3, 12, 12, device=device)
    shift_dtypes = []
    hooks = [layer.register_forward_hook(
        lambda m, i, o: shift_dtypes.append(o.dtype))
        for _, layer in model.ghost_layers()]
    with torch.no_grad():
        torch.manual_seed(1)  # the same Gumbel noise for both (training)
        expected = model(x)
        shift_dtypes.clear()
        torch.manual_seed(1)
        with torch.autocast(device, dtype=dtype):
            out = model(x)
    for h in hooks:
        h.remove()
    assert shift_dtypes and set(shift_dtypes) == {dtype}
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)
    if train:  # and gradients reach the shift weights through it
        with torch.autocast(device, dtype=dtype):
            model(x).float().abs().mean().backward()
        for lname, layer in model.ghost_layers():
            assert torch.isfinite(layer.shift_logits.grad).all(), lname
            assert layer.shift_logits.grad.abs().sum() > 0, lname


def _plain_forwards():
    """Each block that fuses its epilogue into a ghost layer or writes into
    a GrowingConcat, with the forward it replaces: MMagic's own, or CARN's
    written out as separate ops (conv, then ReLU / add as their own passes,
    torch.cat for every concatenation)."""
    from mmagic.models.archs import ResidualBlockNoBN
    from mmagic.models.editors.rdn.rdn_net import RDB, RDNNet

    from ghostsr_mm.models.editors.carn import carn_net
    from ghostsr_mm.models.editors.edsr.ghost_edsr_net import \
        GhostResidualBlockNoBN
    from ghostsr_mm.models.editors.rdn.ghost_rdn_net import (GhostRDB,
                                                            GhostRDNNet)

    relu = torch.relu

    def carn_block(self, x):
        return relu(x + self.conv2(relu(self.conv1(x))))

    def carn_m_block(self, x):
        return relu(x + self.conv3(relu(self.conv2(relu(self.conv1(x))))))

    def carn_cascade(x, blocks, fusions, out=None):
        assert out is None  # the plain outer cascade passes none
        concat = out = x
        for block, fuse in zip(blocks, fusions):
            concat = torch.cat([concat, block(out)], 1)
            out = fuse(concat)
        return out

    return [(GhostResidualBlockNoBN, 'forward', ResidualBlockNoBN.forward),
            (GhostRDB, 'forward', RDB.forward),
            (GhostRDNNet, 'forward', RDNNet.forward),
            (carn_net.ResidualBlock, 'forward', carn_block),
            (carn_net.EfficientResidualBlock, 'forward', carn_m_block),
            (carn_net, 'cascade', carn_cascade),
            (carn_net.Upsampler, 'forward', torch.nn.Sequential.forward)]


@pytest.mark.parametrize('name', list(SMALL))
@pytest.mark.parametrize('train', [False, True])
def test_fused_epilogues_equal_the_plain_blocks(name, train, monkeypatch):
    """The blocks' ReLUs, residual scaling and adds ride in the shift's
    pass; the output equals the blocks as MMagic / CARN define them."""
    torch.manual_seed(0)
    extra = dict(res_scale=0.1) if name == 'GhostEDSRNet' else {}
    model = build_small(name, 2, **extra)
    for _, layer in model.ghost_layers():
        with torch.no_grad():
            layer.shift_logits.normal_()
        layer.gumbel_decay = 0.0  # no noise after epoch 1: same shifts
    model.set_gumbel_state(epoch=2)
    model.train(train)
    x = torch.rand(2, 3, 9, 11)
    with torch.no_grad():
        fused = model(x)
        fixed = None if train else model.convert_to_inference()(x)
    for owner, attr, plain in _plain_forwards():
        monkeypatch.setattr(owner, attr, plain)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(fused, expected)
    if fixed is not None:
        torch.testing.assert_close(fixed, expected)


def test_carn_multi_scale_picks_upsampler():
    model = build_small('GhostCARNNet', 2, multi_scale=True)
    x = torch.rand(1, 3, 8, 8)
    assert {s: model(x, s).shape[-1] for s in (2, 3, 4)} == {
        2: 16, 3: 24, 4: 32}
    single = build_small('GhostCARNNet', 2)
    with pytest.raises(ValueError, match=r"scale 3 is not available.*x2"):
        single(x, 3)


def test_carn_m_shares_block_and_shift():
    model = build_small('GhostCARNNet-M', 2)
    block = model.blocks[0]
    assert len(block.blocks) == 1  # one block, used three times
    calls = []
    block.blocks[0].conv1.register_forward_hook(
        lambda *args: calls.append(1))
    model(torch.rand(1, 3, 8, 8))
    assert len(calls) == 3
    # Its ghost layers, and their shift weights, exist once.
    assert isinstance(block.blocks[0].conv1, GhostConv2d)
    names = [n for n, _ in model.ghost_layers()]
    assert len(names) == 3 * 2 + 1  # 3 cascading blocks x 2 convs, x2 up


def test_carn_m_x4_ghost_upsampler_convs():
    """Single-scale x4 CARN-M: no ghost upsampler conv by default; the
    first of its two with ('x4',); both with 'all'. The second conv reads
    2H x 2W, so making it ghost saves half of its 256-output group conv
    (4 groups, 16 -> 64 channels each) at 64x64 for a 32x32 input."""
    from ghostsr_mm.analysis import count_flops
    args = dict(type='GhostCARNNet', mid_channels=64, upscale_factor=4,
                efficient=True)
    models = [MODELS.build(dict(args, **extra)) for extra in (
        {}, dict(ghost_upsamplers=('x4', )),
        dict(ghost_upsamplers=('x4', ), ghost_upsampler_convs='all'))]
    up = [[n for n in m.ghost_layer_names() if n.startswith('upsamplers')]
          for m in models]
    assert up == [[], ['upsamplers.x4.0'],
                  ['upsamplers.x4.0', 'upsamplers.x4.3']]
    assert all(isinstance(models[2].get_submodule(n), GhostConv2d)
               for n in up[2])
    flops = [count_flops(m.convert_to_inference().eval(), (3, 32, 32))
             for m in models]
    half_conv = 256 // 2 * (64 // 4) * 9  # per output pixel
    assert flops[0] - flops[1] == half_conv * 32 * 32
    assert flops[1] - flops[2] == half_conv * 64 * 64
    assert models[2](torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="ghost_upsampler_convs.*'first' "
                       "or 'all', got 'both'"):
        MODELS.build(dict(args, ghost_upsampler_convs='both'))


@pytest.mark.parametrize('mm_type, ghost_type, kwargs', [
    ('EDSRNet', 'GhostEDSRNet',
     dict(in_channels=3, out_channels=3, mid_channels=16, num_blocks=2)),
    ('RDNNet', 'GhostRDNNet',
     dict(in_channels=3, out_channels=3, mid_channels=16, num_blocks=2,
          num_layers=2, channel_growth=8)),
])
def test_regular_layers_keep_mmagic_state_dict_keys(mm_type, ghost_type,
                                                    kwargs):
    regular = MODELS.build(dict(type=mm_type, **kwargs)).state_dict()
    ghost = MODELS.build(dict(type=ghost_type, **kwargs))
    converted = {n + '.weight' for n, _ in ghost.ghost_layers()}
    converted |= {n + '.bias' for n, _ in ghost.ghost_layers()}
    kept = {k: v for k, v in regular.items() if k not in converted}
    missing, unexpected = ghost.load_state_dict(kept, strict=False)
    assert unexpected == []
    ghost_names = tuple(n + '.' for n, _ in ghost.ghost_layers())
    assert missing and all(k.startswith(ghost_names) for k in missing)
    for k, v in kept.items():
        assert torch.equal(ghost.state_dict()[k], v), k


@pytest.mark.parametrize('generator', [
    dict(type='GhostEDSRNet', in_channels=3, out_channels=3,
         mid_channels=16, num_blocks=2, upscale_factor=2),
    dict(type='GhostCARNNet', mid_channels=16, upscale_factor=2,
         efficient=True),
])
@pytest.mark.slow
def test_swapped_into_mmagic_edsr_config(tmp_path, generator):
    data = make_sr_data(str(tmp_path / 'data'), num=2, size=48)
    cfg = tiny_sr_config(str(tmp_path), data, generator=generator, iters=3)
    runner = Runner.from_cfg(cfg)
    before = {
        n: l.conv.weight.detach().clone()
        for n, l in runner.model.generator.ghost_layers()
    }
    runner.train()
    assert runner.iter == 3
    for n, layer in runner.model.generator.ghost_layers():
        assert not torch.equal(before[n], layer.conv.weight), n
