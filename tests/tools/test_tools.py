"""The configs and tools/ as a user runs them: every config builds; train
and test through tools/train.py and tools/test.py; distributed training
with 2 CPU processes (tools/dist_train.sh); complexity; deploy + ONNX; the
missing-data error."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch
from mmengine.config import Config
from mmagic.registry import MODELS

from ghostsr_mm.apis import write_data_config
from ghostsr_mm.checkpoint import read_checkpoint
from helpers import ROOT, free_port, make_sr_data, run_tool

CONFIGS = sorted(
    c for c in glob.glob(osp.join(ROOT, 'configs', 'ghostsr', '*', '*.py')) +
    [osp.join(ROOT, 'configs', 'ghost_edsr_x2_div2k.py')]
    if '/_base_/' not in c)
sys.path.insert(0, osp.join(ROOT, 'tools'))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds(path):
    cfg = Config.fromfile(path)
    with torch.device('meta'):  # the paper's models: shapes only
        model = MODELS.build(cfg.model)
    gen = cfg.model.generator
    assert type(model.generator).__name__ == gen.type
    scale = gen.get('upscale_factor')
    name = osp.basename(path)
    if 'x3' in name or 'x4' in name:
        expected = 3 if 'x3' in name else 4
        assert scale == expected
        crop = cfg.train_dataloader.dataset.pipeline[3]['gt_patch_size']
        assert crop == 48 * expected
        assert all(m['crop_border'] == expected
                   for e in cfg.test_evaluator for m in e['metrics'])
    if name.startswith('ghost') and 'c64b16' not in name:
        hooks = [h['type'] for h in cfg.custom_hooks]
        assert {'GhostClusterInitHook', 'GumbelAnnealHook'} <= set(hooks)


def tiny_child_config(tmp_path, base, data, pretrained=None, iters=2):
    """A user's config: the real one, shrunk to tiny data."""
    overrides = dict(model=dict(generator=dict(mid_channels=16,
                                               num_blocks=2)))
    if pretrained:
        overrides['custom_hooks'] = [
            dict(type='GhostClusterInitHook', pretrained=pretrained),
            dict(type='GumbelAnnealHook')
        ]
    path = str(tmp_path / f'tiny_{osp.basename(base)}')
    return write_data_config(path, base, data, iters, overrides=overrides)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_sr_data(str(tmp_path_factory.mktemp('sr')), num=3, size=48)


@pytest.mark.slow
def test_train_regular_then_ghost_then_test(tmp_path, data):
    regular = tiny_child_config(
        tmp_path, osp.join(ROOT, 'configs/ghostsr/edsr/'
                           'edsr_x2c256b32_div2k.py'), data)
    out = run_tool('tools/train.py', regular, '--work-dir',
                   str(tmp_path / 'regular'))
    assert out.returncode == 0, out.stderr[-3000:]
    pretrained = str(tmp_path / 'regular' / 'iter_2.pth')
    assert osp.isfile(pretrained)

    ghost = tiny_child_config(
        tmp_path, osp.join(ROOT, 'configs/ghost_edsr_x2_div2k.py'), data,
        pretrained=pretrained)
    out = run_tool('tools/train.py', ghost, '--work-dir',
                   str(tmp_path / 'ghost'))
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'GhostClusterInitHook: initialised from' in log
    assert 'mean ghost-to-intrinsic distance' in log
    ckpt = str(tmp_path / 'ghost' / 'iter_2.pth')
    state = read_checkpoint(ckpt)['state_dict']
    assert 'generator.body.0.conv1.shift_logits' in state

    # Testing clusters nothing: the hook's regular checkpoint may be gone.
    os.remove(pretrained)
    metrics = str(tmp_path / 'metrics.json')
    out = run_tool('tools/test.py', ghost, ckpt, '--work-dir',
                   str(tmp_path / 'test'), '--out', metrics)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.load(open(metrics))
    assert 10 < result['Set5/PSNR'] < 60 and 0 < result['Set5/SSIM'] <= 1

    # --out never overwrites.
    out = run_tool('tools/test.py', ghost, ckpt, '--work-dir',
                   str(tmp_path / 'test'), '--out', metrics)
    assert out.returncode != 0 and 'exists' in out.stderr


