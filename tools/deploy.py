"""Turn a trained ghost generator into its inference graph, and optionally
export ONNX in which the shift is made of standard ONNX operators (slices,
pads and a concat, so onnxruntime runs it as copies, without this project's
extension).

    python tools/deploy.py CONFIG CHECKPOINT OUT [--onnx OUT.onnx]
        [--verify-image IMAGE] [--force]

OUT holds the generator with every learnable shift fixed to argmax W' (no
Gumbel parameters), as an MMagic checkpoint (``generator.`` keys) that the
config with ``cheap_op='fixed'`` loads. With --onnx the exported model is
run by onnxruntime on a real photo (IMAGE, or scikit-image's bundled
astronaut) and compared with PyTorch.
"""
import argparse
import os.path as osp
import sys

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import ghostsr_mm  # noqa: E402,F401
from ghostsr_mm.apis import build_generator, load_generator  # noqa: E402
from ghostsr_mm.checkpoint import save_generator  # noqa: E402
from ghostsr_mm.cli import (UserError, refuse_to_overwrite,  # noqa: E402
                            run_tool)
from ghostsr_mm.models.layers import convert_to_inference  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='inference-graph checkpoint to write')
    parser.add_argument('--onnx', help='also export ONNX to this file')
    parser.add_argument('--verify-image', help='photo for the ONNX check')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing output files')
    return parser.parse_args(argv)


def export_onnx(model: torch.nn.Module, path: str, opset: int = 17) -> None:
    """Export with the shift as slices, zero pads and a concat with constant
    bounds (ONNX Slice, Pad, Concat; see ghostsr_mm/ops/static.py), so that
    ONNX Runtime runs it as copies; height and width stay dynamic."""
    dummy = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy, ),
            path,
            input_names=['lr'],
            output_names=['sr'],
            dynamic_axes={'lr': {0: 'n', 2: 'h', 3: 'w'},
                          'sr': {0: 'n', 2: 'H', 3: 'W'}},
            opset_version=opset,
            dynamo=False)


def lr_photo(path=None, size=64) -> np.ndarray:
    """A real photo as a float32 (1, 3, size, size) LR input in 0-1."""
    import mmcv
    if path:
        if not osp.isfile(path):
            raise FileNotFoundError(f'image {path} not found')
        img = mmcv.imread(path, channel_order='rgb')
        if img is None:
            raise UserError(f'{path}: not a readable image')
    else:
        from skimage import data
        img = data.astronaut()
    img = mmcv.imresize(np.ascontiguousarray(img[..., :3]), (size, size),
                        interpolation='area')
    return (img.astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()


def verify_onnx(model, path, image=None) -> float:
    """Max |onnxruntime - PyTorch| on a real photo."""
    import onnxruntime as ort
    x = lr_photo(image)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    onnx_out = session.run(None, {'lr': x})[0]
    with torch.no_grad():
        torch_out = model(torch.from_numpy(x)).numpy()
    if onnx_out.shape != torch_out.shape:
        raise RuntimeError(f'ONNX output shape {onnx_out.shape} != PyTorch '
                           f'{torch_out.shape}')
    return float(np.abs(onnx_out - torch_out).max())


def main(argv=None) -> int:
    args = parse_args(argv)
    refuse_to_overwrite((args.out, args.onnx), args.force)
    model = load_generator(build_generator(args.config), args.checkpoint)
    model = convert_to_inference(model, inplace=True)
    save_generator(model, args.out, overwrite=args.force)
    print(f'inference graph written to {args.out}')
    if args.onnx:
        export_onnx(model, args.onnx, args.opset)
        diff = verify_onnx(model, args.onnx, args.verify_image)
        print(f'ONNX written to {args.onnx}; max |onnxruntime - PyTorch| '
              f'on a real photo: {diff:.2e}')
        if diff > 1e-4:
            raise UserError(f'the ONNX model does not match PyTorch (max '
                            f'difference {diff:.2e} > 1e-4)')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
