"""ClassSR-CARN-M x4 on large photos: FLOPs, CPU time and PSNR against the
CARN-M it accelerates (ClassSR Table 1 at CPU scale), and with ghost
branches. Every stage trains through a shipped config and the project's
tools, as a user would; this script prepares the photos, runs the stages
(a stage whose checkpoint is in --work-dir is not run again) and measures.

    python benchmarks/bench_classsr.py [--iters 500]
        [--classifier-iters 300] [--joint-iters 100] [--ghost-iters 200]
        [--flops-budget R] [--repeats 5] [--max-side N]
        [--work-dir work_dirs/bench_classsr] [--out-dir benchmarks/results]
        [--overwrite]

The photos, the stages and the test: benchmarks/README.md, "ClassSR".
Writes results/classsr_cpu.json and the routing of the retina photo to
classsr_cpu_routing.png.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

SCALE, TILE, OVERLAP, BATCH = 4, 32, 2, 64
# GT patches of the single networks' stages (0, 2, G): 16 LR pixels, a
# quarter of a sub-image's cost per step; the classifier stages take whole
# sub-images, as the configs do.
PATCH = 16 * SCALE
TEST_PHOTOS = ('skimage:retina', 'skimage:hubble_deep_field')
CLASSES = ('simple', 'medium', 'hard')
CONFIGS = osp.join(ROOT, 'configs', 'classsr')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=500,
                        help='iterations of the original and of each branch')
    parser.add_argument('--classifier-iters', type=int, default=300)
    parser.add_argument('--joint-iters', type=int, default=100)
    parser.add_argument('--ghost-iters', type=int, default=200)
    parser.add_argument('--flops-budget', type=float, default=None,
                        help='route with the cost penalty calibrated on the '
                        'validation photos to this share of the hard '
                        "branch's FLOPs (default: the most probable branch)")
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed rounds per photo')
    parser.add_argument('--max-side', type=int, default=None,
                        help='shrink the two large photos (smoke runs)')
    parser.add_argument('--work-dir',
                        default=osp.join(ROOT, 'work_dirs', 'bench_classsr'))
    parser.add_argument('--out-dir', default=osp.join(ROOT, 'benchmarks',
                                                      'results'))
    parser.add_argument('--overwrite', action='store_true')
    return parser.parse_args(argv)


def tool(name, *argv):
    """Run tools/<name> with a user's command line, in this process (its
    errors as the tool prints them)."""
    import importlib.util

    from ghostsr_mm.cli import run_tool
    spec = importlib.util.spec_from_file_location(
        f'tool_{name[:-3]}', osp.join(ROOT, 'tools', name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if run_tool(module.main, [str(a) for a in argv]):
        sys.exit(f'tools/{name} {" ".join(map(str, argv))} failed')


def prepare_photos(args):
    """Training and validation folders (HR, LR_bicubic/X4) and the test
    (LR, GT) pairs, kept in memory."""
    from bench_quality import TEST_PHOTOS as QUALITY_TEST
    from bench_quality import TRAIN_PHOTOS, VAL_SHARE, PairSet, load_photo

    from ghostsr_mm.datasets import write_sr_pairs
    side = args.max_side
    train, val = [], []
    specs = [p for p in TRAIN_PHOTOS + QUALITY_TEST if p not in TEST_PHOTOS]
    large = [load_photo(p, side or 10**6) for p in TEST_PHOTOS]
    cuts = [img.shape[1] // 2 // SCALE * SCALE for img in large]
    photos = [(p.split(':')[1].split('.')[0], load_photo(p)) for p in specs]
    photos += [(p.split(':')[1] + '_left', img[:, :c])
               for p, img, c in zip(TEST_PHOTOS, large, cuts)]
    for name, img in photos:
        cut = int(img.shape[0] * (1 - VAL_SHARE)) // SCALE * SCALE
        train.append((name, img[:cut]))
        val.append((name, img[cut:]))
    roots = {}
    for split, images in (('train', train), ('val', val)):
        roots[split] = osp.join(args.work_dir, 'photos', split)
        if not osp.isdir(roots[split]):
            write_sr_pairs(images, roots[split], scales=(SCALE, ))
    test = PairSet([img[:, c:] for img, c in zip(large, cuts)], SCALE)
    pairs = {p.split(':')[1]: (lr[None], gt[None])
             for p, lr, gt in zip(TEST_PHOTOS, test.lr_t, test.gt_t)}
    return roots, pairs


class Stages:
    """The training stages, each a config under --work-dir and a tools/
    run; a stage whose checkpoint exists is reused."""

    def __init__(self, args, roots):
        self.args, self.roots = args, roots
        self.subs = osp.join(args.work_dir, 'classsr_x4')

    def train(self, name, base, iters, data_root=None, ann_file='',
              overrides=None, patch=TILE * SCALE):
        from ghostsr_mm.apis import write_data_config
        work = osp.join(self.args.work_dir, name)
        ckpt = osp.join(work, f'iter_{iters}.pth')
        if osp.exists(ckpt):
            print(f'{name}: {ckpt} exists, reused', flush=True)
            return ckpt
        os.makedirs(work, exist_ok=True)
        overrides = dict(overrides or {}, work_dir=work)
        overrides.setdefault('train_dataloader', {}).update(
            batch_size=16, dataset=dict(ann_file=ann_file))
        cfg = write_data_config(
            osp.join(work, 'config.py'), base, data_root or self.subs,
            iters, scale=SCALE, gt_patch=patch,
            val_root=self.roots['val'], overrides=overrides)
        start = time.time()
        tool('train.py', cfg)
        print(f'{name}: {iters} iterations in {time.time() - start:.0f} s',
              flush=True)
        return ckpt

    def run(self):
        args = self.args
        branch = [osp.join(CONFIGS, f'carn_m_branch_{c}_x4_div2k.py')
                  for c in CLASSES]
        # 0. the original (and reference): CARN-M width 64 on the photos
        original = self.train('original', branch[2], args.iters,
                              self.roots['train'], patch=PATCH)
        # 1. labelled sub-images
        if not osp.exists(osp.join(self.subs, 'meta_info_all.txt')):
            tool('classsr_prepare.py', osp.join(self.roots['train'], 'HR'),
                 self.subs, '--scale', SCALE, '--reference-config',
                 osp.join(args.work_dir, 'original', 'config.py'),
                 '--reference-checkpoint', original)
        # 2. branches, from the original cut to their widths
        branches = [self.train(
            f'branch_{c}', branch[k], args.iters, patch=PATCH,
            ann_file=f'meta_info_{c}.txt', overrides=dict(model=dict(
                generator=dict(init_cfg=dict(type='NarrowedPretrained',
                                             checkpoint=original)))))
            for k, c in enumerate(CLASSES)]
        # 3. classifier over the frozen branches; 4. all together
        from mmengine.config import Config
        widths = [b['mid_channels']
                  for b in Config.fromfile(branch[0]).carn_m_branches]
        loaded = [dict(type='CARNNet', mid_channels=w, upscale_factor=SCALE,
                       efficient=True, init_cfg=dict(
                           type='Pretrained', checkpoint=ckpt,
                           prefix='generator.'))
                  for w, ckpt in zip(widths, branches)]
        classifier = self.train(
            'classifier', osp.join(CONFIGS, 'classsr_carn_m_classifier_'
                                   'x4_div2k.py'), args.classifier_iters,
            ann_file='meta_info_all.txt',
            overrides=dict(model=dict(generator=dict(branches=loaded))))
        joint = self.train(
            'joint', osp.join(CONFIGS, 'classsr_carn_m_joint_x4_div2k.py'),
            args.joint_iters, ann_file='meta_info_all.txt',
            overrides=dict(load_from=classifier))
        # G. ghost branches, clustered from the trained ones
        ghosts = [self.train(
            f'ghost_{c}', branch[k], args.ghost_iters, patch=PATCH,
            ann_file=f'meta_info_{c}.txt', overrides=dict(
                model=dict(generator=dict(type='GhostCARNNet',
                                          zero_shift_bias=1.0)),
                custom_hooks=[dict(type='GhostClusterInitHook',
                                   pretrained=branches[k]),
                              dict(type='GumbelAnnealHook', epochs=10)]))
            for k, c in enumerate(CLASSES)]
        return original, joint, ghosts, widths


def build_models(original_ckpt, joint_ckpt, ghost_ckpts, widths):
    """The original CARN-M, ClassSR-CARN-M and its ghost variant (stage 4's
    classifier over the ghost branches, as deployed), in eval mode."""
    from mmagic.registry import MODELS

    from ghostsr_mm.checkpoint import load_generator, load_generator_state
    from ghostsr_mm.models import ClassSRNet, convert_to_inference

    def carn_m(width, ghost=False):
        return MODELS.build(dict(
            type='GhostCARNNet' if ghost else 'CARNNet', mid_channels=width,
            upscale_factor=SCALE, efficient=True))

    original = load_generator(carn_m(64), original_ckpt).eval()
    classsr = load_generator(
        ClassSRNet([carn_m(w) for w in widths]), joint_ckpt).eval()
    ghost = ClassSRNet([
        convert_to_inference(load_generator(carn_m(w, True), ckpt))
        for w, ckpt in zip(widths, ghost_ckpts)]).eval()
    state = load_generator_state(joint_ckpt)
    ghost.classifier.load_state_dict({
        k[len('classifier.'):]: v for k, v in state.items()
        if k.startswith('classifier.')})
    return original, classsr, ghost


def evaluate(args, models, pairs):
    """Per test photo and model: PSNR, FLOPs ratio, shares, time."""
    import torch
    from mmagic.evaluation.metrics.psnr import psnr
    from bench_quality import quantize

    from ghostsr_mm.analysis import (count_flops, interleaved_times,
                                     median_times, paired_ratio)
    from ghostsr_mm.apis import (branch_flops, routed_inference,
                                 routing_flops, tiled_inference)
    original, classsr, ghost = models
    base = count_flops(original, (3, TILE, TILE))
    costs = {'ClassSR': branch_flops(classsr, TILE),
             'ClassSR-ghost': branch_flops(ghost, TILE)}
    runs = {'original': lambda lr: (tiled_inference(
        original, lr, TILE, OVERLAP, BATCH, blend=True), None)}
    for name, net in (('ClassSR', classsr), ('ClassSR-ghost', ghost)):
        runs[name] = (lambda lr, net=net: routed_inference(
            net, lr, TILE, OVERLAP, BATCH))
    rows, classes_of = [], {}
    for photo, (lr, gt) in pairs.items():
        row = dict(photo=photo, lr_size=list(lr.shape[-2:]), models={})
        up = torch.nn.functional.interpolate(lr, scale_factor=SCALE,
                                             mode='bicubic')
        row['bicubic_psnr_rgb'] = float(psnr(quantize(up[0]),
                                             quantize(gt[0]), SCALE))
        with torch.inference_mode():
            times = interleaved_times(
                {m: (lambda f=f: f(lr)) for m, f in runs.items()},
                repeats=args.repeats, warmup=1)
            medians = median_times(times)
            for m, run in runs.items():
                sr, classes = run(lr)
                e = dict(psnr_rgb=float(psnr(quantize(sr[0]),
                                             quantize(gt[0]), SCALE)),
                         seconds=medians[m], times=times[m],
                         time_ratio=paired_ratio(times, m, 'original'),
                         flops_ratio=1.0)
                if classes is not None:
                    counts = torch.bincount(classes[0], minlength=3)
                    cost = routing_flops(counts.tolist(), costs[m])
                    e.update(flops_ratio=cost['flops'] / base,
                             shares=cost['shares'], tiles=int(counts.sum()))
                    classes_of[photo, m] = classes
                row['models'][m] = e
        rows.append(row)
    return rows, classes_of, dict(original=base, **costs)


def totals(rows):
    """Every test tile counted once: FLOPs and shares over all tiles, mean
    PSNR, and time over both photos (per-round sums)."""
    import statistics

    from ghostsr_mm.analysis import paired_ratio
    out = {}
    for m in rows[0]['models']:
        entries = [r['models'][m] for r in rows]
        tiles = [e.get('tiles', 1) for e in entries]
        out[m] = dict(
            psnr_rgb=statistics.mean(e['psnr_rgb'] for e in entries),
            flops_ratio=sum(e['flops_ratio'] * n
                            for e, n in zip(entries, tiles)) / sum(tiles),
            times=[sum(t) for t in zip(*(e['times'] for e in entries))])
        if 'shares' in entries[0]:
            out[m]['shares'] = [
                sum(e['shares'][k] * n for e, n in zip(entries, tiles)) /
                sum(tiles) for k in range(3)]
    times = {m: t['times'] for m, t in out.items()}
    for m, t in out.items():
        t['seconds'] = statistics.median(t['times'])
        t['time_ratio'] = paired_ratio(times, m, 'original')
    return out


def markdown(result):
    lines = [
        f'ClassSR-CARN-M x4 on the CPU ({result["machine"]["cpu"]}, '
        f'{result["machine"]["threads"]} threads; `{result["command"]}`, '
        f'{result["seconds"]} s). Routing: ' +
        (f'cost penalty {result["cost_penalty"]:.3f}, calibrated on the '
         f'validation photos to FLOPs {result["config"]["flops_budget"]} of '
         'the hard branch. ' if result['config']['flops_budget'] else
         'the most probable branch. ') + 'FLOPs and time are ratios to the '
        'original CARN-M (width 64) run the same way (time: median of the '
        'per-round ratios).', '',
        '| photo (LR size) | model | tiles simple / medium / hard | FLOPs | '
        'CPU time | RGB-PSNR |', '|---|---|---|---|---|---|'
    ]
    rows = result['rows'] + [dict(photo='**all**', lr_size=None,
                                  models=result['totals'])]
    for row in rows:
        size = f' ({"x".join(map(str, row["lr_size"]))})' \
            if row['lr_size'] else ''
        if 'bicubic_psnr_rgb' in row:
            lines.append(f'| {row["photo"]}{size} | bicubic | - | - | - | '
                         f'{row["bicubic_psnr_rgb"]:.3f} |')
        for m, e in row['models'].items():
            shares = ' / '.join(f'{s:.0%}' for s in e['shares']) \
                if 'shares' in e else '-'
            lines.append(
                f'| {row["photo"]}{size} | {m} | {shares} | '
                f'{e["flops_ratio"]:.3f} | {e["seconds"]:.2f} s '
                f'({e["time_ratio"][0]:.3f}) | {e["psnr_rgb"]:.3f} |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    from ghostsr_mm.analysis import machine, results_path
    paths = {ext: results_path(args.out_dir, f'classsr_cpu{ext}',
                               args.overwrite)
             for ext in ('.json', '_routing.png')}
    import torch

    from ghostsr_mm.apis import (calibrate_cost_penalty, routing_map,
                                 write_routing_picture)
    start = time.time()
    roots, pairs = prepare_photos(args)
    original, joint, ghosts, widths = Stages(args, roots).run()
    models = build_models(original, joint, ghosts, widths)
    penalty = 0.0
    if args.flops_budget is not None:
        from ghostsr_mm.apis import list_images, read_image
        val = [torch.from_numpy(read_image(p).rgb).permute(2, 0, 1)[None]
               for p in list_images(osp.join(roots['val'], 'LR_bicubic',
                                             f'X{SCALE}'))]
        penalty = calibrate_cost_penalty(models[1], val, args.flops_budget,
                                         TILE, OVERLAP, BATCH)
        models[1].cost_penalty = models[2].cost_penalty = penalty
    rows, classes, flops = evaluate(args, models, pairs)
    result = dict(
        config=vars(args), machine=machine(), flops_per_tile=flops,
        command=' '.join(['python benchmarks/bench_classsr.py'] +
                         (sys.argv[1:] if argv is None else list(argv))),
        seconds=round(time.time() - start), cost_penalty=penalty, rows=rows,
        totals=totals(rows))
    text = markdown(result)
    print(text)
    with open(paths['.json'], 'w') as f:
        json.dump(result, f, indent=1)
    photo = next(iter(pairs))
    lr = pairs[photo][0]
    write_routing_picture(
        paths['_routing.png'], lr[0].permute(1, 2, 0).numpy(),
        routing_map(classes[photo, 'ClassSR'][0], *lr.shape[-2:], TILE,
                    OVERLAP))
    return 0


if __name__ == '__main__':
    sys.exit(main())
