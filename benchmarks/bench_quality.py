"""Quality at CPU scale on real photos: GhostSR Tables 2 and 3 (ghost
against its regular parent, against a copy instead of a learned shift,
against Ghost-DW, clustering against by-order initialisation, against
training from scratch, and against narrower regular networks).

    python benchmarks/bench_quality.py [--models edsr carn] [--scales 2 4]
        [--seeds 0 1 2] [--parent-iters 2000] [--iters 1000]
        [--arms parent regular+ ghost ...] [--jobs 2]
        [--out-dir benchmarks/results] [--tag NAME] [--overwrite]

Photos: natural photos shipped inside scikit-image, scikit-learn and
matplotlib (benchmarks/quality_lib.py); training and test photos are
disjoint, and the validation split for the shift oracle is the bottom fifth
of each training photo. For each model, scale and seed: a regular parent is
trained for --parent-iters; every fine-tuned arm starts from it and trains
--iters more; arms from scratch train --parent-iters + --iters, so every arm
has the same budget. Adam (0.9, 0.999), LR 2e-4 with a cosine decay per
training, L1, batches of 16 24x24 LR patches with flips and rotations.
Y-PSNR/SSIM with MMagic's metrics (border = scale) on the whole test photos.

Arms (ARMS below): the ghost arms use clustering (k-means, Eq. 7-9) or
by-order initialisation from the parent, with the learned shift under the
paper's settings ('ghost') or the tuned ones ('ghost-tuned': W' at 100x the
LR, zero-offset bias 1, 300 Gumbel epochs over the fine-tune), a copy or a
depthwise conv; 'ghost-tuned-oracle' is 'ghost-tuned' with each layer's
offset then chosen on the validation loss (the shift oracle). The narrow
regular arms have the widest width whose FLOPs, parameters or measured CPU
latency do not exceed the ghost model's.

Prints the tables, writes every run to benchmarks/results/
quality_cpu[_TAG].json and a PSNR-versus-FLOPs plot to quality_cpu[_TAG].png
(an existing file is kept unless --overwrite); while it runs, what it has
measured goes to quality_cpu[_TAG].runs.jsonl (--report rebuilds the
tables from it, e.g. after an interrupted run).
"""
import argparse
import json
import multiprocessing as mp
import os
import os.path as osp
import statistics
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

MODELS = {
    'edsr': dict(regular='EDSRNet', ghost='GhostEDSRNet',
                 args=dict(in_channels=3, out_channels=3, mid_channels=32,
                           num_blocks=4),
                 name='EDSR c32b4'),
    'carn': dict(regular='CARNNet', ghost='GhostCARNNet',
                 args=dict(mid_channels=32), name='CARN c32'),
}
WIDTH = 'mid_channels'
# The learned shift's settings: the paper's, and the tuned ones of
# benchmarks/README.md ("Quality").
RECIPES = {
    'paper': dict(logit_lr_mult=1.0, zero_shift_bias=1e-3, epochs=100),
    'tuned': dict(logit_lr_mult=100.0, zero_shift_bias=1.0, epochs=300),
}
# name: (kind, init, cheap_op, recipe, description)
ARMS = {
    'parent': ('regular', 'scratch', None, None, 'regular parent'),
    'regular+': ('regular', 'parent', None, None,
                 'regular, trained as long as the others'),
    'ghost': ('ghost', 'kmeans', 'learnable', 'paper',
              'ghost, clustering, learned shift (paper settings)'),
    'ghost-tuned': ('ghost', 'kmeans', 'learnable', 'tuned',
                    'ghost, clustering, learned shift (tuned)'),
    'ghost-tuned-oracle': ('ghost', 'kmeans', 'learnable', 'tuned',
                           'ghost-tuned, offsets chosen by the oracle'),
    'ghost-tuned-refit': ('ghost', 'kmeans', 'fixed', None,
                          'ghost-tuned\'s offsets, fixed from the start '
                          '(no noise)'),
    'ghost-tuned-pc': ('ghost', 'kmeans', 'learnable-pc', 'tuned',
                       'ghost-tuned, one shift per ghost channel'),
    'copy': ('ghost', 'kmeans', 'copy', None, 'ghost, clustering, copy'),
    'dw': ('ghost', 'kmeans', 'depthwise', None,
           'ghost, clustering, depthwise (Ghost-DW)'),
    'order-tuned': ('ghost', 'order', 'learnable', 'tuned',
                    'ghost, by-order init, learned shift (tuned)'),
    'order-copy': ('ghost', 'order', 'copy', None,
                   'ghost, by-order init, copy'),
    'order-dw': ('ghost', 'order', 'depthwise', None,
                 'ghost, by-order init, depthwise'),
    'scratch': ('ghost', 'scratch', 'learnable', 'tuned',
                'ghost from scratch, learned shift (tuned)'),
    'narrow-flops': ('narrow', 'flops', None, None,
                     'regular, narrower: FLOPs <= ghost'),
    'narrow-params': ('narrow', 'params', None, None,
                      'regular, narrower: params <= ghost'),
    'narrow-latency': ('narrow', 'latency', None, None,
                       'regular, narrower: CPU latency <= ghost'),
}
CORE_ARMS = ('parent', 'regular+', 'ghost', 'ghost-tuned',
             'ghost-tuned-oracle', 'copy', 'narrow-flops')
