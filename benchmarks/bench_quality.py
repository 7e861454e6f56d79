"""Quality at CPU scale on real photos: GhostSR Tables 2 and 3 (ghost
against its regular parent, a copy, Ghost-DW, by-order initialisation,
training from scratch and narrower regular networks).

    python benchmarks/bench_quality.py [--models edsr carn] [--scales 2 4]
        [--seeds 0 1 2] [--parent-iters 2000] [--iters 1000]
        [--arms parent regular+ ghost ...] [--jobs 2] [--tag NAME]
        [--out-dir benchmarks/results] [--overwrite] [--report JSONL]

The photos, the training budget of each arm and why it trains in memory:
benchmarks/README.md, "Quality". Writes results/quality_cpu[_TAG].json, a
PSNR-versus-FLOPs plot (.png) and, while it runs, .runs.jsonl, from which
--report rebuilds the tables after an interrupted run.
"""
import argparse
import json
import multiprocessing as mp
import os
import os.path as osp
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
import ghostsr_mm  # noqa: E402,F401

# Natural photos shipped inside installed packages.
TRAIN_PHOTOS = ('skimage:coffee', 'skimage:rocket',
                'skimage:hubble_deep_field', 'skimage:retina',
                'skimage:immunohistochemistry', 'skimage:brick',
                'skimage:grass', 'skimage:gravel', 'skimage:camera',
                'skimage:coins', 'skimage:moon', 'sklearn:china.jpg')
TEST_PHOTOS = ('skimage:astronaut', 'skimage:chelsea',
               'skimage:stereo_motorcycle', 'sklearn:flower.jpg',
               'matplotlib:grace_hopper.jpg')
MAX_SIDE = 480
VAL_SHARE = 0.2
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
                        help='training processes (threads split evenly; '
                        '1: in this process)')
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
    if 'ghost-tuned-oracle' in args.arms:
        args.arms.append('ghost-tuned')
    if any(ARMS[a][1] in ('parent', 'kmeans', 'order') for a in args.arms):
        args.arms.append('parent')
    args.arms = [a for a in ARMS if a in args.arms]  # parent first
    if args.parent_iters < 1 or args.iters < 1 or args.jobs < 1:
        parser.error('--parent-iters, --iters and --jobs must be >= 1')
    return args


# ------------------------------------------------------------------ data
def load_photo(spec, max_side=None):
    """uint8 HxWx3 RGB of ``'<package>:<name>'``, its longer side at most
    ``max_side`` (default MAX_SIDE; area resize)."""
    import mmcv
    max_side = max_side or MAX_SIDE
    package, name = spec.split(':')
    if package == 'skimage':
        from skimage import data
        img = getattr(data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disp)
            img = img[0]
    elif package == 'sklearn':
        from sklearn.datasets import load_sample_image
        img = load_sample_image(name)
    else:
        from matplotlib import cbook
        import matplotlib.image as mpimg
        with cbook.get_sample_data(name) as f:
            img = mpimg.imread(f, format=name.rsplit('.', 1)[-1])
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = np.ascontiguousarray(img[..., :3])
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * (255 if img.max() <= 1 else 1)), 0,
                      255).astype(np.uint8)
    if max(img.shape[:2]) > max_side:
        img = mmcv.imrescale(img, max_side / max(img.shape[:2]),
                             interpolation='area')
    return img


class PairSet:
    """(LR, GT) of a list of uint8 images, as uint8 arrays and as [0, 1]
    float CHW tensors."""

    def __init__(self, images, scale):
        from ghostsr_mm.datasets import bicubic_downscale, mod_crop
        self.scale = scale
        self.gt = [mod_crop(img, scale) for img in images]
        self.lr = [bicubic_downscale(img, scale) for img in self.gt]
        self.gt_t, self.lr_t = ([
            torch.from_numpy(x).permute(2, 0, 1).float().div(255)
            for x in images
        ] for images in (self.gt, self.lr))


def split_photos(specs, scale):
    """Training and validation sets: the top 4/5 and the bottom 1/5 of each
    photo."""
    train, val = [], []
    for spec in specs:
        img = load_photo(spec)
        cut = int(img.shape[0] * (1 - VAL_SHARE))
        cut -= cut % scale
        train.append(img[:cut])
        val.append(img[cut:])
    return PairSet(train, scale), PairSet(val, scale)


