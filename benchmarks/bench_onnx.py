"""Deployed models in ONNX Runtime against PyTorch: ghost / regular latency
ratios of both, in one run; figures in benchmarks/README.md.

    python benchmarks/bench_onnx.py [--models edsr_c64b16 rdn carn]
        [--size 128] [--repeats 5] [--min-seconds 30] [--threads 2]
        [--shift 1 0] [--out-dir benchmarks/results] [--overwrite]

Every model is exported as ``tools/deploy.py --onnx`` exports it, its
ghosts moved by ``--shift`` (a deployed model's learned offsets are
non-zero), and checked against PyTorch; each backend is timed in a process
of its own (in one process the two runtimes' thread pools slowed each other
part-way through a run). JSON to benchmarks/results/onnx_cpu.json.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import ghostsr_mm  # noqa: E402,F401
from bench_models import build  # noqa: E402
from deploy import export_onnx  # noqa: E402

from ghostsr_mm.analysis import (interleaved_times, median_times,  # noqa
                                 paired_ratio, results_path)
from ghostsr_mm.models.layers import ghost_layers  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+',
                        default=['edsr_c64b16', 'rdn', 'carn'])
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--min-seconds', type=float, default=30.0)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--shift', type=int, nargs=2, default=[1, 0])
    parser.add_argument('--out-dir',
                        default=osp.join(ROOT, 'benchmarks', 'results'))
    parser.add_argument('--overwrite', action='store_true')
    parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def session(path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])


def shifted(model, shift):
    """``model`` with every ghost layer's ghosts moved by ``shift``."""
    for _, layer in ghost_layers(model):
        layer.offsets[layer.ghost_channels] = torch.tensor(shift)
    return model


def time_backend(backend, tmp, args):
    """Regular and ghost of every model in interleaved rounds, in this
    process and one backend only (in one process the two runtimes' thread
    pools and allocations slow each other down part-way through a run)."""
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, args.size, args.size)
    results = {}
    for kind in args.models:
        fns = {}
        for variant in ('regular', 'ghost'):
            if backend == 'ort':
                sess = session(osp.join(tmp, f'{kind}_{variant}.onnx'),
                               args.threads)
                fns[variant] = (
                    lambda s=sess: s.run(None, {'lr': x.numpy()}))
            else:
                model = shifted(build(kind, 2, variant), args.shift)
                model.load_state_dict(torch.load(
                    osp.join(tmp, f'{kind}_{variant}.pt'), weights_only=True))
                fns[variant] = lambda m=model: m(x)
        with torch.inference_mode():
            results[kind] = interleaved_times(
                fns, repeats=args.repeats, min_seconds=args.min_seconds)
    with open(osp.join(tmp, f'{backend}.json'), 'w') as f:
        json.dump(results, f)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return time_backend(args.child[0], args.child[1], args)
    import onnxruntime as ort
    try:
        path = results_path(args.out_dir, 'onnx_cpu.json', args.overwrite)
    except FileExistsError as err:
        sys.exit(f'error: {err}')
    x = torch.rand(1, 3, args.size, args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models:
            for variant in ('regular', 'ghost'):
                model = shifted(build(kind, 2, variant), args.shift)
                onnx_path = osp.join(tmp, f'{kind}_{variant}.onnx')
                export_onnx(model, onnx_path)
                # The weights for the timing process.
                torch.save(model.state_dict(),
                           osp.join(tmp, f'{kind}_{variant}.pt'))
                got = session(onnx_path, args.threads).run(
                    None, {'lr': x.numpy()})[0]
                with torch.no_grad():
                    diff = float(np.abs(got - model(x).numpy()).max())
                if diff > 1e-4:
                    sys.exit(f'error: {kind} {variant}: ONNX differs from '
                             f'PyTorch by {diff:.2e}')
        times = {}
        for backend in ('ort', 'torch'):
            cmd = [sys.executable, '-W', 'ignore', __file__, '--child',
                   backend, tmp]
            for key in ('models', 'size', 'repeats', 'min_seconds',
                        'threads'):
                value = getattr(args, key)
                cmd += [f'--{key.replace("_", "-")}'] + (
                    [str(v) for v in value] if isinstance(value, list)
                    else [str(value)])
            subprocess.run(cmd, check=True)
            with open(osp.join(tmp, f'{backend}.json')) as f:
                times[backend] = json.load(f)
    for kind in args.models:
        row = dict(model=f'{kind} x2', input=f'3x{args.size}x{args.size}',
                   latency_s={}, rounds_s={})
        for backend in ('ort', 'torch'):
            t = times[backend][kind]
            med = median_times(t)
            for variant in ('regular', 'ghost'):
                row['latency_s'][f'{backend}_{variant}'] = med[variant]
                row['rounds_s'][f'{backend}_{variant}'] = t[variant]
            row[f'{backend}_ratio'] = med['ghost'] / med['regular']
            row[f'{backend}_round_ratio'] = paired_ratio(t, 'ghost',
                                                         'regular')
        rows.append(row)
    from ghostsr_mm.analysis import machine as machine_info
    machine = dict(machine_info(), threads=args.threads,
                   onnxruntime=ort.__version__)
    print(f'\n### ONNX Runtime vs PyTorch, CPU ({machine["cpu"]})\n')
    print('| model | input | ONNX Runtime regular / ghost (ms) | ORT ratio '
          '(round by round) | PyTorch regular / ghost (ms) | PyTorch ratio '
          '(round by round) | rounds |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        t = r['latency_s']
        print(f"| {r['model']} | {r['input']} | "
              f"{t['ort_regular'] * 1e3:.1f} / {t['ort_ghost'] * 1e3:.1f} | "
              f"{r['ort_ratio']:.3f} ({r['ort_round_ratio'][0]:.3f}) | "
              f"{t['torch_regular'] * 1e3:.1f} / "
              f"{t['torch_ghost'] * 1e3:.1f} | {r['torch_ratio']:.3f} "
              f"({r['torch_round_ratio'][0]:.3f}) | "
              f"{len(r['rounds_s']['ort_ghost'])} |")
    with open(path, 'w') as f:
        json.dump(dict(machine=machine, shift=args.shift, rows=rows), f,
                  indent=1)


if __name__ == '__main__':
    main()
