"""Params, FLOPs and latency of one or several configs' generators, as a
Markdown table with ratios to a baseline (GhostSR Table 1's columns).

    python tools/analysis/complexity.py CONFIG [CONFIG ...]
        [--shape 3 512 512] [--device cpu|cuda] [--baseline 0]
        [--repeats 10] [--no-latency]

Ghost generators are measured as their inference graph (learnable shifts
fixed). FLOPs are multiply-accumulates: a ghost layer counts its intrinsic
conv and the shift counts 0. Latency: warm-up, then the median of repeats
interleaved across the configs (CUDA synchronised), under torch.no_grad.
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
import ghostsr_mm  # noqa: E402,F401
from ghostsr_mm.analysis import (count_flops, count_params,  # noqa: E402
                                 interleaved_median_times)
from ghostsr_mm.apis import build_generator  # noqa: E402
from ghostsr_mm.cli import UserError, run_tool  # noqa: E402
from ghostsr_mm.models.layers import convert_to_inference  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument('--shape', type=int, nargs=3, default=[3, 512, 512],
                        help='input shape C H W (default: 3 512 512)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--baseline', type=int, default=0,
                        help='index of the config the ratios refer to')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--no-latency', action='store_true')
    return parser.parse_args(argv)


def measure(configs, shape, device='cpu', repeats=10, latency=True):
    """Rows of (name, params, FLOPs, seconds or None)."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda: no CUDA GPU is visible')
    models = {}
    for path in configs:
        name = osp.splitext(osp.basename(path))[0]
        models[name] = convert_to_inference(
            build_generator(path), inplace=True).to(device)
    x = torch.rand(1, *shape, device=device)
    times = {}
    if latency:
        sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
        with torch.no_grad():
            times = interleaved_median_times(
                {n: (lambda m=m: m(x))
                 for n, m in models.items()},
                repeats=repeats,
                sync=sync)
    return [(n, count_params(m), count_flops(m, shape, device), times.get(n))
            for n, m in models.items()]


def markdown(rows, baseline=0) -> str:
    base = rows[baseline]
    lines = [
        '| model | params (M) | FLOPs (G) | latency (ms) | params ratio | '
        'FLOPs ratio | latency ratio |', '|---|---|---|---|---|---|---|'
    ]
    for name, params, flops, sec in rows:
        lat = f'{sec * 1e3:.1f}' if sec is not None else '-'
        lat_ratio = (f'{sec / base[3]:.3f}'
                     if sec is not None and base[3] else '-')
        lines.append(f'| {name} | {params / 1e6:.2f} | {flops / 1e9:.1f} | '
                     f'{lat} | {params / base[1]:.3f} | '
                     f'{flops / base[2]:.3f} | {lat_ratio} |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0 <= args.baseline < len(args.configs):
        raise UserError(f'--baseline {args.baseline} is not an index of the '
                        f'{len(args.configs)} configs')
    for path in args.configs:
        if not osp.isfile(path):
            raise FileNotFoundError(f'config file {path} not found')
    rows = measure(args.configs, args.shape, args.device, args.repeats,
                   not args.no_latency)
    print(f'input 1x{"x".join(map(str, args.shape))}, device {args.device}, '
          f'threads {torch.get_num_threads()}')
    print(markdown(rows, args.baseline))
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