FLOPS_SHAPE = (3, 128, 128)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=['edsr', 'carn'],
                        choices=sorted(MODELS))
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 4])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--parent-iters', type=int, default=2000)
    parser.add_argument('--iters', type=int, default=1000,
                        help='fine-tuning iterations of every arm')
    parser.add_argument('--arms', nargs='+', default=list(ARMS),
                        help=f'arms to run (core: {" ".join(CORE_ARMS)})')
    parser.add_argument('--jobs', type=int, default=2,
                        help='training processes (threads split evenly)')
    parser.add_argument('--out-dir', default=osp.join(ROOT, 'benchmarks',
                                                      'results'))
    parser.add_argument('--tag', help='suffix of the output files')
    parser.add_argument('--overwrite', action='store_true')
    parser.add_argument('--report', metavar='JSONL', help='only write the '
                        'report from what this file holds (a run writes '
                        'the complexity and latency it measured, then '
                        'each training\'s rows as it ends, to '
                        '<out>.runs.jsonl); nothing is measured again')
    args = parser.parse_args(argv)
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown:
        parser.error(f'unknown arms {unknown}; choose from {list(ARMS)}')
    for derived in ('ghost-tuned-oracle', 'ghost-tuned-refit'):
        if derived in args.arms and 'ghost-tuned' not in args.arms:
            args.arms.append('ghost-tuned')
    if any(ARMS[a][1] in ('parent', 'kmeans', 'order') for a in args.arms) \
            and 'parent' not in args.arms:
        args.arms.insert(0, 'parent')
    args.arms = [a for a in ARMS if a in args.arms]  # parent first
    if args.parent_iters < 1 or args.iters < 1 or args.jobs < 1:
        parser.error('--parent-iters, --iters and --jobs must be >= 1')
    return args


# ---------------------------------------------------------------- models
def build(model, kind, scale, width=None, **ghost_args):
    import ghostsr_mm  # noqa: F401
    from mmagic.registry import MODELS as REGISTRY
    spec = MODELS[model]
    args = dict(spec['args'], upscale_factor=scale)
    if width is not None:
        args[WIDTH] = width
    if kind == 'ghost':
        return REGISTRY.build(dict(type=spec['ghost'], **args, **ghost_args))
    return REGISTRY.build(dict(type=spec['regular'], **args))