@pytest.mark.slow
def test_amp_training_learns_the_float32_shifts(tmp_path, data):
    """tools/train.py --amp trains under float16 autocast with dynamic loss
    scaling on a GPU (mmengine's AmpOptimWrapper), under bfloat16 autocast
    without one (BF16AmpOptimWrapper: mmengine's needs a GPU). Either way
    the learned shifts' W' stay finite float32, move differently from the
    float32 run's (the autocast was on), and pick the same offsets."""
    config = tiny_child_config(
        tmp_path, osp.join(ROOT, 'configs/ghostsr/edsr/'
                           'ghost_edsr_x2c64b16_1xb16-300k_div2k.py'),
        data, iters=4)
    states = {}
    for amp in (False, True):
        work = tmp_path / ('amp' if amp else 'float32')
        out = run_tool('tools/train.py', config, '--work-dir', str(work),
                       *(['--amp'] if amp else []))
        assert out.returncode == 0, out.stderr[-3000:]
        dumped = Config.fromfile(
            str(work / osp.basename(config))).optim_wrapper.type
        mixed = ('AmpOptimWrapper' if torch.cuda.is_available() else
                 'BF16AmpOptimWrapper')
        assert dumped == (mixed if amp else 'OptimWrapper')
        states[amp] = read_checkpoint(str(work / 'iter_4.pth'))['state_dict']
    keys = [k for k in states[True] if k.endswith('shift_logits')]
    assert len(keys) == 5  # 2 blocks x 2 convs + the body's last conv
    for k in keys:
        mixed, full = states[True][k], states[False][k]
        assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
        assert not torch.equal(mixed, full), k
        assert torch.equal(mixed.flatten(1).argmax(1),
                           full.flatten(1).argmax(1)), k


@pytest.mark.slow
def test_missing_data_stops_before_training(tmp_path):
    work = tmp_path / 'work'
    out = run_tool(
        'tools/train.py', osp.join(ROOT, 'configs/ghost_edsr_x2_div2k.py'),
        '--work-dir', str(work), '--cfg-options',
        f'train_dataloader.dataset.data_root={tmp_path}/nowhere')
    assert out.returncode != 0
    assert 'nowhere/DIV2K_train_HR_sub/ (folder missing)' in out.stderr
    assert 'DIV2K_train_LR_bicubic/X2_sub' in out.stderr
    assert 'Data preparation' in out.stderr
    assert not work.exists()


@pytest.mark.slow
def test_distributed_training_two_cpu_processes(tmp_path, data):
    cfg = tiny_child_config(
        tmp_path, osp.join(ROOT, 'configs/ghostsr/edsr/'
                           'ghost_edsr_x2c64b16_1xb16-300k_div2k.py'), data)
    env = dict(os.environ, PYTHON=sys.executable,
               PORT=str(free_port()))
    out = subprocess.run([
        'bash', 'tools/dist_train.sh', cfg, '2', '--work-dir',
        str(tmp_path / 'dist')
    ], capture_output=True, text=True, cwd=ROOT, env=env)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert osp.isfile(tmp_path / 'dist' / 'iter_2.pth')


def test_complexity_of_ghost_edsr_matches_model_counts():
    import complexity
    rows = complexity.measure([
        osp.join(ROOT, 'configs/ghostsr/edsr/edsr_x2c256b32_div2k.py'),
        osp.join(ROOT, 'configs/ghostsr/edsr/ghost_edsr_x2c256b32_div2k.py')
    ], (3, 16, 16), latency=False)
    (_, p_reg, f_reg, _), (_, p_ghost, f_ghost, _) = rows
    # Hand-derived: EDSR c256b32 x2 has 40,729,603 weights; 65 of its
    # 256->256 3x3 convs (589,824 weights + 256 biases each) become
    # 256->128 (294,912 + 128).
    assert p_reg == 40_729_603
    assert p_ghost == 40_729_603 - 65 * (294_912 + 128)
    # MACs per LR pixel: every conv weight once (biases excluded: 66 convs
    # with 256 outputs, the 1024-output upsampler, the 3-output conv_last),
    # plus 3 more times conv_last's, which runs at 2x2 the pixels.
    last = 256 * 3 * 9
    reg_macs = (40_729_603 - 66 * 256 - 1024 - 3) + 3 * last
    assert f_reg == reg_macs * 16 * 16
    assert f_reg - f_ghost == 65 * 294_912 * 16 * 16
    table = complexity.markdown(rows)
    assert '| ghost_edsr_x2c256b32_div2k | 21.55 |' in table


