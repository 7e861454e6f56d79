"""narrowed_state_dict: a wide trained CARN / CARN-M cut to a narrower
width (ClassSR's branches started from the original network)."""
import pytest
import torch
import torch.nn as nn

from ghostsr_mm.models import CARNNet, GhostCARNNet, narrowed_state_dict


def silence_dropped_channels(model: CARNNet, width: int, groups: int):
    """Zero the weights and biases that write the channels a
    ``width``-wide cut drops (all but the first width/groups of each
    group), so those channels are 0 everywhere in ``model``."""
    wide = model.entry.out_channels
    dropped = torch.ones(wide, dtype=torch.bool)
    for g in range(groups):
        start = g * wide // groups
        dropped[start:start + width // groups] = False
    with torch.no_grad():
        for name, conv in model.named_modules():
            if not isinstance(conv, nn.Conv2d) or name == 'exit':
                continue
            # an upsampler conv writes r^2 consecutive outputs per channel
            rows = dropped.repeat_interleave(conv.out_channels // wide)
            conv.weight[rows] = 0
            conv.bias[rows] = 0


@pytest.mark.parametrize('kwargs,wide,width,groups', [
    (dict(efficient=True, upscale_factor=4), 32, 16, 4),
    (dict(efficient=True, upscale_factor=3), 24, 12, 4),
    (dict(upscale_factor=2, multi_scale=True), 16, 12, 1),
])
def test_narrow_network_computes_the_wide_one(kwargs, wide, width, groups):
    torch.manual_seed(0)
    big = CARNNet(mid_channels=wide, **kwargs).eval()
    for p in big.parameters():  # nonzero biases everywhere
        nn.init.uniform_(p, -0.2, 0.2)
    silence_dropped_channels(big, width, groups)
    small = CARNNet(mid_channels=width, **kwargs).eval()
    small.load_state_dict(narrowed_state_dict(big.state_dict(), small))
    x = torch.rand(2, 3, 9, 11)
    scales = (2, 3, 4) if kwargs.get('multi_scale') else (None, )
    with torch.no_grad():
        for s in scales:
            expected = big(x, s)
            assert expected.abs().max() > 0.1  # not a trivial output
            torch.testing.assert_close(small(x, s), expected, rtol=1e-5,
                                       atol=1e-5)


def test_kept_channels_are_the_first_of_each_group():
    big = CARNNet(mid_channels=16, efficient=True, upscale_factor=2)
    small = CARNNet(mid_channels=8, efficient=True, upscale_factor=2)
    state = narrowed_state_dict(big.state_dict(), small)
    # groups of 4 channels: 0, 1 | 4, 5 | 8, 9 | 12, 13 kept
    keep = [0, 1, 4, 5, 8, 9, 12, 13]
    torch.testing.assert_close(state['entry.weight'],
                               big.entry.weight.detach()[keep])
    fusion = big.fusions[0][0].weight.detach()  # reads 2 x 16 channels
    torch.testing.assert_close(state['fusions.0.0.weight'],
                               fusion[keep][:, keep + [k + 16 for k in keep]])
    conv1 = big.blocks[0].blocks[0].conv1.weight.detach()  # 4 per group
    torch.testing.assert_close(state['blocks.0.blocks.0.conv1.weight'],
                               conv1[keep][:, :2])
    up = big.upsamplers['x2'][0].weight.detach()  # 4 sub-pixels a channel
    rows = [4 * k + i for k in keep for i in range(4)]
    torch.testing.assert_close(state['upsamplers.x2.0.weight'],
                               up[rows][:, :2])
    torch.testing.assert_close(state['exit.weight'],
                               big.exit.weight.detach()[:, keep])


def test_bad_input_is_named():
    small = CARNNet(mid_channels=8, efficient=True)
    with pytest.raises(ValueError, match='at least the model.s 8'):
        narrowed_state_dict(
            CARNNet(mid_channels=4, efficient=True).state_dict(), small)
    with pytest.raises(ValueError, match="lacks \\['blocks.2"):
        narrowed_state_dict(
            CARNNet(mid_channels=16, efficient=True,
                    num_blocks=2).state_dict(), small)
    with pytest.raises(ValueError, match='16 channels per group'):  # CARN
        narrowed_state_dict(CARNNet(mid_channels=16).state_dict(), small)
    with pytest.raises(ValueError, match="not in the model's 4 groups"):
        narrowed_state_dict(
            CARNNet(mid_channels=16, efficient=True, groups=2).state_dict(),
            small)
    with pytest.raises(ValueError, match='cannot be cut'):  # 3 -> 1 channel
        narrowed_state_dict(
            CARNNet(mid_channels=16, efficient=True).state_dict(),
            CARNNet(mid_channels=8, efficient=True, out_channels=1,
                    rgb_mean=(0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match='regular CARNNet, got GhostCARN'):
        narrowed_state_dict(
            CARNNet(mid_channels=16).state_dict(),
            GhostCARNNet(mid_channels=8))
    with pytest.raises(ValueError, match="no 'entry.weight'"):
        narrowed_state_dict({}, small)


def test_config_starts_a_branch_from_a_wider_checkpoint(tmp_path):
    """``init_cfg=dict(type='NarrowedPretrained')`` in a generator config,
    run as the Runner does (model.init_weights() in the mmagic scope), from
    an MMagic checkpoint; a checkpoint of another network is named."""
    from mmengine.registry import DefaultScope
    from mmagic.registry import MODELS

    from ghostsr_mm.checkpoint import CheckpointError
    torch.manual_seed(1)
    big = CARNNet(mid_channels=16, efficient=True, upscale_factor=4)
    path = str(tmp_path / 'iter_10.pth')
    torch.save(dict(meta=dict(iter=10), state_dict={
        f'generator.{k}': v for k, v in big.state_dict().items()}), path)
    cfg = dict(type='CARNNet', mid_channels=8, efficient=True,
               upscale_factor=4,
               init_cfg=dict(type='NarrowedPretrained', checkpoint=path))
    with DefaultScope.overwrite_default_scope('mmagic'):
        small = MODELS.build(cfg)
        small.init_weights()
    expected = narrowed_state_dict(big.state_dict(), small)
    for name, value in small.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)

    other = str(tmp_path / 'carn.pth')
    torch.save(CARNNet(mid_channels=16).state_dict(), other)
    cfg['init_cfg']['checkpoint'] = other
    with DefaultScope.overwrite_default_scope('mmagic'):
        with pytest.raises(CheckpointError,
                           match=f'{other}: .*16 channels per group'):
            MODELS.build(cfg).init_weights()
