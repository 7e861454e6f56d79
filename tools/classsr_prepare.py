"""Make ClassSR's training data: sub-images labelled by difficulty.

    python tools/classsr_prepare.py GT_FOLDER OUT_ROOT --scale 4
        [--reference-config CONFIG --reference-checkpoint CKPT]
        [--gt-size 128] [--step 64] [--rescales 1 0.9 0.8 0.7 0.6]
        [--device cpu|cuda] [--force]

Crops every photo of GT_FOLDER (and its rescaled copies) into GT
sub-images, writes them and their bicubic LR versions to OUT_ROOT/HR and
OUT_ROOT/LR_bicubic/X{scale}, measures the PSNR the reference model reaches
on each (the paper uses a trained MSRResNet; without one, bicubic
upsampling; ``--label-by gain`` ranks by the gain over bicubic instead:
the smallest-gain third, flat regions that bicubic already gets right and
textures no network recovers, is simple, the largest-gain third hard),
and writes the meta-info files of the three classes
(meta_info_simple.txt: the highest-PSNR third, meta_info_medium.txt,
meta_info_hard.txt), meta_info_all.txt and sub_images.csv. The configs in
configs/classsr train each branch on its class and the classifier on all.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import ghostsr_mm  # noqa: E402,F401

from ghostsr_mm.cli import UserError, refuse_to_overwrite, run_tool  # noqa
from ghostsr_mm.apis import list_images  # noqa: E402
from ghostsr_mm.datasets import (ALL_FILE, CLASS_FILES,  # noqa: E402
                                 extract_sub_images, label_by_psnr,
                                 reference_psnrs, write_class_files)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('gt_folder', help='folder of GT photos')
    parser.add_argument('out_root', help='dataset folder to write')
    parser.add_argument('--scale', type=int, required=True,
                        choices=[2, 3, 4])
    parser.add_argument('--reference-config', help='reference model config')
    parser.add_argument('--reference-checkpoint',
                        help='reference model checkpoint')
    parser.add_argument('--label-by', default='psnr', choices=['psnr', 'gain'],
                        help="rank sub-images by the reference's PSNR (the "
                        "paper: the highest third is simple) or by its gain "
                        "over bicubic upsampling (the smallest third is "
                        "simple: where a larger network gains least)")
    parser.add_argument('--gt-size', type=int, default=None,
                        help='sub-image size in GT pixels (default: 32 LR '
                        'pixels)')
    parser.add_argument('--step', type=int, default=None,
                        help='crop step in GT pixels (default: gt-size / 2)')
    parser.add_argument('--rescales', type=float, nargs='+', default=[1.0],
                        help='also crop copies of each photo scaled by these '
                        'factors (the paper: 1 0.9 0.8 0.7 0.6)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--force', action='store_true',
                        help='overwrite an existing dataset in OUT_ROOT')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if bool(args.reference_config) != bool(args.reference_checkpoint):
        raise UserError('give both --reference-config and '
                        '--reference-checkpoint, or neither (bicubic)')
    if args.label_by == 'gain' and not args.reference_config:
        raise UserError('--label-by gain needs a reference model '
                        '(--reference-config, --reference-checkpoint)')
    photos = list_images(args.gt_folder)
    refuse_to_overwrite(
        [osp.join(args.out_root, f) for f in CLASS_FILES + (ALL_FILE, )],
        args.force)
    model = None
    if args.reference_config:
        from ghostsr_mm.apis import load_sr_model
        model = load_sr_model(args.reference_config,
                              args.reference_checkpoint, args.device)
    names, skipped = extract_sub_images(
        photos, args.out_root, args.scale, args.gt_size, args.step,
        args.rescales, overwrite=args.force)
    for path in skipped:
        print(f'warning: {path} is smaller than a sub-image; skipped',
              file=sys.stderr)
    if not names:
        raise UserError(f'no photo in {args.gt_folder} is as large as a '
                        'sub-image; use a smaller --gt-size')
    psnrs = reference_psnrs(args.out_root, names, args.scale, model)
    scores = psnrs
    if args.label_by == 'gain':
        bicubic = reference_psnrs(args.out_root, names, args.scale)
        scores = {n: psnrs[n] - bicubic[n] for n in names}
        # label_by_psnr ranks higher as simpler; here a smaller gain is.
        classes = label_by_psnr({n: -g for n, g in scores.items()})
    else:
        classes = label_by_psnr(scores)
    gt_size = args.gt_size or 32 * args.scale
    write_class_files(args.out_root, classes, psnrs, gt_size, scores)
    for k, fname in enumerate(CLASS_FILES):
        members = [psnrs[n] for n, c in classes.items() if c == k]
        print(f'{fname}: {len(members)} sub-images, PSNR '
              f'{min(members):.2f}-{max(members):.2f} dB')
    print(f'{len(names)} sub-images from {len(photos) - len(skipped)} '
          f'photos written to {args.out_root}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