def test_deploy_and_onnx_round_trip(tmp_path):
    import deploy
    cfg_path = tmp_path / 'ghost.py'
    cfg_path.write_text("model = dict(generator=dict(type='GhostEDSRNet', "
                        "in_channels=3, out_channels=3, mid_channels=16, "
                        "num_blocks=2, upscale_factor=2))\n")
    model = MODELS.build(Config.fromfile(str(cfg_path)).model.generator)
    for _, layer in model.ghost_layers():
        with torch.no_grad():
            layer.shift_logits.normal_()
    ckpt = tmp_path / 'trained.pth'
    torch.save({'state_dict': {f'generator.{k}': v
                               for k, v in model.state_dict().items()}},
               ckpt)
    out, onnx_path = tmp_path / 'deployed.pth', tmp_path / 'model.onnx'
    assert deploy.main([str(cfg_path), str(ckpt), str(out), '--onnx',
                        str(onnx_path)]) == 0
    state = read_checkpoint(out)['state_dict']
    assert not any('shift_logits' in k for k in state)
    fixed = MODELS.build(
        dict(
            type='GhostEDSRNet',
            in_channels=3,
            out_channels=3,
            mid_channels=16,
            num_blocks=2,
            upscale_factor=2,
            cheap_op='fixed'))
    fixed.load_state_dict({k[10:]: v for k, v in state.items()})
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(fixed(x), model.eval()(x))
    import onnx
    import onnxruntime as ort
    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert not any(op.startswith('ghostsr') for op in ops)
    # The shift is pads, slices and concats with constant bounds: no
    # per-element gathers (a by-order map is in runs).
    assert {'Pad', 'Concat'} <= ops and 'Gather' not in ops
    assert deploy.verify_onnx(fixed, str(onnx_path)) < 1e-5
    # Height and width stay dynamic: an odd-sized input.
    odd = torch.rand(1, 3, 37, 53)
    got = ort.InferenceSession(str(onnx_path)).run(
        None, {'lr': odd.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), fixed(odd),
                                   atol=1e-5, rtol=1e-5)
    # Existing outputs are not overwritten.
    again = run_tool('tools/deploy.py', cfg_path, ckpt, out)
    assert again.returncode == 1 and 'exists' in again.stderr


def test_load_generator_rejects_other_architecture(tmp_path):
    from ghostsr_mm.apis import load_generator
    rdn = MODELS.build(dict(type='RDNNet', in_channels=3, out_channels=3,
                            mid_channels=8, num_blocks=1, num_layers=1,
                            channel_growth=4))
    torch.save(rdn.state_dict(), tmp_path / 'rdn.pth')
    edsr = MODELS.build(dict(type='GhostEDSRNet', in_channels=3,
                             out_channels=3, mid_channels=8, num_blocks=1))
    with pytest.raises(ValueError, match='does not match the model GhostEDSRNet'):
        load_generator(edsr, str(tmp_path / 'rdn.pth'))


def test_interleaved_times_and_paired_ratio():
    from ghostsr_mm.analysis import interleaved_times, paired_ratio
    order = []
    times = interleaved_times(
        {'a': lambda: order.append('a'), 'b': lambda: order.append('b')},
        repeats=3, warmup=1)
    # Warm-up, then interleaved rounds in alternating order.
    assert order == ['a', 'b', 'a', 'b', 'b', 'a', 'a', 'b']
    assert [len(t) for t in times.values()] == [3, 3]
    # min_seconds: rounds go on, an even number of them, until the timed
    # calls add up to 50 ms, and stop at the first even count that does.
    times = interleaved_times(
        {'a': lambda: time.sleep(0.005), 'b': lambda: time.sleep(0.005)},
        repeats=2, warmup=0, min_seconds=0.05)
    rounds = len(times['a'])
    assert rounds % 2 == 0 and len(times['b']) == rounds
    per_round = [a + b for a, b in zip(times['a'], times['b'])]
    assert sum(per_round) >= 0.05
    assert rounds == 2 or sum(per_round[:-2]) < 0.05
    # Hand-derived: round ratios 0.5, 1, 2, 2 -> inclusive quartiles
    # 0.875 and 2, median 1.5 (the ratio of the medians would be 1.0).
    median, low, high = paired_ratio(
        {'a': [2.0, 3.0, 4.0, 10.0], 'b': [4.0, 3.0, 2.0, 5.0]}, 'a', 'b')
    assert (median, low, high) == (1.5, 0.875, 2.0)
