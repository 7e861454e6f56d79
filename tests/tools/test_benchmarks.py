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
    assert result['machine']['gpu'] == torch.cuda.get_device_name()
    assert result['min_seconds'] == 3.0
    (row, ) = result['inference']
    assert row['input'] == '3x512x512'
    assert all(b > 0 for b in row['peak_bytes'].values())
    assert sum(sum(v) for v in row['latency_rounds_s'].values()) >= 3.0
    assert result['train']['ratio'] > 0
    assert '### whole models, cuda' in capsys.readouterr().out


@pytest.mark.slow
def test_bench_models_end_to_end_with_compile(tmp_path, capsys):
    """One timed round of each variant; with --compile the eager models run
    in the same rounds as the compiled ones and get a table of their own."""
    bench = load_script('bench_models')
    bench.main(['--models', 'carn_m', '--repeats', '1', '--min-seconds',
                '0', '--no-train', '--compile', '--out-dir', str(tmp_path)])
    result = json.loads((tmp_path / 'models_cpu_compile.json').read_text())
    (row, ) = result['inference']
    assert row['model'] == 'carn_m x2' and result['train'] is None
    # CARN-M x2 (single scale), as in the README's table.
    assert row['params']['regular'] == 257027
    assert row['params']['ghost'] == 210627
    t, c = row['latency_s'], row['compile']
    assert set(t) == {'regular', 'ghost', 'half', 'regular_eager',
                      'ghost_eager'}
    # --repeats 1 and no minimum time: one timed round of each model.
    assert {len(v) for v in row['latency_rounds_s'].values()} == {1}
    assert all(t > 0 for v in row['latency_rounds_s'].values() for t in v)
    assert c['eager_latency_ratio'] == pytest.approx(
        t['ghost_eager'] / t['regular_eager'])
    assert c['ghost_compiled_over_eager'] == pytest.approx(
        t['ghost'] / t['ghost_eager'])
    printed = capsys.readouterr().out
    assert (f"| carn_m x2 | 3x128x128 | 0.26 / 0.21 | "
            f"{row['flops_ratio']:.3f} |") in printed
    assert (f"| carn_m x2 | {t['regular_eager'] * 1e3:.0f} / "
            f"{t['ghost_eager'] * 1e3:.0f} | "
            f"{c['eager_latency_ratio']:.3f} (round by round") in printed


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
def test_bench_quality_end_to_end(tmp_path, monkeypatch, capsys):
    """Two seeds of four arms on tiny settings (smaller photos, in this
    process): every table figure is the JSON's, the paired
    differences are the per-seed differences' mean, the narrow width is the
    widest within the ghost model's FLOPs, and the report can be rebuilt
    from the saved runs."""
    import statistics
    bench = load_script('bench_quality')
    monkeypatch.setattr(bench, 'MAX_SIDE', 200)
    monkeypatch.setitem(bench.MODELS['edsr']['args'], 'mid_channels', 16)
    monkeypatch.setattr(bench, 'VAL_SHARE', 0.5)  # room for 48x48 LR tiles

    def bench_run(*argv, threads=None):
        before = torch.get_num_threads()  # --jobs 1 sets this process's
        torch.set_num_threads(threads or before)
        assert bench.main(list(argv)) == 0
        torch.set_num_threads(before)
        return capsys.readouterr().out

    argv = ['--models', 'edsr', '--scales', '2', '--seeds', '0', '1',
            '--parent-iters', '2', '--iters', '2', '--arms', 'copy',
            'ghost-tuned-oracle', 'narrow-flops', '--jobs', '1',
            '--out-dir', str(tmp_path)]
    printed = bench_run(*argv)
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

    def table(out):  # the report: from its heading to the file list
        return out[out.index('### '):out.index('wrote ')].strip()

    assert '| learned shift (tuned) - copy |' in table(printed)
    # --report rebuilds the same tables, latency included, from what the
    # run saved: nothing is measured again (before, the latency was).
    report = tmp_path / 'again'
    # (the machine too: reported from another thread count)
    again_printed = bench_run(*argv[:-1], str(report), '--report',
                              str(tmp_path / 'quality_cpu.runs.jsonl'),
                              threads=torch.get_num_threads() + 1)
    assert table(again_printed) == table(printed)
    again = json.loads((report / 'quality_cpu.json').read_text())
    for key in ('complexity', 'bicubic', 'machine'):
        assert again[key] == result[key]