def sample_batch(data, rng, batch=16, patch=24):
    """Random LR patches and their GT, with random flips and 90-degree
    rotations (the paper's augmentation)."""
    s = data.scale
    lrs, gts = [], []
    for _ in range(batch):
        i = int(rng.integers(len(data.gt)))
        lr, gt = data.lr_t[i], data.gt_t[i]
        y = int(rng.integers(lr.shape[1] - patch + 1))
        x = int(rng.integers(lr.shape[2] - patch + 1))
        lr = lr[:, y:y + patch, x:x + patch]
        gt = gt[:, y * s:(y + patch) * s, x * s:(x + patch) * s]
        k = int(rng.integers(4))
        if rng.random() < 0.5:
            lr, gt = lr.flip(-1), gt.flip(-1)
        lrs.append(lr.rot90(k, (1, 2)))
        gts.append(gt.rot90(k, (1, 2)))
    return torch.stack(lrs), torch.stack(gts)


def val_batches(data, size=48):
    """The validation photos as (LR, GT) batches of ``size`` LR tiles."""
    s = data.scale
    lrs, gts = [], []
    for lr, gt in zip(data.lr_t, data.gt_t):
        for y in range(0, lr.shape[1] - size + 1, size):
            for x in range(0, lr.shape[2] - size + 1, size):
                lrs.append(lr[:, y:y + size, x:x + size])
                gts.append(gt[:, y * s:(y + size) * s, x * s:(x + size) * s])
    lrs, gts = torch.stack(lrs), torch.stack(gts)
    return list(zip(lrs.split(16), gts.split(16)))