def complexity(model, scale, widths=None):
    """Params, FLOPs of the regular and ghost models and every narrower
    width, the CPU latency of each (3x128x128 LR, median of interleaved
    repeats), and the narrow widths matching the ghost model."""
    import torch
    from ghostsr_mm.analysis import (count_flops, count_params,
                                     interleaved_median_times)
    from ghostsr_mm.models.layers import convert_to_inference
    full = MODELS[model]['args'][WIDTH]
    widths = widths or list(range(8, full, 2))
    nets = {'regular': build(model, 'regular', scale),
            'ghost': convert_to_inference(build(model, 'ghost', scale))}
    for w in widths:
        nets[f'w{w}'] = build(model, 'regular', scale, w)
    for net in nets.values():  # timed as deployed
        net.eval()
    info = {n: dict(params=count_params(m), flops=count_flops(m, FLOPS_SHAPE))
            for n, m in nets.items()}
    x = torch.rand(1, *FLOPS_SHAPE)
    with torch.inference_mode():
        times = interleaved_median_times(
            {n: (lambda m=m.eval(): m(x)) for n, m in nets.items()},
            repeats=15)
    for n in nets:
        info[n]['latency_ms'] = times[n] * 1e3
    ghost = info['ghost']
    match = {}
    for key, metric in (('flops', 'flops'), ('params', 'params'),
                        ('latency', 'latency_ms')):
        fit = [w for w in widths if info[f'w{w}'][metric] <= ghost[metric]]
        match[key] = max(fit) if fit else min(widths)
    return dict(models=info, narrow_widths=match)


