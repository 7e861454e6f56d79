"""Whole models: every ghost model against its regular parent (and a
Conv-0.5x width reference) in one run; method and figures in
benchmarks/README.md ("Method", "Models").

    python benchmarks/bench_models.py [--device cpu] [--repeats 9]
        [--min-seconds 60 (CPU), 3 (CUDA)] [--scales 2]
        [--models edsr_c256b32 edsr_c64b16 rdn carn carn_m]
        [--no-train] [--compile] [--ablate-fusion]
        [--out-dir benchmarks/results] [--overwrite]

Inference on a 3x128x128 LR input on the CPU, 3x512x512 on CUDA. With
--compile the eager models run in the same rounds as the compiled ones;
--ablate-fusion adds two ghost variants to the rounds (the epilogue as
separate ops, concats by torch.cat). Markdown to stdout, JSON to
benchmarks/results/models_<device>[_<variant>].json.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
import ghostsr_mm  # noqa: E402,F401
from ghostsr_mm.analysis import (count_flops, count_params,  # noqa: E402
                                 interleaved_times, machine, median_times,
                                 paired_ratio, results_path)
from ghostsr_mm.models.layers import (GhostConv2d,  # noqa: E402
                                      concat_with_torch_cat,
                                      convert_to_inference, ghost_layers)
from ghostsr_mm.ops import apply_epilogue  # noqa: E402

MODELS = {
    'edsr_c256b32': ('EDSRNet', 'GhostEDSRNet',
                     dict(in_channels=3, out_channels=3, mid_channels=256,
                          num_blocks=32, res_scale=0.1), 'mid_channels'),
    'edsr_c64b16': ('EDSRNet', 'GhostEDSRNet',
                    dict(in_channels=3, out_channels=3, mid_channels=64,
                         num_blocks=16), 'mid_channels'),
    'rdn': ('RDNNet', 'GhostRDNNet',
            dict(in_channels=3, out_channels=3, mid_channels=64,
                 num_blocks=16), 'channel_growth'),
    'carn': ('CARNNet', 'GhostCARNNet', dict(), 'mid_channels'),
    'carn_m': ('CARNNet', 'GhostCARNNet', dict(efficient=True),
               'mid_channels'),
}


def build(kind, scale, variant):
    from mmagic.registry import MODELS as REGISTRY
    regular, ghost, kwargs, width_key = MODELS[kind]
    cfg = dict(kwargs, upscale_factor=scale)
    if variant in ('ghost', 'unfused', 'cat'):
        model = convert_to_inference(
            REGISTRY.build(dict(type=ghost, **cfg)), inplace=True)
        if variant == 'unfused':
            unfuse_epilogues(model)
        return model
    if variant == 'half':
        default = 64
        cfg[width_key] = cfg.get(width_key, default) // 2
        if kind == 'rdn':  # RDN's width is its growth and its features
            cfg['mid_channels'] //= 2
    return REGISTRY.build(dict(type=regular, **cfg)).eval()


def _malloc_allocated() -> int:
    """Bytes currently allocated through glibc's malloc (mallinfo2)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t)
                    for n in ('arena', 'ordblks', 'smblks', 'hblks',
                              'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
                              'fordblks', 'keepcost')]

    libc = ctypes.CDLL('libc.so.6')
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def peak_memory_child(kind, scale, variant, device, size):
    """Run in a fresh process: peak memory of one inference above what the
    model and its input hold (CUDA: the allocator's peak; CPU: malloc'd
    bytes sampled after every module's forward)."""
    model = build(kind, scale, variant).to(device)
    x = torch.rand(1, 3, size, size, device=device)
    with torch.inference_mode():
        model(x)  # warm-up
        if device == 'cuda':
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            model(x)
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - base
        base = _malloc_allocated()
        peak = [base]
        for module in model.modules():
            module.register_forward_hook(
                lambda *args: peak.append(_malloc_allocated()))
        out = model(x)
        peak.append(_malloc_allocated())
        del out
        return max(peak) - base


def peak_memory(kind, scale, variant, device, size):
    code = (f'import sys; sys.path.insert(0, {ROOT!r}); '
            f'sys.path.insert(0, {osp.dirname(__file__)!r}); '
            'import bench_models as b; '
            f'print(b.peak_memory_child({kind!r}, {scale}, {variant!r}, '
            f'{device!r}, {size}))')
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def unfuse_epilogues(model):
    """Make every ghost layer run the ReLU / residual add that its block
    asks for as separate (in-place) ops after the shift, as before the
    epilogue was fused: the ablation of the fusion."""
    for _, layer in ghost_layers(model):

        def forward(x, residual=None, scale=1.0, relu=False, out=None,
                    layer=layer):
            y = apply_epilogue(GhostConv2d.forward(layer, x), residual, scale,
                               relu, inplace=True)
            return y if out is None else out.copy_(y)

        layer.forward = forward


