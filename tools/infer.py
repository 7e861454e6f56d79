"""Super-resolve images of any size with a trained model.

    python tools/infer.py CONFIG CHECKPOINT INPUT OUTPUT [--tile 512]
        [--tile-overlap N] [--batch-size 4] [--device cpu|cuda]
        [--fp16 | --bf16] [--backend pytorch|onnxruntime] [--force]
        [--save-routing] [--cost-penalty X | --flops-budget R] [--debug]

INPUT is an image, a folder or a glob pattern (8- or 16-bit, grey and RGBA
as in ghostsr_mm/apis/images.py); OUTPUT a file for one input image, else a
folder where each result keeps its input's name. CHECKPOINT is
a regular, ghost or deployed checkpoint of CONFIG's generator, or an ONNX
file from ``tools/deploy.py --onnx``. Tiles overlapping by the receptive
field give the whole-image result in bounded memory. An unreadable image is
reported and skipped (exit status 1); existing outputs are refused up front
unless ``--force``. A ClassSR model runs as the paper tests it (32x32
sub-images, overlap 2, 64 per step), printing each image's routing and
FLOPs against the hard branch; ``--save-routing`` tints the output by branch
(green simple, yellow medium, red hard), ``--cost-penalty X`` routes by
``log P_k - X * cost_k`` and ``--flops-budget R`` finds and prints the X
whose routing of the inputs costs at most R of the hard branch.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import ghostsr_mm  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ghostsr_mm.apis import (branch_flops, build_generator,  # noqa: E402
                             calibrate_cost_penalty,
                             list_images, load_sr_model, read_image,
                             receptive_radius, routed_inference,
                             routing_flops, routing_map, tile_layout,
                             tiled_inference, write_image,
                             write_routing_picture)
from ghostsr_mm.models import ClassSRNet  # noqa: E402
from ghostsr_mm.models.editors.classsr import class_counts  # noqa: E402
from ghostsr_mm.cli import UserError, run_tool  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the model config')
    parser.add_argument('checkpoint', help='checkpoint (or .onnx file)')
    parser.add_argument('input', help='image, folder or glob pattern')
    parser.add_argument('output', help='image (one input) or folder')
    parser.add_argument('--tile', type=int, default=None,
                        help='tile size in LR pixels (default: 512, or 4x '
                        'the overlap if that is larger)')
    parser.add_argument('--tile-overlap', type=int, default=None,
                        help='margin kept from inner tile edges (default: '
                        'the receptive-field radius: same output as one '
                        'whole-image pass)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='tiles per forward pass (default: 4; ClassSR: '
                        '64)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument('--fp16', action='store_true',
                           help='float16 autocast (CUDA)')
    precision.add_argument('--bf16', action='store_true',
                           help='bfloat16 autocast (CPU or CUDA)')
    parser.add_argument('--backend', default='pytorch',
                        choices=['pytorch', 'onnxruntime'])
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing outputs')
    parser.add_argument('--save-routing', action='store_true',
                        help='ClassSR: also write <output>_routing.png')
    cost = parser.add_mutually_exclusive_group()
    cost.add_argument('--cost-penalty', type=float, default=None,
                      help='ClassSR: route by log P_k - X * cost_k')
    cost.add_argument('--flops-budget', type=float, default=None,
                      help='ClassSR: the penalty whose routing of the '
                      'inputs costs at most this fraction of the hard '
                      'branch')
    return parser.parse_args(argv)


def routing_path(out_path):
    stem, _ = osp.splitext(out_path)
    return f'{stem}_routing.png'


class ClassSRRun:
    """ClassSR's routed inference on each image, with its report."""

    def __init__(self, model, tile, overlap, batch_size, save_routing):
        self.model, self.tile, self.overlap = model, tile, overlap
        self.batch_size, self.save_routing = batch_size, save_routing
        self.flops = branch_flops(model, tile)

    def __call__(self, lr, progress, out_path):
        sr, classes = routed_inference(self.model, lr, self.tile,
                                       self.overlap, self.batch_size,
                                       progress)
        counts = class_counts(classes[0], self.model.num_classes)
        cost = routing_flops(counts.tolist(), self.flops)
        shares = ', '.join(f'{share:.0%}' for share in cost['shares'])
        print(f'\n{osp.basename(out_path)}: {len(classes[0])} sub-images, '
              f'simple to hard {shares}; FLOPs {cost["ratio"]:.1%} of the '
              'hard branch alone')
        if self.save_routing:
            cmap = routing_map(classes[0], *lr.shape[-2:], self.tile,
                               self.overlap)
            write_routing_picture(
                routing_path(out_path),
                sr[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy(),
                cmap)
        return sr


def output_paths(inputs, output, single):
    """Where each input's result goes."""
    if single and not (osp.isdir(output) or output.endswith(os.sep)):
        return [output]
    return [osp.join(output, osp.basename(p)) for p in inputs]


def onnx_model(path, device):
    """An ONNX Runtime session as a function of a tensor."""
    import onnxruntime as ort
    if not osp.isfile(path):
        raise FileNotFoundError(f'ONNX model {path} not found')
    providers = (['CUDAExecutionProvider', 'CPUExecutionProvider']
                 if device == 'cuda' else ['CPUExecutionProvider'])
    try:
        session = ort.InferenceSession(path, providers=providers)
    except Exception as err:
        raise UserError(f'{path}: not a usable ONNX model ({err})') from None
    name = session.get_inputs()[0].name

    def run(x):
        out = session.run(None, {name: x.float().cpu().numpy()})[0]
        return torch.from_numpy(out)

    return run


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.fp16 and args.device != 'cuda':
        raise UserError('--fp16 needs --device cuda (use --bf16 on the CPU)')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda: no CUDA GPU is visible')
    for flag, low in (('batch_size', 1), ('tile', 1), ('tile_overlap', 0)):
        value = getattr(args, flag)
        if value is not None and value < low:
            raise UserError(f'--{flag.replace("_", "-")} must be >= {low}, '
                            f'got {value}')
    inputs = list_images(args.input)
    outputs = output_paths(inputs, args.output, osp.isfile(args.input))
    import cv2
    for path in outputs:
        if not cv2.haveImageWriter(path):
            raise UserError(f'{path}: no image encoder for '
                            f'"{osp.splitext(path)[1]}"; use .png, .jpg, '
                            '.bmp or .tif')
    targets = outputs + ([routing_path(p) for p in outputs]
                         if args.save_routing else [])
    existing = [p for p in targets if osp.exists(p)]
    if existing and not args.force:
        more = f' and {len(existing) - 3} more' if len(existing) > 3 else ''
        raise FileExistsError(f'{", ".join(existing[:3])}{more} exist; pass '
                              '--force to overwrite')
    if args.backend == 'onnxruntime':
        model = onnx_model(args.checkpoint, args.device)
        # The deployed shifts are inside the ONNX graph: bound them by the
        # largest shift the config allows.
        overlap = args.tile_overlap
        if overlap is None:
            overlap = receptive_radius(build_generator(args.config),
                                       largest_shifts=True)
    else:
        model = load_sr_model(args.config, args.checkpoint, args.device)
        overlap = args.tile_overlap
        if overlap is None:
            overlap = 2 if isinstance(model, ClassSRNet) else \
                receptive_radius(model)
    classsr = isinstance(model, ClassSRNet)  # never for an ONNX session
    for flag in ('save_routing', 'cost_penalty', 'flops_budget'):
        if getattr(args, flag) not in (None, False) and not classsr:
            raise UserError(f'--{flag.replace("_", "-")} needs a ClassSR '
                            'model')
    if args.cost_penalty is not None:
        if not np.isfinite(args.cost_penalty):
            raise UserError('--cost-penalty must be a finite number, got '
                            f'{args.cost_penalty}')
        model.cost_penalty = args.cost_penalty
    tile = args.tile if args.tile is not None else (
        32 if classsr else max(512, 4 * overlap))
    batch_size = args.batch_size or (64 if classsr else 4)
    if tile <= 2 * overlap:
        what = '' if args.tile_overlap else ', the receptive-field radius'
        raise UserError(f'--tile {tile} must be larger than twice the '
                        f'overlap ({overlap}{what})')

    failures, images = [], []
    for path, out_path in zip(inputs, outputs):
        try:
            images.append((read_image(path), out_path))
        except ValueError as err:
            failures.append(str(err))
    if args.flops_budget is not None and images:
        try:
            model.cost_penalty = calibrate_cost_penalty(model, [
                torch.from_numpy(img.rgb).permute(2, 0, 1)[None].to(
                    args.device) for img, _ in images
            ], args.flops_budget, tile, overlap, batch_size)
        except ValueError as err:
            raise UserError(f'--flops-budget: {err}') from None
        print(f'--flops-budget {args.flops_budget}: cost penalty '
              f'{model.cost_penalty}')
    from mmengine.utils import ProgressBar
    total = sum(
        len(tile_layout(*img.rgb.shape[:2], tile, overlap))
        for img, _ in images)
    bar = ProgressBar(total) if total else None
    autocast = torch.autocast(
        args.device,
        dtype=torch.float16 if args.fp16 else torch.bfloat16,
        enabled=args.fp16 or args.bf16)
    run = ClassSRRun(model, tile, overlap, batch_size,
                     args.save_routing) if classsr else None
    written = 0
    for img, out_path in images:
        lr = torch.from_numpy(img.rgb).permute(2, 0, 1)[None].to(args.device)
        with autocast:
            if classsr:
                sr = run(lr, bar.update, out_path)
            else:
                sr = tiled_inference(model, lr, tile, overlap, batch_size,
                                     progress=bar.update)
        sr = sr[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
        try:
            write_image(out_path, np.ascontiguousarray(sr), img)
            written += 1
        except ValueError as err:
            failures.append(str(err))
    print(f'\n{written} of {len(inputs)} images written to {args.output}')
    if failures:
        print(f'error: {len(failures)} failed:\n  ' + '\n  '.join(failures),
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