def quantize(t):
    """A [0, 1] CHW tensor as uint8 HWC RGB (as an SR output is saved)."""
    return (t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


@torch.no_grad()
def evaluate(model, data):
    """Mean Y-PSNR / SSIM (MMagic's metrics, border = scale) over
    ``data``; ``model=None`` is bicubic upsampling."""
    import mmcv
    from mmagic.evaluation.metrics.psnr import psnr
    from mmagic.evaluation.metrics.ssim import ssim
    psnrs, ssims = [], []
    for lr, lr_t, gt in zip(data.lr, data.lr_t, data.gt):
        if model is None:
            sr = mmcv.imresize(lr, gt.shape[1::-1], interpolation='bicubic')
        else:
            sr = quantize(model.eval()(lr_t[None])[0])
        psnrs.append(psnr(sr, gt, data.scale, convert_to='Y'))
        ssims.append(ssim(sr, gt, data.scale, convert_to='Y'))
    return dict(psnr=float(np.mean(psnrs)), ssim=float(np.mean(ssims)))


# ---------------------------------------------------------------- models
def build(model, kind, scale, width=None, **ghost_args):
    from mmagic.registry import MODELS as REGISTRY
    spec = MODELS[model]
    args = dict(spec['args'], upscale_factor=scale)
    if width is not None:
        args[WIDTH] = width
    if kind == 'ghost':
        return REGISTRY.build(dict(type=spec['ghost'], **args, **ghost_args))
    return REGISTRY.build(dict(type=spec['regular'], **args))


def complexity(model, scale):
    """Params, FLOPs of the regular and ghost models and every narrower
    width, the CPU latency of each (3x128x128 LR, median of interleaved
    repeats), and the narrow widths matching the ghost model."""
    from ghostsr_mm.analysis import (count_flops, count_params,
                                     interleaved_median_times)
    from ghostsr_mm.models.layers import convert_to_inference
    widths = list(range(8, MODELS[model]['args'][WIDTH], 2))
    nets = {'regular': build(model, 'regular', scale),
            'ghost': convert_to_inference(build(model, 'ghost', scale))}
    for w in widths:
        nets[f'w{w}'] = build(model, 'regular', scale, w)
    for net in nets.values():  # measured and timed as deployed
        net.eval()
    info = {n: dict(params=count_params(m), flops=count_flops(m, FLOPS_SHAPE))
            for n, m in nets.items()}
    x = torch.rand(1, *FLOPS_SHAPE)
    with torch.inference_mode():
        times = interleaved_median_times(
            {n: (lambda m=m: m(x)) for n, m in nets.items()},
            repeats=15)
    for n in nets:
        info[n]['latency_ms'] = times[n] * 1e3
    ghost, match = info['ghost'], {}
    for key, metric in (('flops', 'flops'), ('params', 'params'),
                        ('latency', 'latency_ms')):
        fit = [w for w in widths if info[f'w{w}'][metric] <= ghost[metric]]
        match[key] = max(fit) if fit else min(widths)
    return dict(models=info, narrow_widths=match)


# -------------------------------------------------------------- training
def train(net, data, iters, seed, recipe=None, lr=2e-4):
    """Adam (0.9, 0.999, 1e-8) with a cosine decay to 0 over ``iters``, L1
    loss; with a learnable-shift ``recipe``, W' at its LR multiple and the
    Gumbel noise decayed over its epochs (GumbelAnnealHook's schedule)."""
    from ghostsr_mm.engine.hooks.gumbel_anneal_hook import gumbel_epoch
    from ghostsr_mm.models.layers import ghost_layers
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = [layer for _, layer in ghost_layers(net)
              if layer.cheap_op == 'learnable']
    recipe = RECIPES[recipe] if recipe and layers else None
    logits = [p for n, p in net.named_parameters()
              if n.endswith('shift_logits')]
    groups = [dict(params=[p for n, p in net.named_parameters()
                           if not n.endswith('shift_logits')])]
    if logits:
        mult = recipe['logit_lr_mult'] if recipe else 1.0
        groups.append(dict(params=logits, lr=lr * mult))
    opt = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    interval = max(1, iters // recipe['epochs']) if recipe else None
    net.train()
    for it in range(iters):
        for layer in layers if recipe else ():
            layer.gumbel_epoch = gumbel_epoch(it, interval)
        x, y = sample_batch(data, rng)
        loss = F.l1_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def offsets_and_oracle(net, val, choose=False):
    from ghostsr_mm.analysis.shift_oracle import shift_oracle
    from ghostsr_mm.models.layers import convert_to_inference
    inference = convert_to_inference(net)
    oracle = shift_oracle(inference, val, choose=choose)
    return inference, dict(
        learned=[list(o.learned) for o in oracle],
        best=[list(o.best) for o in oracle],
        oracle_hits=sum(o.learned == o.best for o in oracle),
        layers=len(oracle))


def run_task(task):
    """One (model, scale, seed) group of arms, in a worker process."""
    from ghostsr_mm.analysis import count_flops, count_params
    from ghostsr_mm.models.clustering import cluster_init
    torch.set_num_threads(task['threads'])
    model, scale, seed = task['model'], task['scale'], task['seed']
    train_set, val_set = split_photos(TRAIN_PHOTOS, scale)
    test_set = PairSet([load_photo(s) for s in TEST_PHOTOS], scale)
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
        if arm == 'ghost-tuned-oracle':
            continue  # made from ghost-tuned below
        start, extra = time.time(), None
        torch.manual_seed(seed)
        if kind == 'narrow':
            width = task['narrow_widths'][init]
            net = train(build(model, 'regular', scale, width), train_set,
                        p_iters + f_iters, seed)
            extra = dict(width=width)
        elif kind == 'regular' and init == 'parent':
            net = build(model, 'regular', scale)
            net.load_state_dict(parent)
            train(net, train_set, f_iters, seed + 1000)
        elif kind == 'regular':
            net = train(build(model, 'regular', scale), train_set, p_iters,
                        seed)
            parent = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            net = build(model, 'ghost', scale,
                        cheap_op=cheap_op.replace('-pc', ''),
                        per_channel_shift=cheap_op == 'learnable-pc',
                        zero_shift_bias=RECIPES[recipe]['zero_shift_bias']
                        if recipe else 1e-3)
            if init == 'scratch':
                train(net, train_set, p_iters + f_iters, seed, recipe)
            else:
                cluster_init(net, parent, seed=seed, method=init)
                train(net, train_set, f_iters, seed + 1000, recipe)
            if cheap_op == 'learnable':
                extra = offsets_and_oracle(net, val_batches(val_set))[1]
        record(arm, net, start, extra)
        if arm == 'ghost-tuned' and 'ghost-tuned-oracle' in task['all_arms']:
            start = time.time()
            inference, extra = offsets_and_oracle(
                net, val_batches(val_set), choose=True)
            extra['chosen'] = [
                layer.offsets[layer.ghost_channels][0].tolist()
                for _, layer in inference.ghost_layers()]
            record('ghost-tuned-oracle', inference, start, extra)
    return results


def make_tasks(args, widths):
    """Two tasks per (model, scale, seed): the parent and the arms built
    on it, and the arms from scratch (about equal work)."""
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    scratch = [a for a in args.arms if a != 'parent' and (
        ARMS[a][0] == 'narrow' or ARMS[a][1] == 'scratch')]
    from_parent = [a for a in args.arms if a not in scratch]
    return [dict(model=model, scale=scale, seed=seed, arms=arms,
                 all_arms=args.arms, threads=threads,
                 parent_iters=args.parent_iters, iters=args.iters,
                 narrow_widths=widths[f'{model}_x{scale}'])
            for model in args.models for scale in args.scales
            for seed in args.seeds for arms in (from_parent, scratch) if arms]


# -------------------------------------------------------------- reporting
def summarise(runs):
    """{'<model>_x<scale>': {arm: dict(mean, std, n, ssim, params, flops,
    seeds, rows)}}"""
    groups = {}
    for r in runs:
        groups.setdefault(f'{r["model"]}_x{r["scale"]}', {}).setdefault(
            r['arm'], []).append(r)
    return {key: {arm: dict(
        mean=statistics.mean(r['psnr'] for r in rows),
        std=statistics.stdev([r['psnr'] for r in rows])
        if len(rows) > 1 else 0.0,
        n=len(rows), ssim=statistics.mean(r['ssim'] for r in rows),
        params=rows[0]['params'], flops=rows[0]['flops'],
        seeds={r['seed']: r['psnr'] for r in rows}, rows=rows)
        for arm, rows in arms.items()} for key, arms in groups.items()}


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
        info = result['complexity'][key]['models']
        ghost_ms, reg_ms = (info[n]['latency_ms'] for n in ('ghost',
                                                            'regular'))
        lines += [
            f'### {MODELS[model]["name"]} x{scale}', '',
            f'Bicubic: {result["bicubic"][f"x{scale}"]:.3f} dB. CPU latency '
            f'(3x128x128): regular {reg_ms:.1f} ms, ghost {ghost_ms:.1f} ms '
            f'(ratio {ghost_ms / reg_ms:.2f}).', '',
            '| arm | params | FLOPs (3x128x128) | Y-PSNR, mean ± sd (seeds)'
            ' | vs parent | offsets = oracle |', '|---|---|---|---|---|---|',
        ]
        for arm in (a for a in ARMS if a in stats):
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
            if d is not None:
                lines.append(
                    f'| {text} | {d[0]:+.3f} ± {d[1]:.3f} dB ({d[2]}) | '
                    f'≥ {target:+.2f} dB | {"yes" if d[0] >= target else "no"}'
                    ' |')
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
        for arm, s in result['summary'][key].items():
            marker = {'regular': 's', 'narrow': 'v', 'ghost': 'o'}[
                ARMS[arm][0]]
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


def measure(args, saved):
    """Complexity and latency (first, while nothing else runs), bicubic,
    then every task; the machine and each result are appended to ``saved``
    as they come."""
    from ghostsr_mm.analysis import machine
    comp = {f'{m}_x{s}': complexity(m, s)
            for m in args.models for s in args.scales}
    bicubic = {f'x{s}': evaluate(None, PairSet(
        [load_photo(p) for p in TEST_PHOTOS], s))['psnr']
        for s in args.scales}
    tasks = make_tasks(args, {k: c['narrow_widths'] for k, c in comp.items()})
    runs = []
    with open(saved, 'w') as log:
        measured = dict(machine=machine(), complexity=comp, bicubic=bicubic)
        log.write(json.dumps(dict(measured=measured)) + '\n')
        if args.jobs == 1:
            done = map(run_task, tasks)
        else:
            pool = mp.get_context('spawn').Pool(args.jobs)
            done = pool.imap_unordered(run_task, tasks)
        for rows in done:
            runs += rows
            log.writelines(json.dumps(r) + '\n' for r in rows)
            log.flush()
        if args.jobs > 1:
            pool.close()
            pool.join()
    return measured, runs


def main(argv=None):
    args = parse_args(argv)
    from ghostsr_mm.analysis import results_path
    name = 'quality_cpu' + (f'_{args.tag}' if args.tag else '')
    out_json = results_path(args.out_dir, f'{name}.json', args.overwrite)
    out_png = results_path(args.out_dir, f'{name}.png', args.overwrite)
    start = time.time()
    if args.report:  # what was measured, as it was measured: nothing re-run
        with open(args.report) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if not rows or set(rows[0].get('measured', ())) != {
                'machine', 'complexity', 'bicubic'}:
            raise SystemExit(f'{args.report}: no measured machine, '
                             'complexity and bicubic on its first line; not '
                             'a .runs.jsonl of this script')
        measured, runs = rows[0]['measured'], rows[1:]
    else:
        measured, runs = measure(args,
                                 out_json[:-len('.json')] + '.runs.jsonl')
    result = dict(
        config=dict(vars(args), train_photos=TRAIN_PHOTOS,
                    test_photos=TEST_PHOTOS, recipes=RECIPES,
                    flops_shape=FLOPS_SHAPE),
        seconds=round(time.time() - start), **measured,
        summary=summarise(runs), runs=runs)
    text = markdown(result)
    print(text)
    with open(out_json, 'w') as f:
        json.dump(dict(result, summary={
            key: {arm: {k: v for k, v in st.items() if k != 'rows'}
                  for arm, st in arms.items()}
            for key, arms in result['summary'].items()}), f, indent=1)
    plot(result, out_png)
    print(f'wrote {out_json}, {out_png} ({result["seconds"]} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
