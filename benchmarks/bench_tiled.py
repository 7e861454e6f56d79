"""Tiled against whole-image inference on a large real photo: time, peak
memory and the largest difference, for a regular and a ghost model;
figures in benchmarks/README.md.

    python benchmarks/bench_tiled.py [--image PATH] [--models edsr_c64b16]
        [--tile 512] [--batch-size 1] [--threads 2]
        [--out-dir benchmarks/results] [--overwrite]

Default photo: scikit-image's retina.jpg (1411x1411), x2. Each (model,
mode) runs in a fresh process, whose peak resident memory grows by the
inference's peak (ru_maxrss); the ghost layers are moved by one pixel as a
deployed model's would be. Tiles overlap by the receptive-field radius, so
the outputs agree to float rounding (checked). JSON to
benchmarks/results/tiled_cpu.json.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import tempfile

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--image', help='default: scikit-image retina.jpg')
    parser.add_argument('--models', nargs='+', default=['edsr_c64b16'])
    parser.add_argument('--tile', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out-dir',
                        default=osp.join(ROOT, 'benchmarks', 'results'))
    parser.add_argument('--overwrite', action='store_true')
    parser.add_argument('--child', nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def default_image() -> str:
    import skimage
    return osp.join(osp.dirname(skimage.__file__), 'data', 'retina.jpg')


def child(kind, variant, mode, out, args):
    """One (model, mode) run in this process; writes its figures and output
    to ``out`` (.json and .npy)."""
    import resource
    import time

    import mmcv
    import numpy as np
    import torch

    import ghostsr_mm  # noqa: F401
    from bench_models import build
    from ghostsr_mm.apis import receptive_radius, tiled_inference
    from ghostsr_mm.models.layers import ghost_layers
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the same weights in every process
    model = build(kind, 2, variant)
    for _, layer in ghost_layers(model):
        layer.offsets[layer.ghost_channels] = torch.tensor([1, 0])
    img = mmcv.imread(args.image or default_image(), channel_order='rgb')
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    overlap = receptive_radius(model)
    with torch.inference_mode():
        model(x[..., :32, :32])  # warm-up
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        if mode == 'whole':
            sr = model(x)
        else:
            sr = tiled_inference(model, x, args.tile, overlap,
                                 args.batch_size)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out + '.npy', sr[0, :, ::7, ::7].numpy())  # a sample grid
    with open(out + '.json', 'w') as f:
        json.dump(dict(seconds=seconds, peak_mib=(peak - base) / 1024,
                       overlap=overlap, shape=list(x.shape)), f)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        kind, variant, mode, out = args.child
        return child(kind, variant, mode, out, args)
    import numpy as np
    from ghostsr_mm.analysis import results_path
    try:
        path = results_path(args.out_dir, 'tiled_cpu.json', args.overwrite)
    except FileExistsError as err:
        sys.exit(f'error: {err}')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models:
            for variant in ('regular', 'ghost'):
                result = {}
                for mode in ('whole', 'tiled'):
                    out = osp.join(tmp, f'{kind}_{variant}_{mode}')
                    cmd = [sys.executable, '-W', 'ignore', __file__,
                           '--child', kind, variant, mode, out,
                           '--tile', str(args.tile), '--batch-size',
                           str(args.batch_size), '--threads',
                           str(args.threads)]
                    if args.image:
                        cmd += ['--image', args.image]
                    subprocess.run(cmd, check=True)
                    with open(out + '.json') as f:
                        result[mode] = json.load(f)
                    result[mode]['sample'] = np.load(out + '.npy')
                diff = float(np.abs(result['whole'].pop('sample') -
                                    result['tiled'].pop('sample')).max())
                rows.append(dict(model=f'{kind} x2', variant=variant,
                                 max_difference=diff, **result))
    import torch
    from ghostsr_mm.analysis import machine as machine_info
    machine = dict(machine_info(), threads=args.threads)
    shape = rows[0]['whole']['shape']
    print(f'\n### Tiled vs whole-image inference, CPU ({machine["cpu"]}); '
          f'LR {shape[3]}x{shape[2]}, tile {args.tile}, batch '
          f'{args.batch_size}\n')
    print('| model | whole: time (s) / peak memory (MiB) | tiled: time (s) '
          '/ peak memory (MiB) | overlap | max difference |')
    print('|---|---|---|---|---|')
    for r in rows:
        w, t = r['whole'], r['tiled']
        print(f"| {r['model']} {r['variant']} | {w['seconds']:.1f} / "
              f"{w['peak_mib']:.0f} | {t['seconds']:.1f} / "
              f"{t['peak_mib']:.0f} | {t['overlap']} | "
              f"{r['max_difference']:.1e} |")
    with open(path, 'w') as f:
        json.dump(dict(machine=machine, tile=args.tile,
                       batch_size=args.batch_size, rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
