"""ClassSR on large photos: FLOPs, CPU time and PSNR against the network
it accelerates, in one run (ClassSR Table 1 at CPU scale), and with ghost
branches.

    python benchmarks/bench_classsr.py [--iters 1600]
        [--classifier-iters 10000] [--joint-iters 100] [--joint-lr 1e-5]
        [--ghost-iters 300] [--ghost-upsampler none|first|all]
        [--label-by psnr|gain] [--widths 32 48 64]
        [--branch-init original|scratch] [--average-loss paper|official]
        [--flops-target R] [--ghost-flops-target R]
        [--calibrate-on train|test]
    python benchmarks/bench_classsr.py --width-latency [--repeats 5]
        [--repeats 5] [--cache DIR] [--out-dir benchmarks/results]
        [--tag NAME] [--overwrite]

x4, ClassSR-CARN-M (branches CARN-M of width 32 / 48 / 64; the paper's
36 / 52 / 64 with --widths 36 52 64: on this CPU a width-36 CARN-M takes
0.51 of width 64's time for 0.33 of its FLOPs, width 32 0.36 for 0.26, see
benchmarks/README.md). Test photos:
the right halves of the two largest photos shipped in the installed
packages, scikit-image's retina (1411x1411) and hubble_deep_field
(1000x872), x4 bicubic LR. Training photos: their left halves and the
other package photos (benchmarks/quality_lib.py: the training and test
photos of bench_quality.py, longer side 480). The recipe is the paper's,
shortened:
  0. CARN-M (width 64) trained on all photos: the reference that labels
     sub-images;
  1. LR 32x32 sub-images (step 16) labelled simple / medium / hard by the
     reference's PSNR on them (thirds; --label-by gain: by its gain over
     bicubic, the smallest third simple);
  2. each branch initialised from the reference (cut to its width by
     narrowed_state_dict, the first channels of each group) and trained on
     its class; the original network ("-O") that ClassSR accelerates is the
     reference trained as long again on all photos, so that every network
     has had the same number of steps (--branch-init scratch: branches
     from scratch, and the reference is the original);
  3. the classifier, branches frozen (L1 : Class-Loss : Average-Loss =
     2000 : 1 : 6), on the branches' outputs computed once, so that its
     10000 steps take about two minutes (with 300 steps the classifier stays
     far from the routing its branches allow: see the perfect routing
     below);
  4. everything together.
Ghost variant: each branch becomes a GhostCARN-M, initialised by clustering
from the trained branch and fine-tuned on its class with the learned shift
(tuned recipe of bench_quality.py), under the classifier of stage 4. Its
ghost layers: the blocks' 3x3 group convs, and with --ghost-upsampler the
first or both convs of the x4 upsampler (a GhostCARN-M x4 costs 0.85 of
CARN-M's FLOPs without them, 0.69 with both; the 1x1 convs, a third of
CARN-M's FLOPs, stay regular as in the paper).
Adam, cosine decay, L1; batches of 16 (LR patches of 16 pixels in stages 0
and 2, whole sub-images otherwise) with flips and rotations.

Test: every model runs in 32x32 LR tiles with overlap 2 (the paper's stride
28), 64 tiles per step, blended; PSNR on RGB and on Y with MMagic's metric
(border 4); FLOPs per tile (multiply-accumulates, classifier included) over
the original's; CPU time of the whole photo, median of interleaved repeats,
and its ratio to the original in the same rounds. Also each branch alone
on every tile, and the "perfect routing": the same FLOPs per photo spent
by the tiles' true errors (each tile to the branch minimising its squared
error + lambda x FLOPs), what these branches reach under a perfect
classifier; the gap to it is the classifier's, the rest the branches'.
--flops-target R routes ClassSR (and its ghost variant, with the same
penalty) by log P_k - penalty x FLOPs_k / FLOPs_hard, the penalty
calibrated (calibrate_cost_penalty) so that the routing of the large
photos' training halves, LR only, costs R of the hard branch; with
--calibrate-on test, of the test photos' LR (no ground truth), as
tools/infer.py --flops-budget R calibrates on the images it is given.
--ghost-flops-target R calibrates the ghost variant on its own, so that
its routing costs R of the original's FLOPs.

--width-latency only times untrained CARN-M branches of each width
(regular, and ghost as its inference graph) on one step of 64 tiles,
interleaved, against width 64: FLOPs and CPU time ratios, written to
classsr_cpu_widths[_TAG].{md,json}.

Writes Markdown to stdout and benchmarks/results/classsr_cpu[_TAG].md, the
figures to classsr_cpu[_TAG].json and the routing of the retina photo to
classsr_cpu[_TAG]_routing.png. Trained weights are kept in --cache (default
<out-dir>/classsr_cache), each stage reused by a later run whose settings
for it and the stages before it are the same.
"""
import argparse
import json
import os
import os.path as osp
import platform
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

