"""The benchmark scripts run end to end on tiny settings, write the JSON
they promise, and never replace an earlier result unless asked."""
import importlib.util
import json
import os.path as osp

import pytest
import torch

from conftest import requires_cuda
from ghostsr_mm.analysis import results_path

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_script(name):
    path = osp.join(ROOT, 'benchmarks', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'_bench_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_path_keeps_existing_files(tmp_path):
    out_dir = tmp_path / 'new' / 'dir'
    path = results_path(str(out_dir), 'x.json')
    assert path == str(out_dir / 'x.json') and out_dir.is_dir()
    (out_dir / 'x.json').write_text('earlier')
    with pytest.raises(FileExistsError, match=r'x\.json exists.*--overwrite'):
        results_path(str(out_dir), 'x.json')
    assert results_path(str(out_dir), 'x.json', overwrite=True) == path
    assert (out_dir / 'x.json').read_text() == 'earlier'


@pytest.mark.slow
def test_bench_shift_end_to_end(tmp_path, capsys):
    bench = load_script('bench_shift')
    bench.main(['--size', '16', '--repeats', '2', '--out-dir',
                str(tmp_path)])
    result = json.loads((tmp_path / 'shift_cpu.json').read_text())
    assert [r['shape'] for r in result['op']] == ['1x256x16x16',
                                                  '1x64x16x16']
    assert [r['shape'] for r in result['layer']] == ['1x64x16x16',
                                                     '1x256x16x16']
    printed = capsys.readouterr().out
    # The table a reader copies is the JSON's figures, row by row, and
    # every figure is a real timing.
    for r in result['op']:
        assert r['op_ms'] > 0 and r['clone_ms'] > 0 and r['naive_ms'] > 0
        assert (f"| {r['shape']} | {r['op_ms']:.3f} | {r['clone_ms']:.3f} "
                f"| {r['op_over_clone']:.2f} (") in printed
    for r in result['layer']:
        assert 0 < r['half_ms'] and 0 < r['full_ms']
        assert (f"| {r['shape']} | {r['full_ms']:.3f} | {r['half_ms']:.3f} "
                f"| {r['ghost_ms']:.3f} | {r['ghost_over_full']:.3f} |"
                ) in printed
    assert '| 1x64x16x16 + ReLU, into a concat |' in printed
    # A second run does not replace the first one's file unless asked.
    before = (tmp_path / 'shift_cpu.json').read_bytes()
    with pytest.raises(SystemExit):
        bench.main(['--size', '16', '--repeats', '2', '--out-dir',
                    str(tmp_path)])
    assert 'shift_cpu.json exists; pass --overwrite' in \
        capsys.readouterr().err
    assert (tmp_path / 'shift_cpu.json').read_bytes() == before


@pytest.mark.slow
def test_bench_models_end_to_end(tmp_path, capsys):
    bench = load_script('bench_models')
    bench.main(['--models', 'carn_m', '--repeats', '1', '--min-seconds',
                '0', '--no-train', '--out-dir', str(tmp_path)])
    result = json.loads((tmp_path / 'models_cpu.json').read_text())
    (row, ) = result['inference']
    assert row['model'] == 'carn_m x2' and result['train'] is None
    # CARN-M x2 (single scale), as in the README's table.
    assert row['params']['regular'] == 257027
    assert row['params']['ghost'] == 210627
    # --repeats 1 and no minimum time: one timed round of each model.
    assert {len(v) for v in row['latency_rounds_s'].values()} == {1}
    assert all(t > 0 for v in row['latency_rounds_s'].values() for t in v)
    printed = capsys.readouterr().out
    assert (f"| carn_m x2 | 3x128x128 | 0.26 / 0.21 | "
            f"{row['flops_ratio']:.3f} |") in printed


@requires_cuda
@pytest.mark.slow
def test_bench_models_on_cuda(tmp_path, capsys):
    """--device cuda: 3x512x512 inputs, the allocator's peak memory, the
    training step on the GPU, and a minimum time of 3 s per model unless
    given."""
    bench = load_script('bench_models')
    bench.main(['--device', 'cuda', '--models', 'carn_m', '--repeats', '1',
                '--out-dir', str(tmp_path)])
    result = json.loads((tmp_path / 'models_cuda.json').read_text())
    assert result['machine'] == torch.cuda.get_device_name()
    assert result['min_seconds'] == 3.0
    (row, ) = result['inference']
    assert row['input'] == '3x512x512'
    assert all(b > 0 for b in row['peak_bytes'].values())
    assert sum(sum(v) for v in row['latency_rounds_s'].values()) >= 3.0
    assert result['train']['ratio'] > 0
    assert '### whole models, cuda' in capsys.readouterr().out


@pytest.mark.slow
def test_bench_models_compile_times_eager_in_the_same_rounds(tmp_path,
                                                             capsys):
    bench = load_script('bench_models')
    bench.main(['--models', 'carn_m', '--repeats', '1', '--min-seconds',
                '0', '--no-train', '--compile', '--out-dir', str(tmp_path)])
    result = json.loads((tmp_path / 'models_cpu_compile.json').read_text())
    (row, ) = result['inference']
    t, c = row['latency_s'], row['compile']
    assert set(t) == {'regular', 'ghost', 'half', 'regular_eager',
                      'ghost_eager'}
    assert c['eager_latency_ratio'] == pytest.approx(
        t['ghost_eager'] / t['regular_eager'])
    assert c['ghost_compiled_over_eager'] == pytest.approx(
        t['ghost'] / t['ghost_eager'])
    assert (f"| carn_m x2 | {t['regular_eager'] * 1e3:.0f} / "
            f"{t['ghost_eager'] * 1e3:.0f} | "
            f"{c['eager_latency_ratio']:.3f} (round by round") \
        in capsys.readouterr().out


@pytest.mark.slow
def test_bench_onnx_end_to_end(tmp_path, capsys):
    bench = load_script('bench_onnx')
    bench.main(['--models', 'carn_m', '--size', '24', '--repeats', '1',
                '--min-seconds', '0', '--out-dir', str(tmp_path)])
    result = json.loads((tmp_path / 'onnx_cpu.json').read_text())
    (row, ) = result['rows']
    assert row['model'] == 'carn_m x2' and result['shift'] == [1, 0]
    t = row['latency_s']
    assert set(t) == {'ort_regular', 'ort_ghost', 'torch_regular',
                      'torch_ghost'} and all(v > 0 for v in t.values())
    printed = capsys.readouterr().out
    assert (f"| carn_m x2 | 3x24x24 | {t['ort_regular'] * 1e3:.1f} / "
            f"{t['ort_ghost'] * 1e3:.1f} | {row['ort_ratio']:.3f} (") \
        in printed


@pytest.mark.slow
def test_bench_tiled_end_to_end(tmp_path, capsys):
    """Tiles with the receptive-field overlap agree with the whole image
    on a real photo, and both runs report time and memory."""
    import mmcv
    from skimage import data
    photo = str(tmp_path / 'photo.png')
    mmcv.imwrite(data.astronaut()[::4, ::4, ::-1], photo)  # 128x128
    bench = load_script('bench_tiled')
    bench.main(['--image', photo, '--models', 'carn_m', '--tile', '100',
                '--out-dir', str(tmp_path)])
    result = json.loads((tmp_path / 'tiled_cpu.json').read_text())
    assert [r['variant'] for r in result['rows']] == ['regular', 'ghost']
    for r in result['rows']:
        assert r['max_difference'] < 1e-4
        assert r['whole']['shape'] == [1, 3, 128, 128]
        assert r['tiled']['seconds'] > 0 and r['whole']['seconds'] > 0
    assert '| carn_m x2 ghost |' in capsys.readouterr().out


@pytest.mark.slow
def test_bench_quality_end_to_end(tmp_path):
    """Two seeds of four arms on tiny settings: every table figure is the
    JSON's, the paired differences are the per-seed differences' mean, the
    narrow width is the widest within the ghost model's FLOPs, and the
    report can be rebuilt from the saved runs."""
    import statistics
    import subprocess
    import sys

    def bench(*argv):
        # A process of its own, as a user runs it: its workers are spawned
        # and import the script by name.
        out = subprocess.run(
            [sys.executable, osp.join(ROOT, 'benchmarks', 'bench_quality.py'),
             *argv], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    argv = ['--models', 'edsr', '--scales', '2', '--seeds', '0', '1',
            '--parent-iters', '2', '--iters', '2', '--arms', 'copy',
            'ghost-tuned-oracle', 'narrow-flops', '--jobs', '2',
            '--out-dir', str(tmp_path)]
    printed = bench(*argv)
    result = json.loads((tmp_path / 'quality_cpu.json').read_text())
    runs = result['runs']
    assert sorted((r['arm'], r['seed']) for r in runs) == sorted(
        (a, s) for a in ('parent', 'copy', 'ghost-tuned',
                         'ghost-tuned-oracle', 'narrow-flops')
        for s in (0, 1))
    psnr = {(r['arm'], r['seed']): r['psnr'] for r in runs}
    for arm in ('copy', 'narrow-flops'):
        values = [psnr[arm, 0], psnr[arm, 1]]
        assert (f'{statistics.mean(values):.3f} ± '
                f'{statistics.stdev(values):.3f} (2)') in printed
    diff = [psnr['ghost-tuned', s] - psnr['copy', s] for s in (0, 1)]
    assert (f'| learned shift (tuned) - copy | '
            f'{statistics.mean(diff):+.3f} ± {statistics.stdev(diff):.3f} '
            'dB (2) | ≥ +0.05 dB |') in printed
    # The narrow width: the widest whose FLOPs fit in the ghost model's.
    models = result['complexity']['edsr_x2']['models']
    width = result['complexity']['edsr_x2']['narrow_widths']['flops']
    assert models[f'w{width}']['flops'] <= models['ghost']['flops'] < \
        models[f'w{width + 2}']['flops']
    assert all(r['width'] == width for r in runs if r['arm'] ==
               'narrow-flops')
    # The oracle arm keeps, per layer, the best offset of its greedy pass.
    for r in runs:
        if r['arm'] == 'ghost-tuned-oracle':
            assert r['chosen'] == r['best'] and len(r['chosen']) == 9
    assert (tmp_path / 'quality_cpu.png').read_bytes()[:4] == b'\x89PNG'
    table = (tmp_path / 'quality_cpu.md').read_text()
    assert table.strip() in printed
    # --report rebuilds the same tables, latency included, from what the
    # run saved: nothing is measured again (before, the latency was).
    report = tmp_path / 'again'
    bench(*argv[:-1], str(report), '--report',
          str(tmp_path / 'quality_cpu.runs.jsonl'))
    assert (report / 'quality_cpu.md').read_text() == table
    again = json.loads((report / 'quality_cpu.json').read_text())
    assert again['complexity'] == result['complexity']


@pytest.mark.slow
def test_bench_classsr_end_to_end(tmp_path, capsys):
    """Two iterations per stage on shrunk photos: the set figures are the
    tile-weighted figures of the photos, every FLOPs ratio is the routing's
    (hand formula from the saved shares and per-tile costs), a second run
    reuses the trained weights, and the routing picture is written."""
    import subprocess
    import sys
    argv = ['--iters', '2', '--classifier-iters', '2', '--joint-iters',
            '2', '--ghost-iters', '2', '--repeats', '2', '--max-side',
            '200', '--out-dir', str(tmp_path)]

    def bench(*extra):
        """A successful run with ``extra`` arguments; its stdout."""
        done = subprocess.run(
            [sys.executable, osp.join(ROOT, 'benchmarks', 'bench_classsr.py'),
             *argv, *extra], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    out = bench()
    result = json.loads((tmp_path / 'classsr_cpu.json').read_text())
    flops = result['flops_per_tile']
    # Ghost branches: half of each 3x3 group conv's outputs (4 groups) is
    # not computed, per 32x32 tile: 18 block convs (w -> w, three cascading
    # blocks x the shared block used three times x two convs).
    for k, w in enumerate((32, 48, 64)):
        saved = 18 * (w // 2) * (w // 4) * 9 * 32 * 32
        assert (flops['ClassSR']['branches'][k] -
                flops['ClassSR-ghost']['branches'][k]) == saved
    tiles = {}
    for row in result['rows']:
        for name in ('ClassSR', 'ClassSR-ghost'):
            e = row['models'][name]
            cost = flops[name]
            expected = (sum(s * f for s, f in zip(e['shares'],
                                                  cost['branches'])) +
                        cost['classifier']) / flops['original']
            assert e['flops_ratio'] == pytest.approx(expected)
            tiles.setdefault(name, []).append((e['tiles'], e['flops_ratio']))
        assert row['models']['original']['flops_ratio'] == 1.0
        for name in ('ClassSR', 'ClassSR-ghost'):  # each branch alone
            assert len(row['branches'][name]) == 3
            shares = row['models'][name]['shares']
            if max(shares) == 1.0:  # one branch took every tile
                assert row['models'][name]['psnr_rgb'] == pytest.approx(
                    row['branches'][name][shares.index(1.0)])
            # The perfect routing spends no more than the classifier's.
            assert row['oracle'][name]['flops_ratio'] <= \
                row['models'][name]['flops_ratio'] + 1e-9
    for name, pairs in tiles.items():
        weighted = sum(n * r for n, r in pairs) / sum(n for n, _ in pairs)
        assert result['totals'][name]['flops_ratio'] == pytest.approx(
            weighted)
        assert (f'| **all** | {name} |') in out
    assert '| photo | ClassSR | perfect routing |' in out
    assert (tmp_path / 'classsr_cpu_routing.png').stat().st_size > 0
    # Each branch starts from the reference cut to its width: two Adam
    # steps of at most ~1e-3 each away from it.
    import glob
    import torch
    from ghostsr_mm.models import CARNNet, narrowed_state_dict
    cache = tmp_path / 'classsr_cache'
    found = [p for p in glob.glob(str(cache / 'original-*.pth'))
             if 'continued' not in p]
    assert len(found) == 1
    reference = torch.load(found[0], weights_only=True)
    assert 'original-continued: trained' in out
    for k, width in enumerate((32, 48, 64)):
        branch = torch.load(glob.glob(str(cache / f'branch{k}-*.pth'))[0],
                            weights_only=True)
        start = narrowed_state_dict(
            reference, CARNNet(mid_channels=width, upscale_factor=4,
                               efficient=True))
        assert max((branch[n] - w).abs().max().item()
                   for n, w in start.items()) < 3e-3
    assert 'branches of width 32 / 48 / 64 (from the reference)' in \
        (tmp_path / 'classsr_cpu.md').read_text()
    assert 'joint: loaded from' in bench('--tag', 'again')
    # A FLOPs budget: the penalty calibrated on the training halves routes
    # them within it, recorded with the run.
    assert 'ghost2: loaded from' in bench('--tag', 'budget',
                                          '--flops-target', '0.8')
    budget = json.loads((tmp_path / 'classsr_cpu_budget.json').read_text())
    assert budget['cost_penalty'] != 0.0
    assert (f'Routing with cost penalty {budget["cost_penalty"]:.3f}, '
            "calibrated on the training halves' LR to FLOPs 0.8") in \
        (tmp_path / 'classsr_cpu_budget.md').read_text()
    # Calibrated on the test photos' LR: their routing keeps the budget.
    # Both x4 upsampler convs ghost too: their w -> 4w convs at 32x32 and
    # 64x64 save as much again as 5 x 4 = 20 block convs.
    # The ghost variant on a budget of its own, in the original's FLOPs.
    bench('--tag', 'budget_test', '--flops-target', '0.8', '--calibrate-on',
          'test', '--ghost-upsampler', 'all', '--ghost-flops-target', '0.5')
    on_test = json.loads(
        (tmp_path / 'classsr_cpu_budget_test.json').read_text())
    assert on_test['totals']['ClassSR']['flops_ratio'] <= 0.8
    assert on_test['totals']['ClassSR-ghost']['flops_ratio'] <= 0.5
    assert on_test['ghost_cost_penalty'] != on_test['cost_penalty']
    cost = on_test['flops_per_tile']
    for k, w in enumerate((32, 48, 64)):
        saved = (18 + 20) * (w // 2) * (w // 4) * 9 * 32 * 32
        assert (cost['ClassSR']['branches'][k] -
                cost['ClassSR-ghost']['branches'][k]) == saved
    assert "calibrated on the test photos' LR to FLOPs 0.8" in \
        (tmp_path / 'classsr_cpu_budget_test.md').read_text()
    second = json.loads((tmp_path / 'classsr_cpu_again.json').read_text())
    assert second['totals']['ClassSR']['psnr_rgb'] == pytest.approx(
        result['totals']['ClassSR']['psnr_rgb'])
    # Labels by the gain over bicubic: the original is reused, every stage
    # after the labelling trains again.
    gain = bench('--tag', 'gain', '--label-by', 'gain')
    assert 'original: loaded from' in gain
    assert 'original-continued: loaded from' in gain
    assert 'branch0: loaded from' not in gain
    labels = json.loads((tmp_path / 'classsr_cpu_gain.json').read_text())[
        'labels']
    assert labels['label_by'] == 'gain'
    # Scores are minus the gain, highest (smallest gain) simple.
    assert labels['score_thresholds'][0] >= labels['score_thresholds'][1]
    # The official code's Average-Loss: branches reused, classifier and
    # later stages trained again.
    official = bench('--tag', 'official', '--average-loss', 'official')
    assert 'branch2: loaded from' in official
    assert 'classifier: trained' in official
    assert 'joint: trained' in official


def test_bench_classsr_stage3_on_outputs_computed_once():
    """Stage 3 on the branches' outputs computed once trains the classifier
    exactly as running the branches every step (stage 4's loop with no
    branch parameters), for branches that commute with the flips and
    rotations of the augmentation."""
    import torch
    from torch import nn

    from ghostsr_mm.models import ClassSRNet

    class Nearest(nn.Module):
        def __init__(self, gain):
            super().__init__()
            self.gain = gain

        def forward(self, x):
            return self.gain * nn.functional.interpolate(x, scale_factor=4)

    bench = load_script('bench_classsr')
    torch.manual_seed(0)
    lr, gt = torch.rand(40, 3, 32, 32), torch.rand(40, 3, 128, 128)
    nets = [ClassSRNet([Nearest(g) for g in (0.8, 1.0, 1.2)])
            for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = {n: p.clone() for n, p in nets[0].classifier.named_parameters()}
    bench.train_classsr(nets[0], lr, gt, 6, 5, 1e-3, official=True)
    bench.train_classifier(nets[1], lr, gt, 6, 5, 1e-3, official=True)
    for (name, a), b in zip(nets[0].classifier.named_parameters(),
                            nets[1].classifier.parameters()):
        assert not torch.equal(a, start[name])  # it learned
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bench_classsr_perfect_routing_beats_every_cheaper_routing():
    """The perfect routing of a 4-tile image, checked against all 81
    routings: within the FLOPs budget, and no routing that costs no more
    has a smaller total squared error (errors computed here, tile by
    tile); the output is the routed tiles, blended."""
    import itertools

    import torch
    from torch import nn

    from ghostsr_mm.analysis import count_flops
    from ghostsr_mm.apis import tile_layout, tiled_inference
    from ghostsr_mm.models import ClassSRNet
    bench = load_script('bench_classsr')
    torch.manual_seed(0)
    net = ClassSRNet([
        nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(c, 48, 1),
                      nn.PixelShuffle(4)) for c in (2, 4, 8)
    ]).eval()
    lr, gt = torch.rand(1, 3, 58, 58), torch.rand(1, 3, 232, 232)
    layout = tile_layout(58, 58, bench.TILE, bench.OVERLAP)
    assert len(layout) == 4
    flops = [count_flops(b, (3, 32, 32)) for b in net.branches]
    with torch.no_grad():
        errors = [[(b(lr[:, :, y:y + 32, x:x + 32]) -
                    gt[:, :, 4 * y:4 * y + 128, 4 * x:4 * x + 128]
                    ).pow(2).sum().item() for b in net.branches]
                  for (y, x), _ in layout]
    for budget in (flops[0], (flops[0] + flops[2]) / 2, 0.8 * flops[2],
                   flops[2]):
        classes, sr = bench.oracle_routing(net, lr, gt, budget)
        cost = sum(flops[k] for k in classes.tolist()) / 4
        assert cost <= budget
        error = sum(e[k] for e, k in zip(errors, classes.tolist()))
        for routing in itertools.product(range(3), repeat=4):
            if sum(flops[k] for k in routing) / 4 <= cost:
                assert sum(e[k] for e, k in zip(errors, routing)) >= \
                    error * (1 - 1e-6)
        batches = iter([classes])
        expected = tiled_inference(lambda x: net.route(x, next(batches)),
                                   lr, 32, bench.OVERLAP, 64, blend=True)
        torch.testing.assert_close(sr, expected)
    # All the budget: each tile to its most accurate branch.
    classes, _ = bench.oracle_routing(net, lr, gt, flops[2])
    assert classes.tolist() == [min(range(3), key=e.__getitem__)
                                for e in errors]


@pytest.mark.slow
def test_bench_classsr_width_latency(tmp_path):
    """--width-latency: one row per branch, ratios to width 64, trains
    nothing; an existing table is kept without --overwrite."""
    import subprocess
    import sys
    argv = [sys.executable, osp.join(ROOT, 'benchmarks', 'bench_classsr.py'),
            '--width-latency', '--repeats', '2', '--out-dir', str(tmp_path)]
    out = subprocess.run(argv, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r['model']: r for r in json.loads(
        (tmp_path / 'classsr_cpu_widths.json').read_text())['rows']}
    widths = (32, 36, 48, 52, 64)
    assert sorted(rows) == sorted([f'CARN-M {w}' for w in widths] +
                                  [f'GhostCARN-M {w}' for w in widths])
    assert rows['CARN-M 64']['flops_ratio'] == 1.0
    assert rows['CARN-M 64']['time_ratio'] == [1.0, 1.0, 1.0]
    regular = [rows[f'CARN-M {w}']['flops'] for w in widths]
    assert regular == sorted(regular)
    for w in widths:  # the shift costs nothing, the intrinsic conv less
        assert rows[f'GhostCARN-M {w}']['flops'] < rows[f'CARN-M {w}'][
            'flops']
        assert len(rows[f'CARN-M {w}']['times']) == 2
    assert not list((tmp_path).glob('classsr_cache*'))  # nothing trained
    again = subprocess.run(argv, capture_output=True, text=True)
    assert again.returncode == 1 and '--overwrite' in again.stderr


def test_bench_classsr_calibrate_on_needs_a_budget(capsys):
    bench = load_script('bench_classsr')
    with pytest.raises(SystemExit):
        bench.parse_args(['--calibrate-on', 'test'])
    assert '--calibrate-on calibrates a budget: give --flops-target or ' \
        '--ghost-flops-target too' in capsys.readouterr().err
    args = bench.parse_args(['--calibrate-on', 'test', '--ghost-flops-target',
                             '0.4'])
    assert (args.calibrate_on, args.ghost_flops_target) == ('test', 0.4)
