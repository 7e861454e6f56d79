"""GhostSR end to end on real photos, with no downloads (about 10 minutes
on 2 CPU cores):

1. build a small training set (sub-images, DIV2K layout) and a held-out
   test set from the natural photos bundled with scikit-image;
2. train a small regular EDSR (x2) with tools/train.py;
3. cluster-initialise its ghost version (GhostClusterInitHook) and
   fine-tune it with learnable shifts (GumbelAnnealHook), with the short
   fine-tune settings;
4. test both with tools/test.py, against bicubic, on the held-out photos;
5. print one table (params, FLOPs, CPU latency, Y-PSNR/SSIM) and save a
   side-by-side crop (bicubic | regular | ghost | ground truth).

    python tools/demo.py [--out DIR] [--iters 1600] [--ghost-iters 500]
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
import ghostsr_mm  # noqa: E402,F401
from ghostsr_mm.apis import write_data_config  # noqa: E402
from ghostsr_mm.cli import run_tool  # noqa: E402
from ghostsr_mm.datasets import mod_crop, write_sr_pairs  # noqa: E402

SCALE = 2
TRAIN_PHOTOS = ('coffee', 'rocket', 'hubble_deep_field', 'retina',
                'immunohistochemistry', 'brick', 'grass', 'gravel', 'camera',
                'coins', 'moon')
TEST_PHOTOS = ('astronaut', 'chelsea')
GENERATOR = dict(
    in_channels=3,
    out_channels=3,
    mid_channels=32,
    num_blocks=4,
    upscale_factor=SCALE)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', help='output folder (default: a new '
                        'demo_output/<time> folder)')
    parser.add_argument('--iters', type=int, default=1600,
                        help='training iterations of the regular EDSR')
    parser.add_argument('--ghost-iters', type=int, default=500,
                        help='fine-tuning iterations of the ghost EDSR')
    parser.add_argument('--batch-size', type=int, default=8)
    return parser.parse_args(argv)


def log(msg):
    print(f'[demo {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def photo(name):
    from skimage import data
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    if max(img.shape[:2]) > 720:  # keep the set small
        import mmcv
        img = mmcv.imrescale(img, 720 / max(img.shape[:2]),
                             interpolation='area')
    return np.ascontiguousarray(img[..., :3])


def sub_images(names, size=192, step=160):
    """DIV2K-style sub-images: size x size crops every step pixels."""
    for name in names:
        img = photo(name)
        h, w = img.shape[:2]
        for y in range(0, h - size + 1, step):
            for x in range(0, w - size + 1, step):
                yield f'{name}_{y:04d}_{x:04d}', img[y:y + size, x:x + size]


def build_data(root):
    train = write_sr_pairs(sub_images(TRAIN_PHOTOS), osp.join(root, 'train'),
                           (SCALE, ))
    test = write_sr_pairs(((n, photo(n)) for n in TEST_PHOTOS),
                          osp.join(root, 'test'), (SCALE, ))
    log(f'data: {len(train)} training sub-images from {len(TRAIN_PHOTOS)} '
        f'photos, {len(test)} held-out test photos ({", ".join(TEST_PHOTOS)})'
        f' in {root}')


def run(*args):
    """A tool as a subprocess; its log streams through."""
    cmd = [sys.executable, *args]
    log(' '.join(osp.relpath(a, ROOT) if osp.isabs(a) else a for a in cmd[1:]))
    subprocess.run(cmd, cwd=ROOT, check=True)


def bicubic_metrics(test_root):
    import mmcv
    from mmagic.evaluation.metrics.psnr import psnr
    from mmagic.evaluation.metrics.ssim import ssim
    values = []
    for name in sorted(os.listdir(osp.join(test_root, 'HR'))):
        gt = mmcv.imread(osp.join(test_root, 'HR', name))
        lr = mmcv.imread(osp.join(test_root, f'LR_bicubic/X{SCALE}', name))
        up = mmcv.imresize(lr, gt.shape[1::-1], interpolation='bicubic')
        values.append([
            psnr(up, gt, SCALE, convert_to='Y', channel_order='bgr'),
            ssim(up, gt, SCALE, convert_to='Y', channel_order='bgr')
        ])
    return np.mean(values, 0)


def complexity(configs, checkpoints):
    """Params, FLOPs and CPU latency on a 3x128x128 input (interleaved
    median of 10)."""
    import torch
    from ghostsr_mm.analysis import (count_flops, count_params,
                                     interleaved_median_times)
    from ghostsr_mm.apis import build_generator, load_generator
    from ghostsr_mm.models.layers import convert_to_inference
    models = {
        name: convert_to_inference(
            load_generator(build_generator(cfg), ckpt), inplace=True)
        for (name, cfg), ckpt in zip(configs.items(), checkpoints)
    }
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        times = interleaved_median_times(
            {n: (lambda m=m: m(x))
             for n, m in models.items()}, repeats=10)
    return models, {
        n: (count_params(m), count_flops(m, (3, 128, 128)), times[n])
        for n, m in models.items()
    }


def labelled(panel: np.ndarray, text: str, height: int = 30) -> np.ndarray:
    """``panel`` under a white strip holding ``text``."""
    from PIL import Image, ImageDraw, ImageFont
    strip = Image.new('RGB', (panel.shape[1], height), 'white')
    font = ImageFont.load_default(size=18)
    ImageDraw.Draw(strip).text((6, 5), text, fill='black', font=font)
    return np.concatenate([np.asarray(strip), panel], 0)


def side_by_side(models, test_root, out_png):
    """Crops of the held-out astronaut photo, each labelled with its method
    and its Y-PSNR on the whole photo."""
    import mmcv
    import torch
    from mmagic.evaluation.metrics.psnr import psnr
    name = 'astronaut.png'
    gt = mmcv.imread(osp.join(test_root, 'HR', name), channel_order='rgb')
    lr = mmcv.imread(osp.join(test_root, f'LR_bicubic/X{SCALE}', name),
                     channel_order='rgb')
    x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255
    panels = {
        'bicubic': mmcv.imresize(lr, gt.shape[1::-1], interpolation='bicubic')
    }
    with torch.no_grad():
        for label, model in models.items():
            sr = model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
            panels[label] = (sr * 255).round().astype(np.uint8)
    y, x0, size = 60, 180, 160  # the face
    crops = []
    for label, panel in list(panels.items()) + [('ground truth', gt)]:
        crop = mmcv.imrescale(mod_crop(panel, 1)[y:y + size, x0:x0 + size],
                              2, interpolation='nearest')
        if label != 'ground truth':
            value = psnr(panel, gt, SCALE, convert_to='Y',
                         channel_order='rgb')
            label = f'{label}: {value:.2f} dB'
        crops.append(labelled(crop, label))
    gap = np.full((crops[0].shape[0], 6, 3), 255, np.uint8)
    row = np.concatenate(sum([[c, gap] for c in crops], [])[:-1], 1)
    mmcv.imwrite(row[..., ::-1], out_png)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    out = osp.abspath(args.out or osp.join(
        ROOT, 'demo_output', time.strftime('%Y%m%d_%H%M%S')))
    if osp.exists(out) and os.listdir(out):
        raise FileExistsError(f'{out} is not empty; choose another --out')
    os.makedirs(out, exist_ok=True)
    data = osp.join(out, 'data')
    build_data(data)

    base = osp.join(ROOT, 'configs/ghostsr/_base_/sisr_paper_x2.py')
    data_args = dict(
        batch_size=args.batch_size,
        gt_patch=96,
        num_workers=2,
        val_root=osp.join(data, 'test'))
    regular_config = write_data_config(
        osp.join(out, 'edsr_demo.py'), base, osp.join(data, 'train'),
        args.iters,
        overrides=dict(
            model=dict(generator=dict(GENERATOR, type='EDSRNet')),
            optim_wrapper=dict(optimizer=dict(lr=1e-3))),
        **data_args)
    regular_ckpt = osp.join(out, 'work', 'edsr', f'iter_{args.iters}.pth')
    ghost_config = write_data_config(
        osp.join(out, 'ghost_edsr_demo.py'), regular_config,
        osp.join(data, 'train'), args.ghost_iters,
        # The short fine-tune settings of the README (W' starts at the
        # copy and moves at 100x the LR; the paper's noise decay spread
        # over these iterations).
        overrides=dict(
            model=dict(generator=dict(type='GhostEDSRNet',
                                      zero_shift_bias=1.0)),
            optim_wrapper=dict(
                optimizer=dict(lr=2e-4),
                paramwise_cfg=dict(
                    custom_keys={'shift_logits': dict(lr_mult=100.)})),
            custom_hooks=[
                dict(type='GhostClusterInitHook', pretrained=regular_ckpt),
                dict(type='GumbelAnnealHook', epochs=300)
            ]),
        **data_args)
    ghost_ckpt = osp.join(out, 'work', 'ghost_edsr',
                          f'iter_{args.ghost_iters}.pth')

    log(f'training the regular EDSR ({args.iters} iterations)')
    run('tools/train.py', regular_config, '--work-dir',
        osp.join(out, 'work', 'edsr'))
    log('cluster-initialising the ghost EDSR from it and fine-tuning '
        f'({args.ghost_iters} iterations)')
    run('tools/train.py', ghost_config, '--work-dir',
        osp.join(out, 'work', 'ghost_edsr'))

    test_root = osp.join(data, 'test')
    metrics = {}
    for name, cfg, ckpt in (('regular', regular_config, regular_ckpt),
                            ('ghost', ghost_config, ghost_ckpt)):
        log(f'testing the {name} EDSR on the held-out photos')
        result = osp.join(out, f'metrics_{name}.json')
        run('tools/test.py', cfg, ckpt, '--work-dir',
            osp.join(out, 'work', f'test_{name}'), '--out', result)
        m = json.load(open(result))
        metrics[name] = (m['Set5/PSNR'], m['Set5/SSIM'])
    metrics['bicubic'] = tuple(bicubic_metrics(test_root))

    log('measuring params, FLOPs and CPU latency (3x128x128 input)')
    models, cost = complexity(
        {'regular': regular_config, 'ghost': ghost_config},
        (regular_ckpt, ghost_ckpt))
    png = osp.join(out, 'side_by_side.png')
    side_by_side(models, test_root, png)

    lines = [
        f'GhostSR demo: EDSR x{SCALE} (32 channels, 4 blocks), held-out '
        f'photos {", ".join(TEST_PHOTOS)}; Y-channel PSNR/SSIM, crop '
        f'{SCALE}', '',
        '| model | params | FLOPs (G, 3x128x128) | CPU latency (ms) | '
        'Y-PSNR (dB) | Y-SSIM |', '|---|---|---|---|---|---|',
        f'| bicubic | - | - | - | {metrics["bicubic"][0]:.2f} | '
        f'{metrics["bicubic"][1]:.4f} |'
    ]
    for name in ('regular', 'ghost'):
        p, f, t = cost[name]
        lines.append(f'| {name} EDSR | {p:,} | {f / 1e9:.2f} | '
                     f'{t * 1e3:.1f} | {metrics[name][0]:.2f} | '
                     f'{metrics[name][1]:.4f} |')
    r, g = cost['regular'], cost['ghost']
    lines += [
        '', f'ghost / regular: params {g[0] / r[0]:.3f}, FLOPs '
        f'{g[1] / r[1]:.3f}, latency {g[2] / r[2]:.3f}'
    ]
    table = '\n'.join(lines)
    with open(osp.join(out, 'results.md'), 'w') as f:
        f.write(table + '\n')
    print('\n' + table + '\n')
    log(f'outputs in {out}: results.md, side_by_side.png (bicubic | regular '
        '| ghost | ground truth), metrics_*.json, checkpoints and logs in '
        f'work/ ({(time.time() - start) / 60:.1f} min)')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