@pytest.mark.slow
def test_bench_classsr_stages_run_the_shipped_configs(tmp_path,
                                                   monkeypatch):
    """Each stage is a tool run on a config of configs/classsr made to use
    the photos, chained by its checkpoints; a second run reuses every
    stage. (The tools themselves train in test_classsr_tools.py.)"""
    from mmengine.config import Config
    bench = load_script('bench_classsr')
    calls = []

    def fake_tool(name, *argv):
        calls.append((name, [str(a) for a in argv]))
        if name == 'train.py':  # the checkpoint it would write
            cfg = Config.fromfile(argv[0])
            with open(osp.join(cfg.work_dir,
                               f'iter_{cfg.train_cfg.max_iters}.pth'),
                      'w') as f:
                f.write('weights')

    monkeypatch.setattr(bench, 'tool', fake_tool)
    args = bench.parse_args(['--iters', '3', '--classifier-iters', '4',
                             '--joint-iters', '5', '--ghost-iters', '6',
                             '--work-dir', str(tmp_path)])
    roots = dict(train=str(tmp_path / 'train'), val=str(tmp_path / 'val'))
    original, joint, ghosts, widths = bench.Stages(args, roots).run()
    assert widths == [36, 52, 64]
    names = [Config.fromfile(a[0]).work_dir.rpartition('/')[2]
             if n == 'train.py' else n for n, a in calls]
    assert names == ['original', 'classsr_prepare.py', 'branch_simple',
                     'branch_medium', 'branch_hard', 'classifier', 'joint',
                     'ghost_simple', 'ghost_medium', 'ghost_hard']
    cfg = {n: Config.fromfile(osp.join(tmp_path, n, 'config.py'))
           for n in names if not n.endswith('.py')}
    subs = str(tmp_path / 'classsr_x4')
    assert calls[1][1][:2] == [osp.join(roots['train'], 'HR'), subs]
    assert calls[1][1][-1] == original
    assert original == str(tmp_path / 'original' / 'iter_3.pth')
    assert cfg['original'].train_dataloader.dataset.data_root == \
        roots['train']
    for k, c in enumerate(('simple', 'medium', 'hard')):
        gen = cfg[f'branch_{c}'].model.generator
        assert (gen.type, gen.mid_channels) == ('CARNNet', widths[k])
        assert gen.init_cfg == dict(type='NarrowedPretrained',
                                    checkpoint=original)
        data = cfg[f'branch_{c}'].train_dataloader.dataset
        assert (data.data_root, data.ann_file) == (subs,
                                                   f'meta_info_{c}.txt')
        assert cfg[f'branch_{c}'].val_dataloader.dataset.data_root == \
            roots['val']
        ghost = cfg[f'ghost_{c}']
        assert ghost.model.generator.type == 'GhostCARNNet'
        assert ghost.custom_hooks[0] == dict(
            type='GhostClusterInitHook',
            pretrained=str(tmp_path / f'branch_{c}' / 'iter_3.pth'))
        assert ghosts[k] == str(tmp_path / f'ghost_{c}' / 'iter_6.pth')
    loaded = cfg['classifier'].model.generator.branches
    assert [b.init_cfg.checkpoint for b in loaded] == [
        str(tmp_path / f'branch_{c}' / 'iter_3.pth')
        for c in ('simple', 'medium', 'hard')]
    assert cfg['classifier'].train_cfg.max_iters == 4
    assert cfg['joint'].load_from == str(tmp_path / 'classifier' /
                                         'iter_4.pth')
    assert joint == str(tmp_path / 'joint' / 'iter_5.pth')
    (tmp_path / 'classsr_x4').mkdir()
    (tmp_path / 'classsr_x4' / 'meta_info_all.txt').write_text('')
    calls.clear()
    bench.Stages(args, roots).run()
    assert calls == []


