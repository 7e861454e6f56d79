"""The shift oracle: did learning pick each ghost layer's best offset?

    python tools/analysis/shift_oracle.py CONFIG CHECKPOINT DATA_ROOT
        [--lr-dir LR_bicubic/X2] [--gt-dir HR] [--max-images 16]
        [--out oracle.json] [--save-chosen deployed.pth] [--force]
        [--debug]

For every ghost layer of the model (CONFIG, CHECKPOINT; a training or a
deployed checkpoint) and every candidate offset of its window, the mean L1
loss on the image pairs in DATA_ROOT (LR in --lr-dir, GT in --gt-dir, the
same file names: a validation split of the training photos, never the test
photos), the other layers held at their learned offsets. Prints one line per
layer (learned offset, best offset, their losses) and how many layers
learned their best; --out writes every loss as JSON. --save-chosen picks
the offsets by the validation loss (a greedy pass in network order: each
layer keeps its best before the next is tried, so the validation loss
never rises) and saves that model's inference graph, a checkpoint for
tools/test.py, tools/infer.py and tools/deploy.py's users.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
import ghostsr_mm  # noqa: E402,F401
import torch  # noqa: E402

from ghostsr_mm.apis import load_sr_model, read_image  # noqa: E402
from ghostsr_mm.cli import refuse_to_overwrite, run_tool  # noqa: E402
from ghostsr_mm.datasets import check_sr_pairs  # noqa: E402
from ghostsr_mm.analysis.shift_oracle import shift_oracle  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('data_root')
    parser.add_argument('--lr-dir', default='LR_bicubic/X2')
    parser.add_argument('--gt-dir', default='HR')
    parser.add_argument('--max-images', type=int, default=16)
    parser.add_argument('--out', help='JSON file with every loss')
    parser.add_argument('--save-chosen', help='save the model with the '
                        'offsets chosen on the validation loss here')
    parser.add_argument('--force', action='store_true',
                        help='overwrite --out and --save-chosen')
    return parser.parse_args(argv)


def load_pairs(root, lr_dir, gt_dir, max_images):
    """(LR, GT) batches of one image each, as 0-1 tensors."""
    import os
    check_sr_pairs(root, dict(img=lr_dir, gt=gt_dir), None, root)
    names = sorted(os.listdir(osp.join(root, gt_dir)))[:max_images]
    batches = []
    for name in names:
        lr = read_image(osp.join(root, lr_dir, name)).rgb
        gt = read_image(osp.join(root, gt_dir, name)).rgb
        batches.append(tuple(
            torch.from_numpy(a).permute(2, 0, 1)[None] for a in (lr, gt)))
    return batches


def main(argv=None) -> int:
    args = parse_args(argv)
    refuse_to_overwrite((args.out, args.save_chosen), args.force)
    model = load_sr_model(args.config, args.checkpoint)
    batches = load_pairs(args.data_root, args.lr_dir, args.gt_dir,
                         args.max_images)
    results = shift_oracle(model, batches, choose=bool(args.save_chosen))
    for r in results:
        print(f'{r.name}: learned {r.learned} L1 {r.losses[r.learned]:.5f}, '
              f'best {r.best} L1 {r.losses[r.best]:.5f}')
    hits = sum(r.learned == r.best for r in results)
    print(f'{hits} of {len(results)} layers learned their best offset '
          f'({len(batches)} validation images)')
    if args.save_chosen:
        from ghostsr_mm.checkpoint import save_generator
        save_generator(model, args.save_chosen, overwrite=args.force)
        print(f'saved the model with the chosen offsets to '
              f'{args.save_chosen}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump([
                dict(layer=r.name, learned=r.learned, best=r.best,
                     losses={f'{k[0]},{k[1]}': v
                             for k, v in r.losses.items()})
                for r in results
            ], f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
