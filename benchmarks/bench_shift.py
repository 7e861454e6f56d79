"""The ghost shift op against a memory copy and against the naive
pad + slice + concat, and a GhostConv layer against the convs it replaces;
figures in benchmarks/README.md ("The op").

    python benchmarks/bench_shift.py [--repeats 30] [--size 128]
        [--out-dir benchmarks/results] [--overwrite]

The op is compared with a clone of a tensor of its output's size (both
allocate) and, writing into one buffer, with copy_ (no allocator). The
layers run alone, followed by a ReLU, and followed by a ReLU into a channel
slice of a concatenation buffer (as in RDN's dense blocks). CPU always,
CUDA when a GPU is visible: benchmarks/results/shift_<device>.json.
"""
import argparse
import json
import os.path as osp
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from ghostsr_mm.analysis import (interleaved_times, machine,  # noqa: E402
                                 median_times, paired_ratio, results_path)
from ghostsr_mm.models.layers import GhostConv2d, conv_epilogue  # noqa: E402
from ghostsr_mm.ops import ghost_shift  # noqa: E402

ops = torch.ops.ghostsr
RESULTS = osp.join(osp.dirname(osp.abspath(__file__)), 'results')


def naive_ghost(intrinsic, shift):
    """Ghosts by pad + slice, then concat (the baseline the op replaces)."""
    dy, dx = shift
    pad = F.pad(intrinsic, (1, 1, 1, 1))
    h, w = intrinsic.shape[-2:]
    ghost = pad[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
    return torch.cat([intrinsic, ghost], 1)


def bench_op(channels, size, device, repeats):
    m = channels // 2
    x = torch.randn(1, m, size, size, device=device)
    src = torch.cat([torch.arange(m), torch.arange(m)]).to(device)
    offsets = torch.zeros(channels, 2, dtype=torch.long, device=device)
    offsets[m:] = torch.tensor([1, -1])
    # The copy baselines read a tensor of the output's size that holds data:
    # cloning never-written memory (torch.empty) reads the kernel's shared
    # zero page and is about 1.6x faster than cloning real data on the CPU.
    data = torch.randn(1, channels, size, size, device=device)
    grad = torch.randn_like(data)
    buf = torch.empty_like(data)
    ghosts = torch.arange(m, channels, device=device)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    with torch.no_grad():
        raw = interleaved_times(
            {
                # each allocates its output, as a model's layers do
                'op': lambda: ghost_shift(x, src, offsets),
                'clone': lambda: data.clone(),
                # the memory passes alone: both write into the same buffer,
                # so the allocator (page faults of fresh large blocks, which
                # come and go with its state) is out of the comparison
                'op_into': lambda: ghost_shift(x, src, offsets, out=buf),
                'copy_into': lambda: buf.copy_(data),
                'naive': lambda: naive_ghost(x, (1, -1)),
                'backward': lambda: ops.ghost_shift_backward(
                    grad, src, offsets, m),
                'weight_grad': lambda: ops.ghost_shift_weight_grad(
                    grad, x, src, ghosts, 1),
            },
            repeats=repeats,
            sync=sync)
    t = median_times(raw)
    return dict(
        shape=f'1x{channels}x{size}x{size}',
        **{f'{k}_ms': v * 1e3
           for k, v in t.items()},
        op_over_clone=t['op'] / t['clone'],
        op_over_clone_round_quartiles=paired_ratio(raw, 'op', 'clone')[1:],
        into_over_copy=t['op_into'] / t['copy_into'],
        into_over_copy_round_quartiles=paired_ratio(raw, 'op_into',
                                                    'copy_into')[1:],
        naive_over_op=t['naive'] / t['op'],
        backward_over_forward=t['backward'] / t['op'],
        weight_grad_over_forward=t['weight_grad'] / t['op'])


def bench_layer(channels, size, device, repeats):
    x = torch.randn(1, channels, size, size, device=device)
    full = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device)
    half = torch.nn.Conv2d(channels, channels // 2, 3, padding=1).to(device)
    ghost = GhostConv2d(
        channels, channels, 3, padding=1, cheap_op='fixed').to(device)
    ghost.offsets[channels // 2:] = torch.tensor([1, -1])
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    # As a dense layer uses them: the output lands in a channel slice of a
    # concatenation buffer (a regular conv's epilogue writes it there, the
    # ghost layer's shift writes it in place).
    buf = torch.empty(1, 2 * channels, size, size, device=device)
    full_part = buf[:, channels:]
    half_part = buf[:, channels:channels * 3 // 2]
    # The floor of any layer that writes its output after the conv: one pass
    # writing that output and reading nothing.
    written = torch.empty(1, channels, size, size, device=device)
    with torch.no_grad():
        raw = interleaved_times(
            {
                'full': lambda: full(x),
                'half': lambda: half(x),
                'ghost': lambda: ghost(x),
                # as the backbones use them: followed by a ReLU
                'full_relu': lambda: conv_epilogue(full, x, relu=True),
                'half_relu': lambda: conv_epilogue(half, x, relu=True),
                'ghost_relu': lambda: conv_epilogue(ghost, x, relu=True),
                'full_cat': lambda: conv_epilogue(
                    full, x, relu=True, out=full_part),
                'half_cat': lambda: conv_epilogue(
                    half, x, relu=True, out=half_part),
                'ghost_cat': lambda: conv_epilogue(
                    ghost, x, relu=True, out=full_part),
                'write_output': lambda: written.zero_(),
            },
            repeats=repeats,
            sync=sync)

    t = median_times(raw)

    def overhead(g, h, f):
        return (t[g] - t[h]) / t[f]

    return dict(
        shape=f'1x{channels}x{size}x{size}',
        **{f'{k}_ms': v * 1e3
           for k, v in t.items()},
        ghost_over_full=t['ghost'] / t['full'],
        overhead_vs_half_in_full=overhead('ghost', 'half', 'full'),
        relu_ghost_over_full=t['ghost_relu'] / t['full_relu'],
        relu_overhead_vs_half_in_full=overhead('ghost_relu', 'half_relu',
                                               'full_relu'),
        cat_ghost_over_full=t['ghost_cat'] / t['full_cat'],
        cat_overhead_vs_half_in_full=overhead('ghost_cat', 'half_cat',
                                              'full_cat'),
        write_output_in_full=t['write_output'] / t['full'])


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--out-dir', default=RESULTS,
                        help='where shift_<device>.json goes')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing shift_<device>.json')
    args = parser.parse_args(argv)
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    try:
        paths = {d: results_path(args.out_dir, f'shift_{d}.json',
                                 args.overwrite)
                 for d in devices}
    except FileExistsError as e:
        parser.error(str(e))
    for device in devices:
        size = args.size if device == 'cpu' else 512
        ops_rows = [bench_op(c, size, device, args.repeats)
                    for c in (256, 64)]
        layer_rows = [bench_layer(c, size, device, args.repeats)
                      for c in (64, 256)]
        info = machine(device)
        print(f'\n### ghost shift op, {device} ({info.get("gpu", info["cpu"])},'
              f' {info["threads"]} threads)\n')
        print('| output | op (ms) | clone (ms) | op / clone '
              '(round quartiles) | into a buffer: op / copy_ (round '
              'quartiles) | naive / op | backward / forward | '
              'weight grad / forward |')
        print('|---|---|---|---|---|---|---|---|')
        for r in ops_rows:
            q = r['op_over_clone_round_quartiles']
            qi = r['into_over_copy_round_quartiles']
            print(f"| {r['shape']} | {r['op_ms']:.3f} | {r['clone_ms']:.3f} "
                  f"| {r['op_over_clone']:.2f} ({q[0]:.2f}-{q[1]:.2f}) | "
                  f"{r['into_over_copy']:.2f} ({qi[0]:.2f}-{qi[1]:.2f}) | "
                  f"{r['naive_over_op']:.2f} | "
                  f"{r['backward_over_forward']:.2f} | "
                  f"{r['weight_grad_over_forward']:.2f} |")
        print('\n| layer input | full conv (ms) | half conv (ms) | GhostConv '
              '(ms) | ghost / full | (ghost - half) / full |')
        print('|---|---|---|---|---|---|')
        for r in layer_rows:
            for tag, key in (('', ''), (' + ReLU', 'relu_'),
                             (' + ReLU, into a concat', 'cat_')):
                pre = key.rstrip('_')
                ms = [r[f'{k}_{pre}_ms' if pre else f'{k}_ms']
                      for k in ('full', 'half', 'ghost')]
                print(f"| {r['shape']}{tag} | {ms[0]:.3f} | {ms[1]:.3f} | "
                      f"{ms[2]:.3f} | {r[key + 'ghost_over_full']:.3f} | "
                      f"{r[key + 'overhead_vs_half_in_full'] * 100:.1f}% |")
        for r in layer_rows:
            print(f"\n{r['shape']}: writing the layer's output once "
                  f"(`zero_()`, nothing read) takes "
                  f"{r['write_output_ms']:.3f} ms = "
                  f"{r['write_output_in_full'] * 100:.1f}% of the full conv")
        with open(paths[device], 'w') as f:
            json.dump(dict(machine=info, op=ops_rows, layer=layer_rows),
                      f, indent=1)


if __name__ == '__main__':
    main()