SCALE = 4
TILE, OVERLAP, BATCH = 32, 2, 64
# A ghost layer's intrinsic channels must be a multiple of CARN-M's 4
# groups: the ghost ratio of each width nearest 0.5 that allows it, in the
# blocks (width channels) and in the x4 upsampler (4 x width); width 52:
# 28 intrinsic channels of 52, 112 of 208.
GHOST_RATIOS = {32: 0.5, 36: 0.45, 48: 0.5, 52: 0.4616, 64: 0.5}
TEST_PHOTOS = ('skimage:retina', 'skimage:hubble_deep_field')
LOSS_WEIGHTS = (2000.0, 1.0, 6.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=1600,
                        help='iterations of the original and of each branch')
    parser.add_argument('--classifier-iters', type=int, default=10000,
                        help='iterations of stage 3 (each costs only the '
                        'classifier)')
    parser.add_argument('--joint-iters', type=int, default=100)
    parser.add_argument('--joint-lr', type=float, default=1e-5,
                        help='learning rate of stage 4 (Adam takes steps of '
                        'about this size even for a branch the classifier '
                        'rarely picks, whose gradients are tiny)')
    parser.add_argument('--ghost-iters', type=int, default=300)
    parser.add_argument('--ghost-upsampler', default='none',
                        choices=['none', 'first', 'all'],
                        help='ghost convs in the ghost branches\' x4 '
                        'upsampler: none, the first (at the LR size) or '
                        'both (the second, at twice the size, costs 4x); '
                        'both cost 0.3-3.7 dB per branch after 300 '
                        'steps, see benchmarks/README.md')
    parser.add_argument('--label-by', default='psnr',
                        choices=['psnr', 'gain'],
                        help="classes by the original's PSNR (the paper: "
                        'the highest third simple) or by its gain over '
                        'bicubic (the smallest third simple), as '
                        'tools/classsr_prepare.py')
    parser.add_argument('--widths', type=int, nargs=3, default=[32, 48, 64],
                        choices=sorted(GHOST_RATIOS),
                        help='CARN-M widths of the simple, medium and hard '
                        'branches (the original is width 64)')
    parser.add_argument('--branch-init', default='original',
                        choices=['original', 'scratch'],
                        help='branches start from the reference cut to '
                        'their width, or from scratch')
    parser.add_argument('--average-loss', default='paper',
                        choices=['paper', 'official'],
                        help="the Average-Loss in the paper's form, or "
                        "divided by 4B/M as the official code")
    parser.add_argument('--flops-target', type=float, default=None,
                        help='route with the cost penalty that brings the '
                        'routing of the calibration images (--calibrate-on) '
                        'to this FLOPs ratio (calibrate_cost_penalty; LR '
                        "only); default: the paper's most probable branch")
    parser.add_argument('--ghost-flops-target', type=float, default=None,
                        help='route the ghost variant with its own cost '
                        'penalty, calibrated so that its routing costs '
                        "this share of the original's FLOPs (default: "
                        "ClassSR's penalty)")
    parser.add_argument('--calibrate-on', default='train',
                        choices=['train', 'test'],
                        help='the calibration images of --flops-target and '
                        "--ghost-flops-target: the large photos' training "
                        'halves, or the test halves '
                        'themselves (LR only, as tools/infer.py '
                        '--flops-budget does on the images it runs on)')
    parser.add_argument('--width-latency', action='store_true',
                        help='only time the branches of every width')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed rounds per photo')
    parser.add_argument('--max-side', type=int, default=None,
                        help='shrink the test photos (smoke runs)')
    parser.add_argument('--cache', default=None)
    parser.add_argument('--out-dir', default=osp.join(ROOT, 'benchmarks',
                                                      'results'))
    parser.add_argument('--tag', default='')
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    if args.calibrate_on != 'train' and args.flops_target is None and \
            args.ghost_flops_target is None:
        parser.error('--calibrate-on calibrates a budget: give '
                     '--flops-target or --ghost-flops-target too')
    return args


# ------------------------------------------------------------------ data
class SubImages:
    """LR/GT sub-image tensors, shaped like quality_lib.PairSet for
    sample_batch."""

    def __init__(self, lr, gt):
        self.scale = SCALE
        self.lr_t, self.gt_t = list(lr), list(gt)

    def __len__(self):
        return len(self.lr_t)


def cut_sub_images(pairs, size=TILE, step=16):
    """(N, 3, size, size) LR and (N, 3, s*size, s*size) GT sub-images of
    every photo, the last row and column flush with the border."""
    import torch
    from ghostsr_mm.datasets import crop_starts
    lrs, gts = [], []
    for lr, gt in zip(pairs.lr_t, pairs.gt_t):
        for y in crop_starts(lr.shape[1], size, step):
            for x in crop_starts(lr.shape[2], size, step):
                lrs.append(lr[:, y:y + size, x:x + size])
                gts.append(gt[:, y * SCALE:(y + size) * SCALE,
                              x * SCALE:(x + size) * SCALE])
    return torch.stack(lrs), torch.stack(gts)