# -------------------------------------------------------------- training
def _fine_tune(net, data, iters, seed, recipe):
    """Train ``net`` with the learnable-shift ``recipe`` (if any)."""
    from quality_lib import train

    from ghostsr_mm.engine.hooks.gumbel_anneal_hook import gumbel_epoch
    from ghostsr_mm.models.layers import ghost_layers
    layers = [layer for _, layer in ghost_layers(net)
              if layer.cheap_op == 'learnable']
    if recipe is None or not layers:
        return train(net, data, iters, seed)
    r = RECIPES[recipe]
    interval = max(1, iters // r['epochs'])

    def on_iter(it):
        for layer in layers:
            layer.gumbel_epoch = gumbel_epoch(it, interval)

    return train(net, data, iters, seed, on_iter=on_iter,
                 logit_lr_mult=r['logit_lr_mult'])


def _offsets_and_oracle(net, val, choose=False):
    from ghostsr_mm.models.layers import convert_to_inference
    from ghostsr_mm.analysis.shift_oracle import shift_oracle
    inference = convert_to_inference(net)
    oracle = shift_oracle(inference, val, choose=choose)
    return inference, dict(
        learned=[list(o.learned) for o in oracle],
        best=[list(o.best) for o in oracle],
        oracle_hits=sum(o.learned == o.best for o in oracle),
        layers=len(oracle))


def run_task(task):
    """One (model, scale, seed) group of arms in a worker process."""
    import torch
    from quality_lib import (TEST_PHOTOS, TRAIN_PHOTOS, PairSet, evaluate,
                             load_photo, split_photos, val_batches)

    from ghostsr_mm.analysis import count_flops, count_params
    from ghostsr_mm.models.clustering import cluster_init
    torch.set_num_threads(task['threads'])
    model, scale, seed = task['model'], task['scale'], task['seed']
    train_set, val_set = split_photos(TRAIN_PHOTOS, scale)
    test_set = PairSet([load_photo(s) for s in TEST_PHOTOS], scale)
    val = val_batches(val_set)
    p_iters, f_iters = task['parent_iters'], task['iters']
    results, parent = [], None

    def record(arm, net, start, extra=None):
        net.eval()
        row = dict(model=model, scale=scale, seed=seed, arm=arm,
                   params=count_params(net),
                   flops=count_flops(net, FLOPS_SHAPE),
                   seconds=round(time.time() - start, 1),
                   **evaluate(net, test_set), **(extra or {}))
        results.append(row)
        print(f'[{model} x{scale} seed {seed}] {arm}: '
              f'{row["psnr"]:.3f} dB ({row["seconds"]} s)', flush=True)

    for arm in task['arms']:
        kind, init, cheap_op, recipe, _ = ARMS[arm]
        if arm in ('ghost-tuned-oracle', 'ghost-tuned-refit'):
            continue  # made from ghost-tuned below
        start = time.time()
        torch.manual_seed(seed)
        if kind == 'narrow':
            width = task['narrow_widths'][init]
            net = build(model, 'regular', scale, width)
            _fine_tune(net, train_set, p_iters + f_iters, seed, None)
            record(arm, net, start, dict(width=width))
            continue
        if kind == 'regular':
            net = build(model, 'regular', scale)
            if init == 'parent':
                net.load_state_dict(parent)
                _fine_tune(net, train_set, f_iters, seed + 1000, None)
            else:
                _fine_tune(net, train_set, p_iters, seed, None)
                parent = {k: v.clone() for k, v in net.state_dict().items()}
            record(arm, net, start)
            continue
        bias = RECIPES[recipe]['zero_shift_bias'] if recipe else 1e-3
        per_channel = cheap_op == 'learnable-pc'
        net = build(model, 'ghost', scale,
                    cheap_op='learnable' if per_channel else cheap_op,
                    per_channel_shift=per_channel, zero_shift_bias=bias)
        if init == 'scratch':
            _fine_tune(net, train_set, p_iters + f_iters, seed, recipe)
        else:
            cluster_init(net, parent, seed=seed, method=init)
            _fine_tune(net, train_set, f_iters, seed + 1000, recipe)
        extra = None
        if cheap_op == 'learnable':
            _, extra = _offsets_and_oracle(net, val)
        record(arm, net, start, extra)
        tuned = extra
        if arm == 'ghost-tuned' and 'ghost-tuned-oracle' in task['all_arms']:
            start = time.time()
            inference, extra = _offsets_and_oracle(net, val, choose=True)
            extra = dict(extra, chosen=[
                layer.offsets[layer.ghost_channels][0].tolist()
                for _, layer in inference.ghost_layers()])
            record('ghost-tuned-oracle', inference, start, extra)
        if arm == 'ghost-tuned' and 'ghost-tuned-refit' in task['all_arms']:
            start = time.time()
            learned = [layer.current_offsets()
                       for _, layer in net.ghost_layers()]
            refit = build(model, 'ghost', scale, cheap_op='fixed')
            cluster_init(refit, parent, seed=seed, method='kmeans')
            for (_, layer), offsets in zip(refit.ghost_layers(), learned):
                layer.offsets.copy_(offsets)
            _fine_tune(refit, train_set, f_iters, seed + 1000, None)
            record('ghost-tuned-refit', refit, start,
                   dict(offsets=tuned['learned']))
    return results


def make_tasks(args, widths):
    """Two tasks per (model, scale, seed): the parent and the arms built
    on it, and the arms from scratch (about equal work)."""
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    scratch = [a for a in args.arms if a != 'parent' and (
        ARMS[a][0] == 'narrow' or ARMS[a][1] == 'scratch')]
    from_parent = [a for a in args.arms if a not in scratch]
    tasks = []
    for model in args.models:
        for scale in args.scales:
            for seed in args.seeds:
                for arms in (from_parent, scratch):
                    if arms:
                        tasks.append(dict(
                            model=model, scale=scale, seed=seed, arms=arms,
                            all_arms=args.arms, threads=threads,
                            parent_iters=args.parent_iters, iters=args.iters,
                            narrow_widths=widths[f'{model}_x{scale}']))
    return tasks


# -------------------------------------------------------------- reporting
def summarise(runs):
    """{(model, scale): {arm: dict(mean, std, n, params, flops, ...)}}"""
    groups = {}
    for r in runs:
        groups.setdefault((r['model'], r['scale']), {}).setdefault(
            r['arm'], []).append(r)
    out = {}
    for key, arms in groups.items():
        out[key] = {}
        for arm, rows in arms.items():
            psnrs = [r['psnr'] for r in rows]
            out[key][arm] = dict(
                mean=statistics.mean(psnrs),
                std=statistics.stdev(psnrs) if len(psnrs) > 1 else 0.0,
                n=len(psnrs), ssim=statistics.mean(r['ssim'] for r in rows),
                params=rows[0]['params'], flops=rows[0]['flops'],
                seeds={r['seed']: r['psnr'] for r in rows},
                rows=rows)
    return out


def paired(stats, a, b):
    """Mean and spread over seeds of PSNR(a) - PSNR(b), same seeds."""
    if a not in stats or b not in stats:
        return None
    seeds = sorted(set(stats[a]['seeds']) & set(stats[b]['seeds']))
    diffs = [stats[a]['seeds'][s] - stats[b]['seeds'][s] for s in seeds]
    if not diffs:
        return None
    return (statistics.mean(diffs),
            statistics.stdev(diffs) if len(diffs) > 1 else 0.0, len(diffs))


GOALS = [
    ('ghost-tuned', 'parent', 'ghost (tuned) - its regular parent', -0.10),
    ('ghost', 'parent', 'ghost (paper settings) - its regular parent', -0.10),
    ('ghost-tuned', 'copy', 'learned shift (tuned) - copy', 0.05),
    ('ghost', 'copy', 'learned shift (paper settings) - copy', 0.05),
    ('ghost-tuned-oracle', 'copy', 'oracle-chosen shift - copy', 0.05),
    ('ghost-tuned-pc', 'copy', 'per-channel learned shift (tuned) - copy',
     0.05),
    ('ghost-tuned', 'narrow-flops', 'ghost (tuned) - narrower regular at '
     'equal FLOPs', 0.10),
    ('copy', 'narrow-flops', 'copy - narrower regular at equal FLOPs', 0.10),
]


def markdown(result):
    lines = []
    cfg = result['config']
    for key, stats in result['summary'].items():
        model, scale = key.split('_x')
        info = result['complexity'][key]
        ghost_ms = info['models']['ghost']['latency_ms']
        reg_ms = info['models']['regular']['latency_ms']
        lines += [
            f'### {MODELS[model]["name"]} x{scale}',
            '',
            f'Bicubic: {result["bicubic"][f"x{scale}"]:.3f} dB. CPU latency '
            f'(3x128x128): regular {reg_ms:.1f} ms, ghost {ghost_ms:.1f} ms '
            f'(ratio {ghost_ms / reg_ms:.2f}).',
            '',
            '| arm | params | FLOPs (3x128x128) | Y-PSNR, mean ± sd (seeds)'
            ' | vs parent | offsets = oracle |',
            '|---|---|---|---|---|---|',
        ]
        for arm in ARMS:
            if arm not in stats:
                continue
            s = stats[arm]
            d = paired(stats, arm, 'parent') if arm != 'parent' else None
            width = s['rows'][0].get('width')
            label = ARMS[arm][4] + (f' ({WIDTH} {width})' if width else '')
            hits = [r.get('oracle_hits') for r in s['rows']]
            oracle = (' / '.join(f'{h}/{s["rows"][0]["layers"]}'
                                 for h in hits)
                      if None not in hits and arm != 'ghost-tuned-oracle'
                      else '')
            lines.append(
                f'| `{arm}`: {label} | {s["params"] / 1e3:.1f}K | '
                f'{s["flops"] / 1e9:.3f}G | {s["mean"]:.3f} ± {s["std"]:.3f}'
                f' ({s["n"]}) | '
                f'{"" if d is None else f"{d[0]:+.3f} ± {d[1]:.3f}"} | '
                f'{oracle} |')
        lines += ['', '| goal | measured (mean ± sd over seeds) | target |'
                  ' met |', '|---|---|---|---|']
        for a, b, text, target in GOALS:
            d = paired(stats, a, b)
            if d is None:
                continue
            lines.append(f'| {text} | {d[0]:+.3f} ± {d[1]:.3f} dB ({d[2]}) '
                         f'| ≥ {target:+.2f} dB | '
                         f'{"yes" if d[0] >= target else "no"} |')
        lines.append('')
    lines.append(
        f'Parent {cfg["parent_iters"]} iterations, fine-tune '
        f'{cfg["iters"]}; test photos: {", ".join(cfg["test_photos"])}. '
        f'{result["machine"]["cpu"]}, {result["machine"]["threads"]} '
        'threads.')
    return '\n'.join(lines)


def plot(result, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = list(result['summary'])
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 5),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        stats = result['summary'][key]
        for arm, s in stats.items():
            kind = ARMS[arm][0]
            marker = {'regular': 's', 'narrow': 'v', 'ghost': 'o'}[kind]
            ax.errorbar(s['flops'] / 1e9, s['mean'], yerr=s['std'],
                        fmt=marker, capsize=3, label=arm)
            ax.annotate(arm, (s['flops'] / 1e9, s['mean']), fontsize=7,
                        xytext=(4, 2), textcoords='offset points')
        model, scale = key.split('_x')
        ax.set_title(f'{MODELS[model]["name"]} x{scale}')
        ax.set_xlabel('GFLOPs (3x128x128 LR)')
        ax.set_ylabel('Y-PSNR on the test photos (dB)')
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    from ghostsr_mm.analysis import machine, results_path
    name = 'quality_cpu' + (f'_{args.tag}' if args.tag else '')
    out_json = results_path(args.out_dir, f'{name}.json', args.overwrite)
    out_png = results_path(args.out_dir, f'{name}.png', args.overwrite)
    import torch
    from quality_lib import (TEST_PHOTOS, TRAIN_PHOTOS, PairSet, evaluate,
                             load_photo)
    start = time.time()
    if args.report:  # what was measured, as it was measured: nothing re-run
        with open(args.report) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if not rows or 'measured' not in rows[0]:
            raise SystemExit(f'{args.report}: no measured complexity on its '
                             'first line; not a .runs.jsonl of this script')
        comp = rows[0]['measured']['complexity']
        bicubic = rows[0]['measured']['bicubic']
        runs = rows[1:]
    else:
        # Latency first, while nothing else runs.
        widths, comp = {}, {}
        for model in args.models:
            for scale in args.scales:
                key = f'{model}_x{scale}'
                comp[key] = complexity(model, scale)
                widths[key] = comp[key]['narrow_widths']
                print(f'{key}: narrow widths {widths[key]}', flush=True)
        bicubic = {f'x{s}': evaluate(None, PairSet(
            [load_photo(p) for p in TEST_PHOTOS], s))['psnr']
            for s in args.scales}
        tasks = make_tasks(args, widths)
        saved = out_json[:-len('.json')] + '.runs.jsonl'
        runs = []
        with mp.get_context('spawn').Pool(args.jobs) as pool, \
                open(saved, 'w') as log:
            log.write(json.dumps(dict(measured=dict(
                complexity=comp, bicubic=bicubic))) + '\n')
            for rows in pool.imap_unordered(run_task, tasks):
                runs += rows
                log.writelines(json.dumps(r) + '\n' for r in rows)
                log.flush()
    summary = summarise(runs)
    result = dict(
        config=dict(vars(args), train_photos=TRAIN_PHOTOS,
                    test_photos=TEST_PHOTOS, recipes=RECIPES,
                    flops_shape=FLOPS_SHAPE),
        machine=machine(),
        seconds=round(time.time() - start),
        bicubic=bicubic, complexity=comp,
        summary={f'{m}_x{s}': arms for (m, s), arms in summary.items()},
        runs=runs)
    text = markdown(result)
    print(text)
    with open(out_json, 'w') as f:
        json.dump(dict(result, summary={
            key: {arm: {k: v for k, v in st.items() if k != 'rows'}
                  for arm, st in arms.items()}
            for key, arms in result['summary'].items()}), f, indent=1)
    plot(result, out_png)
    print(f'wrote {out_json}, {out_png} '
          f'({result["seconds"]} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