@pytest.mark.slow
def test_bench_classsr_measures_the_trained_models(tmp_path, monkeypatch,
                                                   capsys):
    """Given the stages' checkpoints: every FLOPs ratio is the routing's
    (hand formula from the shares and per-tile costs), the totals weigh the
    photos by their tiles, the ghost branches cost what their ghost convs
    save, and the result files are written."""
    from mmagic.registry import MODELS

    from ghostsr_mm.checkpoint import save_generator
    from ghostsr_mm.models import ClassSRNet
    bench = load_script('bench_classsr')
    torch.manual_seed(0)

    def carn_m(width, kind='CARNNet'):
        return MODELS.build(dict(type=kind, mid_channels=width,
                                 upscale_factor=4, efficient=True))

    widths = [36, 52, 64]
    paths = dict(original=str(tmp_path / 'original.pth'),
                 joint=str(tmp_path / 'joint.pth'))
    save_generator(carn_m(64), paths['original'])
    save_generator(ClassSRNet([carn_m(w) for w in widths]), paths['joint'])
    ghosts = []
    for w in widths:
        ghosts.append(str(tmp_path / f'ghost{w}.pth'))
        save_generator(carn_m(w, 'GhostCARNNet'), ghosts[-1])
    pairs = {}
    for name, h, w in (('a', 40, 72), ('b', 70, 36)):
        lr = torch.rand(1, 3, h, w)
        pairs[name] = (lr, torch.rand(1, 3, 4 * h, 4 * w))
    monkeypatch.setattr(bench, 'prepare_photos', lambda args: ({}, pairs))
    monkeypatch.setattr(bench.Stages, 'run', lambda self: (
        paths['original'], paths['joint'], ghosts, widths))
    assert bench.main(['--repeats', '2', '--out-dir', str(tmp_path)]) == 0
    result = json.loads((tmp_path / 'classsr_cpu.json').read_text())
    flops = result['flops_per_tile']
    # Each ghost branch skips the intrinsic-less half of its 3x3 group
    # convs: 18 of them (three cascading blocks, the shared block three
    # times, two convs), w -> w with 4 groups, intrinsic rounded up to a
    # multiple of 4 (width 36: 20, 52: 28), per 32x32 tile.
    for k, w in enumerate(widths):
        ghosts_made = w - -(-(w // 2) // 4) * 4
        saved = 18 * ghosts_made * (w // 4) * 9 * 32 * 32
        assert (flops['ClassSR']['branches'][k] -
                flops['ClassSR-ghost']['branches'][k]) == saved
    tiles = {}
    for row in result['rows']:
        assert row['models']['original']['flops_ratio'] == 1.0
        for name in ('ClassSR', 'ClassSR-ghost'):
            e, cost = row['models'][name], flops[name]
            expected = (sum(s * f for s, f in zip(e['shares'],
                                                  cost['branches'])) +
                        cost['classifier']) / flops['original']
            assert e['flops_ratio'] == pytest.approx(expected)
            tiles.setdefault(name, []).append((e['tiles'], e['flops_ratio']))
    for name, counts in tiles.items():
        weighted = sum(n * r for n, r in counts) / sum(n for n, _ in counts)
        assert result['totals'][name]['flops_ratio'] == pytest.approx(
            weighted)
    out = capsys.readouterr().out
    assert bench.markdown(result) in out
    assert '| **all** | ClassSR-ghost |' in out
    assert (tmp_path / 'classsr_cpu_routing.png').read_bytes()[:4] == \
        b'\x89PNG'
    assert result['machine']['threads'] == torch.get_num_threads()