def bench_inference(kinds, scale, device, repeats, use_compile,
                    ablate_fusion=False, min_seconds=0.0):
    size = 512 if device == 'cuda' else 128
    x = torch.rand(1, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    rows = []
    for kind in kinds:
        variants = ('regular', 'ghost', 'half') + (
            ('unfused', 'cat') if ablate_fusion else ())
        models = {v: build(kind, scale, v).to(device) for v in variants}
        fns = {v: (torch.compile(m) if use_compile else m)
               for v, m in models.items()}
        if use_compile:  # the eager models in the same rounds
            fns.update(regular_eager=models['regular'],
                       ghost_eager=models['ghost'])

        def call(variant, f):
            if variant != 'cat':
                return lambda: f(x)

            def with_cat():
                with concat_with_torch_cat():
                    return f(x)
            return with_cat

        with torch.inference_mode():
            raw = interleaved_times(
                {v: call(v, f) for v, f in fns.items()},
                repeats=repeats, warmup=2, sync=sync,
                min_seconds=min_seconds)
        t = median_times(raw)
        mid, low, high = paired_ratio(raw, 'ghost', 'regular')
        compiled = None
        if use_compile:
            compiled = dict(
                eager_latency_ratio=t['ghost_eager'] / t['regular_eager'],
                eager_round_ratio_median=paired_ratio(
                    raw, 'ghost_eager', 'regular_eager')[0],
                ghost_compiled_over_eager=t['ghost'] / t['ghost_eager'],
                regular_compiled_over_eager=(t['regular'] /
                                             t['regular_eager']))
        flops = {v: count_flops(m, (3, size, size), device)
                 for v, m in models.items() if v not in ('unfused', 'cat')}
        params = {v: count_params(m) for v, m in models.items()}
        mem = {v: peak_memory(kind, scale, v, device, size)
               for v in ('regular', 'ghost')}
        rows.append(dict(
            model=f'{kind} x{scale}', input=f'3x{size}x{size}',
            params=params, flops=flops, latency_s=t, peak_bytes=mem,
            latency_rounds_s=raw,
            latency_ratio=t['ghost'] / t['regular'],
            round_ratio_median=mid,
            round_ratio_quartiles=(low, high),
            half_latency_ratio=t['half'] / t['regular'],
            unfused_latency_ratio=(t['unfused'] / t['regular']
                                   if ablate_fusion else None),
            cat_latency_ratio=(t['cat'] / t['regular']
                               if ablate_fusion else None),
            flops_ratio=flops['ghost'] / flops['regular'],
            compile=compiled,
            memory_ratio=mem['ghost'] / max(mem['regular'], 1)))
    return rows


def bench_training(device, repeats, min_seconds=0.0):
    from mmagic.registry import MODELS as REGISTRY
    _, _, kwargs, _ = MODELS['edsr_c64b16']
    models = {
        'regular': REGISTRY.build(dict(type='EDSRNet', upscale_factor=2,
                                       **kwargs)),
        'ghost': REGISTRY.build(dict(type='GhostEDSRNet', upscale_factor=2,
                                     **kwargs)),
    }
    x = torch.rand(16, 3, 48, 48, device=device)
    y = torch.rand(16, 3, 96, 96, device=device)
    steps = {}
    for name, model in models.items():
        model.to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            loss = torch.nn.functional.l1_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[name] = step
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    raw = interleaved_times(steps, repeats=repeats, warmup=2, sync=sync,
                            min_seconds=min_seconds)
    t = median_times(raw)
    mid, low, high = paired_ratio(raw, 'ghost', 'regular')
    return dict(model='edsr_c64b16 x2 train step', batch='16x3x48x48',
                latency_s=t, ratio=t['ghost'] / t['regular'],
                round_ratio_median=mid, round_ratio_quartiles=(low, high),
                latency_rounds_s=raw)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('--repeats', type=int, default=9,
                        help='timed rounds per model, at least')
    parser.add_argument('--min-seconds', type=float, default=None,
                        help="more rounds until the timed calls of a model's "
                        'variants add up to this (default: 60 on the CPU, '
                        '3 on CUDA)')
    parser.add_argument('--scales', type=int, nargs='+', default=[2])
    parser.add_argument('--models', nargs='+', default=list(MODELS))
    parser.add_argument('--no-train', action='store_true')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile every model first')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--ablate-fusion', action='store_true',
                        help='also time the ghost models with the '
                        'ReLU / residual epilogue run as separate ops, and '
                        'with every concat made by torch.cat')
    parser.add_argument('--out-dir', default=osp.join(ROOT, 'benchmarks',
                                                      'results'),
                        help='where the JSON goes')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing JSON of the same name')
    args = parser.parse_args(argv)
    if args.min_seconds is None:
        args.min_seconds = 3.0 if args.device == 'cuda' else 60.0
    name = (f'models_{args.device}' + ('_compile' if args.compile else '') +
            ('_ablate_fusion' if args.ablate_fusion else ''))
    try:
        path = results_path(args.out_dir, f'{name}.json', args.overwrite)
    except FileExistsError as e:
        parser.error(str(e))
    device = args.device
    info = machine(device)
    rows = []
    for scale in args.scales:
        rows += bench_inference(args.models, scale, device, args.repeats,
                                args.compile, args.ablate_fusion,
                                args.min_seconds)
    print(f'\n### whole models, {device} ({info.get("gpu", info["cpu"])}, '
          f'{info["threads"]} threads), inference' +
          (', torch.compile' if args.compile else '') + '\n')
    print('| model | input | params reg / ghost (M) | FLOPs ratio | '
          'latency reg / ghost / 0.5x (ms) | '
          'latency ratio, of medians | latency ratio, round by round: '
          'median (quartiles; rounds) | 0.5x ratio | '
          'peak mem ratio |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        t = r['latency_s']
        print(f"| {r['model']} | {r['input']} | "
              f"{r['params']['regular'] / 1e6:.2f} / "
              f"{r['params']['ghost'] / 1e6:.2f} | {r['flops_ratio']:.3f} | "
              f"{t['regular'] * 1e3:.0f} / {t['ghost'] * 1e3:.0f} / "
              f"{t['half'] * 1e3:.0f} | {r['latency_ratio']:.3f} | "
              f"{r['round_ratio_median']:.3f} "
              f"({r['round_ratio_quartiles'][0]:.2f}-"
              f"{r['round_ratio_quartiles'][1]:.2f}; "
              f"{len(r['latency_rounds_s']['ghost'])}) | "
              f"{r['half_latency_ratio']:.3f} | {r['memory_ratio']:.2f} |")
    if args.ablate_fusion:
        print('\n| model | ghost / regular | ghost, epilogue unfused / '
              'regular | ghost, concats by torch.cat / regular |'
              '\n|---|---|---|---|')
        for r in rows:
            print(f"| {r['model']} | {r['latency_ratio']:.3f} | "
                  f"{r['unfused_latency_ratio']:.3f} | "
                  f"{r['cat_latency_ratio']:.3f} |")
    if args.compile:
        print('\n| model | latency eager reg / ghost (ms) | ratio eager | '
              'ratio compiled | compiled / eager: regular, ghost |'
              '\n|---|---|---|---|---|')
        for r in rows:
            t, c = r['latency_s'], r['compile']
            print(f"| {r['model']} | {t['regular_eager'] * 1e3:.0f} / "
                  f"{t['ghost_eager'] * 1e3:.0f} | "
                  f"{c['eager_latency_ratio']:.3f} (round by round "
                  f"{c['eager_round_ratio_median']:.3f}) | "
                  f"{r['latency_ratio']:.3f} (round by round "
                  f"{r['round_ratio_median']:.3f}) | "
                  f"{c['regular_compiled_over_eager']:.3f}, "
                  f"{c['ghost_compiled_over_eager']:.3f} |")
    train = None
    if not args.no_train:
        train = bench_training(device, max(args.repeats, 5),
                               args.min_seconds)
        t = train['latency_s']
        print(f"\ntraining step ({train['batch']}): regular "
              f"{t['regular'] * 1e3:.0f} ms, ghost (learnable shift) "
              f"{t['ghost'] * 1e3:.0f} ms, ratio of medians "
              f"{train['ratio']:.3f}, round by round "
              f"{train['round_ratio_median']:.3f} (quartiles "
              f"{train['round_ratio_quartiles'][0]:.2f}-"
              f"{train['round_ratio_quartiles'][1]:.2f}, "
              f"{len(train['latency_rounds_s']['ghost'])} rounds)")
    with open(path, 'w') as f:
        json.dump(dict(machine=info, compile=args.compile,
                       command=' '.join(['python benchmarks/bench_models.py']
                                        + sys.argv[1:]),
                       repeats=args.repeats,
                       min_seconds=args.min_seconds,
                       inference=rows, train=train), f, indent=1)


if __name__ == '__main__':
    main()