def carn_m(width, ghost=False, upsampler='none', **ghost_args):
    """CARN-M x4 of ``width``; ``ghost``: GhostCARN-M, whose x4 upsampler
    has no ghost conv ('none'), its first ('first') or both ('all')."""
    import ghostsr_mm  # noqa: F401
    from mmagic.registry import MODELS
    args = dict(mid_channels=width, upscale_factor=SCALE, efficient=True)
    if ghost:
        if upsampler != 'none':
            ghost_args.update(ghost_upsamplers=(f'x{SCALE}', ),
                              ghost_upsampler_convs=upsampler)
        return MODELS.build(dict(type='GhostCARNNet', **args,
                                 ratio=GHOST_RATIOS[width], **ghost_args))
    return MODELS.build(dict(type='CARNNet', **args))


def augment(*tensors, rng):
    """The same random flip and rotation of every tensor's last two
    dimensions."""
    k = int(rng.integers(4))
    flip = rng.random() < 0.5
    return [(t.flip(-1) if flip else t).rot90(k, (-2, -1)) for t in tensors]


def classsr_loss(official):
    """ClassSR's loss on a batch: L1 of the mixture, Class-Loss and
    Average-Loss (LOSS_WEIGHTS)."""
    import torch.nn.functional as F
    from ghostsr_mm.models.losses import AverageLoss, ClassLoss
    w_pix, w_class, w_avg = LOSS_WEIGHTS
    class_loss = ClassLoss(w_class)
    average_loss = AverageLoss(w_avg, normalize=official)
    return lambda sr, y, probs: (w_pix * F.l1_loss(sr, y) +
                                 class_loss(probs) + average_loss(probs))


