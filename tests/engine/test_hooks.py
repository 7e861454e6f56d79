"""GhostClusterInitHook and GumbelAnnealHook in a real MMagic Runner."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmagic.registry import HOOKS, MODELS

from helpers import make_sr_data, tiny_sr_config

TOOLS = osp.join(osp.dirname(osp.dirname(osp.dirname(__file__))), 'tools')
sys.path.insert(0, TOOLS)
import cluster_init as cluster_cli  # noqa: E402
from ghostsr_mm.cli import run_tool  # noqa: E402
from ghostsr_mm.checkpoint import read_checkpoint  # noqa: E402

GHOST = dict(
    type='GhostEDSRNet',
    in_channels=3,
    out_channels=3,
    mid_channels=16,
    num_blocks=2,
    upscale_factor=2)


@HOOKS.register_module(force=True)
class ProbeHook(Hook):
    """Records the generator's weights at before_train and the first ghost
    layer's noise scale at every iteration (runs after the hooks under
    test)."""
    priority = 'LOWEST'

    def __init__(self):
        self.state = None
        self.scales = []

    def before_train(self, runner):
        self.state = {
            k: v.clone()
            for k, v in runner.model.generator.state_dict().items()
        }

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        layer = next(runner.model.generator.ghost_layers())[1]
        self.scales.append((runner.iter, layer.gumbel_epoch,
                            layer.noise_scale))


def probe(runner):
    return next(h for h in runner.hooks if isinstance(h, ProbeHook))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_sr_data(str(tmp_path_factory.mktemp('sr')), num=4, size=48)


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    torch.manual_seed(1)
    regular = MODELS.build(dict(GHOST, type='EDSRNet'))
    path = tmp_path_factory.mktemp('pre') / 'edsr.pth'
    torch.save(regular.state_dict(), path)
    return str(path)


@pytest.mark.slow
def test_hook_matches_cli_and_leaves_resumed_weights(tmp_path, data_root,
                                                     pretrained):
    cfg = tiny_sr_config(str(tmp_path), data_root, generator=GHOST, iters=2)
    cfg.custom_hooks = [
        dict(type='GhostClusterInitHook', pretrained=pretrained),
        dict(type='ProbeHook')
    ]
    cfg_path = str(tmp_path / 'ghost_cfg.py')
    cfg.dump(cfg_path)
    out = str(tmp_path / 'ghost_init.pth')
    assert cluster_cli.main([pretrained, cfg_path, out]) == 0
    cli_state = read_checkpoint(out)['state_dict']

    runner = Runner.from_cfg(cfg)
    runner.train()
    hooked = probe(runner).state
    assert hooked.keys() == {
        k[len('generator.'):]
        for k in cli_state
    }
    for k, v in hooked.items():
        assert torch.equal(v, cli_state['generator.' + k]), k
    # The clustering changed the mapping away from the by-order default.
    fresh = MODELS.build(GHOST).state_dict()
    assert any(not torch.equal(fresh[k], hooked[k]) for k in hooked
               if k.endswith('.src'))

    # Resume: the resumed (trained) weights win over the clustering.
    resumed_from = read_checkpoint(osp.join(cfg.work_dir, 'iter_2.pth'))['state_dict']
    cfg2 = tiny_sr_config(str(tmp_path), data_root, generator=GHOST, iters=3)
    cfg2.custom_hooks = cfg.custom_hooks
    cfg2.resume = True
    runner2 = Runner.from_cfg(cfg2)
    runner2.train()
    for k, v in probe(runner2).state.items():
        assert torch.equal(v, resumed_from['generator.' + k]), k

    # load_from (fine-tuning a trained ghost model): its weights win too.
    cfg3 = tiny_sr_config(str(tmp_path / 'tune'), data_root, generator=GHOST,
                          iters=1)
    cfg3.custom_hooks = cfg.custom_hooks
    cfg3.load_from = osp.join(cfg.work_dir, 'iter_2.pth')
    runner3 = Runner.from_cfg(cfg3)
    runner3.train()
    for k, v in probe(runner3).state.items():
        assert torch.equal(v, resumed_from['generator.' + k]), k


def test_cli_refuses_to_overwrite(tmp_path, pretrained, capsys):
    out = tmp_path / 'exists.pth'
    out.write_bytes(b'user data')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f'model = dict(generator={GHOST!r})\n')
    assert run_tool(cluster_cli.main, [pretrained, str(cfg), str(out)]) == 1
    assert 'pass --force' in capsys.readouterr().err
    assert out.read_bytes() == b'user data'
    assert run_tool(cluster_cli.main,
                    [pretrained, str(cfg), str(out), '--force']) == 0
    assert 'blocks' not in capsys.readouterr().err
    assert read_checkpoint(out)['meta']['seed'] == 0


@pytest.mark.slow
@pytest.mark.parametrize('interval, expected_interval', [(3, 3), (None, 2)])
def test_anneal_hook_noise_follows_decay(tmp_path, data_root, interval,
                                         expected_interval):
    cfg = tiny_sr_config(str(tmp_path), data_root, generator=GHOST, iters=7)
    cfg.custom_hooks = [
        dict(type='GumbelAnnealHook', interval=interval, tau=0.5),
        dict(type='ProbeHook')
    ]
    runner = Runner.from_cfg(cfg)
    runner.train()
    # 4 images, batch 2: one pass over the data is 2 iterations.
    for it, epoch, scale in probe(runner).scales:
        assert epoch == it // expected_interval + 1
        assert scale == pytest.approx(0.97**(epoch - 1))
    assert all(layer.tau == 0.5
               for _, layer in runner.model.generator.ghost_layers())
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert 'GumbelAnnealHook: final shift offsets' in log
    assert 'noise scale a^(t-1)=0.97' in log


def test_anneal_hook_rejects_bad_arguments():
    with pytest.raises(ValueError, match='interval.*>= 1'):
        HOOKS.build(dict(type='GumbelAnnealHook', interval=0))
    with pytest.raises(ValueError, match='tau.*> 0'):
        HOOKS.build(dict(type='GumbelAnnealHook', tau=0))


def test_anneal_hook_rejects_interval_with_epochs():
    with pytest.raises(ValueError, match='`interval` or `epochs`, not both'):
        HOOKS.build(dict(type='GumbelAnnealHook', interval=2, epochs=3))
    with pytest.raises(ValueError, match='`epochs` must be an int >= 1'):
        HOOKS.build(dict(type='GumbelAnnealHook', epochs=0))


@pytest.mark.slow
def test_anneal_hook_epochs_spread_over_training_and_warns(tmp_path,
                                                           data_root):
    """`epochs=3` over 10 iterations: epochs of ceil(10 / 3) = 4
    iterations, t = it // 4 + 1, so t ends at 3, not 4 (and not one pass
    over the data, 2 iterations); the default schedule over 9 iterations
    ends at t = 5, noise 0.97^4 = 0.885 > 0.1, which is logged as a
    warning."""
    cfg = tiny_sr_config(str(tmp_path), data_root, generator=GHOST, iters=10)
    cfg.custom_hooks = [
        dict(type='GumbelAnnealHook', epochs=3),
        dict(type='ProbeHook')
    ]
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert [(it, t) for it, t, _ in probe(runner).scales] == [
        (it, it // 4 + 1) for it in range(10)]
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert '3 Gumbel epochs of 4 iterations; noise scale a^(t-1) from 1 ' \
        'to 0.941' in log
    assert 'WARNING - GumbelAnnealHook: the Gumbel noise will still be at ' \
        '0.941 of its full strength' in log

    cfg = tiny_sr_config(str(tmp_path / 'b'), data_root, generator=GHOST,
                         iters=9)
    cfg.custom_hooks = [dict(type='GumbelAnnealHook', warn_noise=0.95)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert '5 Gumbel epochs of 2 iterations; noise scale a^(t-1) from 1 ' \
        'to 0.885' in log
    assert 'will still be at' not in log
