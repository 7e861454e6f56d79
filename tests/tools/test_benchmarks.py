"""The benchmark scripts run end to end on tiny settings, write the JSON
they promise, and never replace an earlier result unless asked."""
import importlib.util
import json
import os.path as osp

import pytest

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


def test_bench_shift_end_to_end(tmp_path, capsys):
    bench = load_script('bench_shift')
    bench.main(['--size', '16', '--repeats', '2', '--out-dir',
                str(tmp_path)])
    result = json.loads((tmp_path / 'shift_cpu.json').read_text())
    assert [r['shape'] for r in result['op']] == ['1x256x16x16',
                                                  '1x64x16x16']
    assert [r['shape'] for r in result['layer']] == ['1x64x16x16',
                                                     '1x256x16x16']
    for r in result['op']:
        assert r['op_over_clone'] == pytest.approx(r['op_ms'] /
                                                   r['clone_ms'])
        assert r['into_over_copy'] == pytest.approx(r['op_into_ms'] /
                                                    r['copy_into_ms'])
    for r in result['layer']:
        assert r['write_output_in_full'] == pytest.approx(
            r['write_output_ms'] / r['full_ms'])
    printed = capsys.readouterr().out
    assert '| 1x64x16x16 + ReLU, into a concat |' in printed
    # A second run does not replace the first one's file unless asked.
    before = (tmp_path / 'shift_cpu.json').read_bytes()
    with pytest.raises(SystemExit):
        bench.main(['--size', '16', '--repeats', '2', '--out-dir',
                    str(tmp_path)])
    assert 'shift_cpu.json exists; pass --overwrite' in \
        capsys.readouterr().err
    assert (tmp_path / 'shift_cpu.json').read_bytes() == before


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
    t = row['latency_s']
    assert row['latency_ratio'] == pytest.approx(t['ghost'] / t['regular'])
    assert len(row['latency_rounds_s']['ghost']) == 1
    assert row['round_ratio_median'] == pytest.approx(
        row['latency_rounds_s']['ghost'][0] /
        row['latency_rounds_s']['regular'][0])
    assert '| carn_m x2 | 3x128x128 | 0.26 / 0.21 |' in capsys.readouterr().out