def fit_classsr(params, forward, data, iters, seed, lr_rate, official):
    """Adam steps (cosine decay) of ``params`` under ClassSR's loss, on
    batches of 16 drawn from ``data``, tensors of equal length flipped and
    rotated alike: the LR input, the GT, then any extra that ``forward(x,
    *extra) -> (sr, probs)`` takes."""
    import numpy as np
    import torch
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    loss_fn = classsr_loss(official)
    opt = torch.optim.Adam(params, lr=lr_rate, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, 1e-7)
    for _ in range(iters):
        idx = torch.from_numpy(rng.choice(len(data[0]), 16, replace=False))
        x, y, *extra = augment(*(t[idx] for t in data), rng=rng)
        sr, probs = forward(x, *extra)
        loss = loss_fn(sr, y, probs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def train_classsr(net, lr, gt, iters, seed, lr_rate, official=False):
    """Stage 4: every parameter learns under ClassSR's losses, on whole
    sub-images, batches of 16."""
    net.train()
    fit_classsr(net.parameters(), lambda x: net(x, return_probs=True),
                (lr, gt), iters, seed, lr_rate, official)
    return net.eval()


def train_classifier(net, lr, gt, iters, seed, lr_rate, official=False):
    """Stage 3: only the classifier learns, under ClassSR's losses, batches
    of 16. The branches are frozen, so their outputs are computed once per
    sub-image (memory: 3 x the GT sub-images) and each step costs only the
    classifier; a flipped or rotated sub-image uses its outputs flipped or
    rotated the same way (the branches were trained with those
    augmentations)."""
    import torch
    net.eval()
    with torch.no_grad():
        outs = torch.stack([
            torch.cat([b(lr[i:i + BATCH]) for i in range(0, len(lr), BATCH)])
            for b in net.branches
        ], 1)  # (N, branches, C, H, W)

    def mixture(x, o):
        probs = net.classifier(x).softmax(dim=1)
        return (probs[:, :, None, None, None] * o).sum(1), probs

    net.classifier.train()
    fit_classsr(net.classifier.parameters(), mixture, (lr, gt, outs), iters,
                seed, lr_rate, official)
    return net.eval()


class Cache:
    """Trained weights by stage, in files named after the settings the
    stage and the stages before it were trained with, so a later run reuses
    every stage whose settings did not change."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def run(self, name, key, net, train):
        import hashlib
        import torch
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode())
        path = osp.join(self.folder, f'{name}-{digest.hexdigest()[:12]}.pth')
        start = time.time()
        if osp.exists(path):
            net.load_state_dict(torch.load(path, weights_only=True))
            print(f'{name}: loaded from {path}', flush=True)
        else:
            train()
            torch.save(net.state_dict(), path)
            print(f'{name}: trained in {time.time() - start:.0f} s',
                  flush=True)
        return net.eval()


# --------------------------------------------------------------- training
def build_models(args, train_pairs):
    """The original CARN-M, ClassSR-CARN-M, and its ghost variant."""
    import torch
    from bench_quality import _fine_tune
    from quality_lib import train

    from ghostsr_mm.datasets import label_by_psnr, sub_image_psnrs
    from ghostsr_mm.models import ClassSRNet, narrowed_state_dict
    from ghostsr_mm.models.clustering import cluster_init
    from ghostsr_mm.models.layers import convert_to_inference
    cache = Cache(args.cache)
    key = dict(iters=args.iters,
               photos=[list(t.shape) for t in train_pairs.lr_t])
    reference_net = carn_m(64)
    reference = cache.run('original', key, reference_net, lambda: train(
        reference_net, train_pairs, args.iters, 0, lr=1e-3, patch=16))
    original = reference
    if args.branch_init == 'original':  # as many steps as each branch
        original = carn_m(64)
        original.load_state_dict(reference.state_dict())
        cache.run('original-continued', key, original, lambda: train(
            original, train_pairs, args.iters, 3, lr=1e-3, patch=16))
    lr, gt = cut_sub_images(train_pairs)
    psnrs = sub_image_psnrs(lr, gt, SCALE, reference, BATCH)
    scores = psnrs
    if args.label_by == 'gain':
        # Scores rank higher as simpler: minus the gain over bicubic.
        bicubic = sub_image_psnrs(lr, gt, SCALE, None, BATCH)
        scores = [b - p for p, b in zip(psnrs, bicubic)]
    labels = label_by_psnr({i: p for i, p in enumerate(scores)})
    classes = torch.tensor([labels[i] for i in range(len(psnrs))])
    # (the stages cached before these settings existed stay valid)
    if args.label_by != 'psnr':
        key = dict(key, label_by=args.label_by)
    if args.branch_init != 'scratch' or args.widths != [36, 52, 64]:
        key = dict(key, widths=args.widths, branch_init=args.branch_init)
    branches = []
    for k, width in enumerate(args.widths):
        members = SubImages(lr[classes == k], gt[classes == k])
        net = carn_m(width)

        def fit(net=net, members=members, k=k):
            if args.branch_init == 'original':
                net.load_state_dict(
                    narrowed_state_dict(reference.state_dict(), net))
            train(net, members, args.iters, k, lr=1e-3, patch=16)

        branches.append(cache.run(f'branch{k}', key, net, fit))
    classsr = ClassSRNet(branches)
    # (stage 3 on the branches' outputs computed once)
    key = dict(key, classifier=args.classifier_iters, outputs_once=True)
    official = args.average_loss == 'official'
    if official:
        key = dict(key, average_loss=args.average_loss)
    cache.run('classifier', key, classsr, lambda: train_classifier(
        classsr, lr, gt, args.classifier_iters, 1, 1e-3, official))
    key = dict(key, joint=args.joint_iters, joint_lr=args.joint_lr)
    cache.run('joint', key, classsr, lambda: train_classsr(
        classsr, lr, gt, args.joint_iters, 2, args.joint_lr, official))
    key = dict(key, ghost=args.ghost_iters)
    if args.ghost_upsampler != 'none':
        key = dict(key, ghost_upsampler=args.ghost_upsampler)
    ghosts = []
    for k, (width, branch) in enumerate(zip(args.widths,
                                            classsr.branches)):
        members = SubImages(lr[classes == k], gt[classes == k])
        ghost = carn_m(width, ghost=True, upsampler=args.ghost_upsampler,
                       zero_shift_bias=1.0)

        def fine_tune(ghost=ghost, branch=branch, members=members):
            cluster_init(ghost, branch.state_dict(), seed=k)
            _fine_tune(ghost, members, args.ghost_iters, k, 'tuned')

        ghosts.append(convert_to_inference(
            cache.run(f'ghost{k}', key, ghost, fine_tune)))
    ghost_classsr = ClassSRNet(ghosts).eval()
    ghost_classsr.classifier.load_state_dict(
        classsr.classifier.state_dict())
    shares = torch.bincount(classes, minlength=3).tolist()
    return original, classsr, ghost_classsr, dict(
        sub_images=len(psnrs), class_sizes=shares, label_by=args.label_by,
        score_thresholds=[min(p for p, c in zip(scores, classes) if c == k)
                          for k in range(2)])


# ------------------------------------------------------------- evaluation
def evaluate(args, models, photos):
    import numpy as np
    import torch
    from mmagic.evaluation.metrics.psnr import psnr
    from quality_lib import quantize

    from ghostsr_mm.analysis import (count_flops, interleaved_times,
                                     median_times, paired_ratio)  # noqa
    from ghostsr_mm.apis import (branch_flops, routed_inference,
                                 routing_flops, tiled_inference)
    original, classsr, ghost_classsr = models
    base_flops = count_flops(original, (3, TILE, TILE))
    costs = {'ClassSR': branch_flops(classsr, TILE),
             'ClassSR-ghost': branch_flops(ghost_classsr, TILE)}

    runs = {
        'original': lambda lr: (tiled_inference(
            original, lr, TILE, OVERLAP, BATCH, blend=True), None),
        'ClassSR': lambda lr: routed_inference(classsr, lr, TILE, OVERLAP,
                                               BATCH),
        'ClassSR-ghost': lambda lr: routed_inference(
            ghost_classsr, lr, TILE, OVERLAP, BATCH),
    }
    rows, pictures = [], {}
    for name, pair in photos.items():
        lr, gt = pair
        row = dict(photo=name, lr_size=list(lr.shape[-2:]), models={})
        with torch.inference_mode():
            times = interleaved_times(
                {m: (lambda f=f: f(lr)) for m, f in runs.items()},
                repeats=args.repeats, warmup=1)
            medians = median_times(times)
            for m, f in runs.items():
                sr, classes = f(lr)
                out = quantize(sr[0])
                ref = quantize(gt[0])
                entry = dict(
                    psnr_rgb=float(psnr(out, ref, SCALE)),
                    psnr_y=float(psnr(out, ref, SCALE, convert_to='Y')),
                    seconds=medians[m], times=times[m],
                    time_ratio=paired_ratio(times, m, 'original'))
                if classes is None:
                    entry.update(flops_ratio=1.0, tiles=None)
                else:
                    counts = torch.bincount(classes[0], minlength=3)
                    cost = routing_flops(counts.tolist(), costs[m])
                    entry.update(flops_ratio=cost['flops'] / base_flops,
                                 shares=cost['shares'],
                                 tiles=int(counts.sum()))
                    pictures[name, m] = classes
                row['models'][m] = entry
            # Each branch alone on every tile: where the routing loses.
            row['branches'] = {
                m: [float(psnr(quantize(tiled_inference(
                    b, lr, TILE, OVERLAP, BATCH, blend=True)[0]),
                    quantize(gt[0]), SCALE)) for b in net.branches]
                for m, net in (('ClassSR', classsr),
                               ('ClassSR-ghost', ghost_classsr))
            }
            # The same FLOPs routed by the tiles' true errors: what a
            # perfect classifier would reach with these branches.
            row['oracle'] = {}
            for m, net in (('ClassSR', classsr),
                           ('ClassSR-ghost', ghost_classsr)):
                e = row['models'][m]
                budget = (e['flops_ratio'] * base_flops -
                          costs[m]['classifier'])
                classes, sr = oracle_routing(net, lr, gt, budget)
                cost = routing_flops(
                    torch.bincount(classes, minlength=3).tolist(), costs[m])
                row['oracle'][m] = dict(
                    psnr_rgb=float(psnr(quantize(sr[0]), quantize(gt[0]),
                                        SCALE)),
                    flops_ratio=cost['flops'] / base_flops,
                    shares=cost['shares'], tiles=len(classes))
        rows.append(row)
    return rows, pictures, dict(
        original=base_flops, **{m: c for m, c in costs.items()})


def oracle_routing(net, lr, gt, budget):
    """The routing of ``lr``'s tiles that knows their true errors: per
    tile the branch minimising its squared error plus lambda times its
    FLOPs, lambda the smallest that keeps the average branch FLOPs within
    ``budget`` (bisection). What these branches reach at that cost under a
    perfect classifier. Returns (classes, SR image)."""
    import torch
    from ghostsr_mm.apis import branch_flops, tile_layout, tiled_inference
    layout = tile_layout(*lr.shape[-2:], TILE, OVERLAP)
    flops = torch.tensor(branch_flops(net, TILE)['branches'],
                         dtype=torch.float32)
    errors = []
    for first in range(0, len(layout), BATCH):
        group = layout[first:first + BATCH]
        x = torch.stack([lr[0, :, y:y + TILE, x:x + TILE]
                         for (y, x), _ in group])
        y = torch.stack([
            gt[0, :, SCALE * y:SCALE * (y + TILE),
               SCALE * x:SCALE * (x + TILE)] for (y, x), _ in group
        ])
        errors.append(torch.stack(
            [(b(x) - y).pow(2).flatten(1).sum(1) for b in net.branches], 1))
    errors = torch.cat(errors).double()

    def pick(lam):
        return (errors + lam * flops.double()).argmin(1)

    low, high = 0.0, 1.0
    while flops[pick(high)].mean() > budget:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (low, mid) if flops[pick(mid)].mean() <= budget \
            else (mid, high)
    classes = pick(high)
    batches = iter(classes.split(BATCH))
    sr = tiled_inference(lambda x: net.route(x, next(batches)), lr, TILE,
                         OVERLAP, BATCH, blend=True)
    return classes, sr


def totals(rows):
    """Every tile of the test set counted once: FLOPs ratio and shares
    over all tiles, mean PSNR and summed time over the photos."""
    import statistics
    out = {}
    for m in rows[0]['models']:
        entries = [r['models'][m] for r in rows]
        total = dict(
            psnr_rgb=statistics.mean(e['psnr_rgb'] for e in entries),
            psnr_y=statistics.mean(e['psnr_y'] for e in entries),
            times=[sum(t) for t in zip(*(e['times'] for e in entries))])
        total['seconds'] = statistics.median(total['times'])
        if entries[0].get('tiles'):
            tiles = sum(e['tiles'] for e in entries)
            total['flops_ratio'] = sum(e['flops_ratio'] * e['tiles']
                                       for e in entries) / tiles
            total['shares'] = [
                sum(e['shares'][k] * e['tiles'] for e in entries) / tiles
                for k in range(3)
            ]
        else:
            total['flops_ratio'] = 1.0
        out[m] = total
    from ghostsr_mm.analysis import paired_ratio
    times = {m: t['times'] for m, t in out.items()}
    for m in out:
        out[m]['time_ratio'] = paired_ratio(times, m, 'original')
    return out


def oracle_totals(rows):
    """The perfect routings over all test tiles, as totals() does."""
    out = {}
    for m in rows[0]['oracle']:
        entries = [r['oracle'][m] for r in rows]
        tiles = sum(e['tiles'] for e in entries)
        out[m] = dict(
            psnr_rgb=sum(e['psnr_rgb'] for e in entries) / len(entries),
            flops_ratio=sum(e['flops_ratio'] * e['tiles']
                            for e in entries) / tiles,
            shares=[sum(e['shares'][k] * e['tiles'] for e in entries) / tiles
                    for k in range(3)])
    return out


def markdown(result):
    rows, tot, cfg = result['rows'], result['totals'], result['config']
    start = 'the reference' if cfg['branch_init'] == 'original' else 'scratch'
    lines = [
        f'ClassSR-CARN-M x4 on CPU ({result["machine"]}; '
        f'`{result["command"]}`, {result["seconds"]} s), branches of width '
        f'{" / ".join(map(str, cfg["widths"]))} (from {start}). ' + (
            f'Routing with cost penalty {result["cost_penalty"]:.3f}, '
            'calibrated on the ' + (
                "test photos' LR" if cfg.get('calibrate_on') == 'test' else
                "training halves' LR") + ' to FLOPs '
            f'{cfg["flops_target"]}. ' if cfg.get('flops_target') else '') +
        (f'Ghost variant routed with cost penalty '
         f'{result["ghost_cost_penalty"]:.3f}, to FLOPs '
         f'{cfg["ghost_flops_target"]} of the original. '
         if cfg.get('ghost_flops_target') else '') +
        'Ghost branches: x4 upsampler convs ghost: '
        f'{cfg.get("ghost_upsampler", "none")}. ' +
        f'Tiles {TILE}x{TILE} LR, overlap {OVERLAP}, {BATCH} per step. '
        'FLOPs and time are ratios to the original CARN-M (width 64) run '
        'the same way (time: median of the per-round ratios, quartiles in '
        'the goal table).', '',
        '| photo (LR size) | model | tiles simple / medium / hard | '
        'FLOPs | CPU time | RGB-PSNR | Y-PSNR |',
        '|---|---|---|---|---|---|---|'
    ]
    for row in rows:
        size = 'x'.join(map(str, row['lr_size']))
        for m, e in row['models'].items():
            shares = ' / '.join(f'{s:.0%}' for s in e['shares']) \
                if 'shares' in e else '-'
            lines.append(
                f'| {row["photo"]} ({size}) | {m} | {shares} | '
                f'{e["flops_ratio"]:.3f} | {e["seconds"]:.2f} s '
                f'({e["time_ratio"][0]:.3f}) | {e["psnr_rgb"]:.3f} | '
                f'{e["psnr_y"]:.3f} |')
    for m, e in tot.items():
        shares = ' / '.join(f'{s:.0%}' for s in e['shares']) \
            if 'shares' in e else '-'
        lines.append(f'| **all** | {m} | {shares} | {e["flops_ratio"]:.3f} '
                     f'| {e["seconds"]:.2f} s ({e["time_ratio"][0]:.3f}) | '
                     f'{e["psnr_rgb"]:.3f} | {e["psnr_y"]:.3f} |')
    o, c, g = tot['original'], tot['ClassSR'], tot['ClassSR-ghost']

    def ratio(e):
        mid, low, high = e['time_ratio']
        return f'{mid:.3f} ({low:.3f}-{high:.3f})'

    lines += [
        '', 'Each branch alone on every tile (RGB-PSNR; simple / medium / '
        'hard):', '', '| photo | original | branches | ghost branches |',
        '|---|---|---|---|'
    ] + [
        f'| {r["photo"]} | {r["models"]["original"]["psnr_rgb"]:.3f} | ' +
        ' | '.join(' / '.join(f'{p:.3f}' for p in r['branches'][m])
                   for m in ('ClassSR', 'ClassSR-ghost')) + ' |'
        for r in rows
    ]
    lines += [
        '', 'The same FLOPs on each photo routed by the tiles\' true errors '
        '(each tile to the branch minimising its squared error + lambda x '
        'FLOPs): what a perfect classifier reaches with these branches '
        '(RGB-PSNR; tiles simple / medium / hard):', '',
        '| photo | ClassSR | perfect routing | ClassSR-ghost | '
        'perfect routing |', '|---|---|---|---|---|'
    ]

    def cell(e):
        return (f'{e["psnr_rgb"]:.3f} ('
                + ' / '.join(f'{s:.0%}' for s in e['shares'])
                + f', FLOPs {e["flops_ratio"]:.3f})')

    for r in rows + [dict(photo='**all**', models=tot,
                          oracle=oracle_totals(rows))]:
        lines.append(f'| {r["photo"]} | ' + ' | '.join(
            f'{cell(r["models"][m])} | {cell(r["oracle"][m])}'
            for m in ('ClassSR', 'ClassSR-ghost')) + ' |')
    lines += [
        '', f'Bicubic: RGB-PSNR {result["bicubic"]["rgb"]:.3f}, '
        f'Y-PSNR {result["bicubic"]["y"]:.3f} dB.', '',
        '| figure (all test tiles) | value | goal |', '|---|---|---|',
        f'| ClassSR FLOPs / original | {c["flops_ratio"]:.3f} | ≤ 0.65 |',
        f'| ClassSR PSNR − original (RGB) | '
        f'{c["psnr_rgb"] - o["psnr_rgb"]:+.3f} dB | ≥ −0.05 dB |',
        f'| ghost branches: FLOPs / original | {g["flops_ratio"]:.3f} | '
        '≤ 0.40 |',
        f'| ghost branches: PSNR − original (RGB) | '
        f'{g["psnr_rgb"] - o["psnr_rgb"]:+.3f} dB | ≥ −0.10 dB |',
        f'| ClassSR CPU time / original | {ratio(c)} | ≤ '
        f'{c["flops_ratio"] + 0.10:.3f} (FLOPs + 0.10) |',
        f'| ghost: CPU time / original | {ratio(g)} | ≤ '
        f'{g["flops_ratio"] + 0.10:.3f} (FLOPs + 0.10) |',
    ]
    return '\n'.join(lines)


def width_latency(args, out_json, out_md):
    """FLOPs and CPU time of CARN-M (and GhostCARN-M) branches of every
    width in GHOST_RATIOS on one step of BATCH tiles, against width 64."""
    import torch
    from ghostsr_mm.analysis import (count_flops, interleaved_times,
                                     median_times, paired_ratio)
    from ghostsr_mm.models.layers import convert_to_inference
    torch.manual_seed(0)
    tiles = torch.rand(BATCH, 3, TILE, TILE)
    nets = {}
    for width in sorted(GHOST_RATIOS):
        nets[f'CARN-M {width}'] = carn_m(width).eval()
        nets[f'GhostCARN-M {width}'] = convert_to_inference(
            carn_m(width, ghost=True, upsampler=args.ghost_upsampler)).eval()
    base = 'CARN-M 64'
    flops = {n: count_flops(m, (3, TILE, TILE)) for n, m in nets.items()}
    with torch.inference_mode():
        times = interleaved_times(
            {n: (lambda m=m: m(tiles)) for n, m in nets.items()},
            repeats=args.repeats, warmup=1)
    medians = median_times(times)
    rows = [dict(model=n, flops=flops[n], flops_ratio=flops[n] / flops[base],
                 seconds=medians[n], times=times[n],
                 time_ratio=paired_ratio(times, n, base)) for n in nets]
    lines = [
        f'CARN-M x4 branches on one step of {BATCH} tiles of {TILE}x{TILE} '
        f'LR ({platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} CPUs, torch {torch.__version__}; `python '
        'benchmarks/bench_classsr.py --width-latency`, median of '
        f'{args.repeats} interleaved rounds). Ratios to CARN-M width 64.',
        '', '| branch | FLOPs | CPU time (ms) | time ratio (quartiles) | '
        'time / FLOPs |', '|---|---|---|---|---|'
    ]
    for r in rows:
        mid, low, high = r['time_ratio']
        lines.append(f'| {r["model"]} | {r["flops_ratio"]:.3f} | '
                     f'{1000 * r["seconds"]:.0f} | {mid:.3f} ({low:.3f}-'
                     f'{high:.3f}) | {mid / r["flops_ratio"]:.2f} |')
    text = '\n'.join(lines)
    print(text)
    with open(out_json, 'w') as f:
        json.dump(dict(config=vars(args), rows=rows), f, indent=1)
    with open(out_md, 'w') as f:
        f.write(text + '\n')
    return 0


def main(argv=None):
    args = parse_args(argv)
    from ghostsr_mm.analysis import results_path
    if args.width_latency:
        name = 'classsr_cpu_widths' + (f'_{args.tag}' if args.tag else '')
        return width_latency(
            args, results_path(args.out_dir, f'{name}.json', args.overwrite),
            results_path(args.out_dir, f'{name}.md', args.overwrite))
    name = 'classsr_cpu' + (f'_{args.tag}' if args.tag else '')
    out_json = results_path(args.out_dir, f'{name}.json', args.overwrite)
    out_md = results_path(args.out_dir, f'{name}.md', args.overwrite)
    out_png = results_path(args.out_dir, f'{name}_routing.png',
                           args.overwrite)
    args.cache = args.cache or osp.join(args.out_dir, 'classsr_cache')
    import mmcv
    import numpy as np
    import torch
    from mmagic.evaluation.metrics.psnr import psnr
    from quality_lib import TEST_PHOTOS as QUALITY_TEST
    from quality_lib import TRAIN_PHOTOS, PairSet, load_photo

    from ghostsr_mm.apis import routing_map, write_routing_picture
    start = time.time()
    train_specs = [p for p in TRAIN_PHOTOS + QUALITY_TEST
                   if p not in TEST_PHOTOS]
    # The large photos: left half for training, right half for testing.
    large = [load_photo(p, args.max_side or 10**6) for p in TEST_PHOTOS]
    cuts = [img.shape[1] // 2 // SCALE * SCALE for img in large]
    train_pairs = PairSet([load_photo(p) for p in train_specs] +
                          [img[:, :c] for img, c in zip(large, cuts)],
                          SCALE)
    test = PairSet([img[:, c:] for img, c in zip(large, cuts)], SCALE)
    photos = {spec.split(':')[1]: (lr[None], gt[None])
              for spec, lr, gt in zip(TEST_PHOTOS, test.lr_t, test.gt_t)}
    *models, labels = build_models(args, train_pairs)
    from ghostsr_mm.analysis import count_flops
    from ghostsr_mm.apis import calibrate_cost_penalty
    # On the large photos' training halves (the routing's cost depends on
    # the content: the other package photos are busier), or on the test
    # photos' LR, as tools/infer.py --flops-budget.
    images = ([lr for lr, _ in photos.values()]
              if args.calibrate_on == 'test' else
              [t[None] for t in train_pairs.lr_t[-len(large):]])
    penalty = ghost_penalty = 0.0
    if args.flops_target is not None:
        penalty = calibrate_cost_penalty(models[1], images,
                                         args.flops_target, TILE, OVERLAP,
                                         BATCH)
        # The ghost branches cost in nearly the same proportions: the same
        # penalty routes alike.
        models[1].cost_penalty = models[2].cost_penalty = ghost_penalty = \
            penalty
    if args.ghost_flops_target is not None:
        # Its own budget, as a share of the original's FLOPs (the budget
        # of calibrate_cost_penalty is a share of the model's hard branch).
        hard = [count_flops(m, (3, TILE, TILE))
                for m in (models[0], models[2].branches[-1])]
        ghost_penalty = models[2].cost_penalty = calibrate_cost_penalty(
            models[2], images, args.ghost_flops_target * hard[0] / hard[1],
            TILE, OVERLAP, BATCH)
    rows, pictures, flops = evaluate(args, models, photos)
    bicubic = [mmcv.imresize(lr, gt.shape[1::-1], interpolation='bicubic')
               for lr, gt in zip(test.lr, test.gt)]
    result = dict(
        config=dict(vars(args), train_photos=train_specs,
                    test_photos=TEST_PHOTOS,
                    ghost_ratios=GHOST_RATIOS, loss_weights=LOSS_WEIGHTS),
        machine=f'{platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} CPUs, torch {torch.__version__}',
        command=' '.join(['python benchmarks/bench_classsr.py'] +
                         (sys.argv[1:] if argv is None else list(argv))),
        seconds=round(time.time() - start), labels=labels,
        cost_penalty=penalty, ghost_cost_penalty=ghost_penalty,
        flops_per_tile=flops,
        bicubic=dict(
            rgb=float(np.mean([psnr(b, g, SCALE)
                               for b, g in zip(bicubic, test.gt)])),
            y=float(np.mean([psnr(b, g, SCALE, convert_to='Y')
                             for b, g in zip(bicubic, test.gt)]))),
        rows=rows)
    result['totals'] = totals(rows)
    result['oracle_totals'] = oracle_totals(rows)
    text = markdown(result)
    print(text)
    with open(out_json, 'w') as f:
        json.dump(result, f, indent=1)
    with open(out_md, 'w') as f:
        f.write(text + '\n')
    first = next(iter(photos))
    lr = photos[first][0]
    cmap = routing_map(pictures[first, 'ClassSR'][0], *lr.shape[-2:], TILE,
                       OVERLAP)
    write_routing_picture(out_png, lr[0].permute(1, 2, 0).numpy(), cmap)
    print(f'wrote {out_json}, {out_md}, {out_png} ({result["seconds"]} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
