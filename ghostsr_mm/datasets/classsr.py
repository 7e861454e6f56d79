"""ClassSR's training data (Kong et al., Sec. 4.1): sub-images of the
training photos, each labelled simple / medium / hard by the PSNR a
reference model reaches on it.

:func:`extract_sub_images` writes ``gt_size`` GT crops (every ``step``
pixels, the last row and column flush with the border, optionally from
rescaled copies of each photo) and their bicubic LR versions in MMagic's
folder layout; :func:`label_by_psnr` splits the sub-images at the 1/3 and
2/3 quantiles of their PSNRs; :func:`write_class_files` writes one
meta-info file per class (and one for all), which a config gives its
dataset as ``ann_file``.
"""
import csv
import os.path as osp
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ghostsr_mm.utils import InputError
from .prepare import write_sr_pairs

__all__ = [
    'ALL_FILE', 'CLASS_FILES', 'crop_starts', 'extract_sub_images',
    'label_by_psnr', 'reference_psnrs', 'sub_image_psnrs',
    'write_class_files'
]

CLASS_FILES = ('meta_info_simple.txt', 'meta_info_medium.txt',
               'meta_info_hard.txt')
ALL_FILE = 'meta_info_all.txt'


def crop_starts(size: int, crop: int, step: int) -> List[int]:
    """Crop positions along one axis: every ``step`` pixels, the last one
    flush with the border (nothing dropped); [] when ``size < crop``."""
    if size < crop:
        return []
    starts = list(range(0, size - crop + 1, step))
    if starts[-1] != size - crop:
        starts.append(size - crop)
    return starts


def _rescaled(img: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1:
        return img
    import cv2
    h, w = img.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)


def extract_sub_images(gt_paths: Sequence[str],
                       out_root: str,
                       scale: int,
                       gt_size: Optional[int] = None,
                       step: Optional[int] = None,
                       rescales: Sequence[float] = (1.0, ),
                       overwrite: bool = False) -> Tuple[List[str], List[str]]:
    """Crop every photo (and its rescaled copies) into GT sub-images and
    write them with their bicubic LR versions under ``out_root``
    (``HR/`` and ``LR_bicubic/X{scale}/``).

    Args:
        gt_paths (Sequence[str]): The photos.
        scale (int): SR scale.
        gt_size (int): Sub-image size in GT pixels, a multiple of ``scale``.
            Default: 32 LR pixels (the paper's).
        step (int): Distance between crops. Default: half of ``gt_size``.
        rescales (Sequence[float]): Copies of each photo to crop, scaled by
            these factors (the paper: 1, 0.9, 0.8, 0.7, 0.6).

    Returns:
        tuple: The sub-image file names written, and the photos skipped
        (smaller than a sub-image).
    """
    import mmcv
    gt_size = gt_size or 32 * scale
    step = step or gt_size // 2
    if gt_size % scale:
        raise InputError(f'`gt_size` ({gt_size}) must be a multiple of the '
                         f'scale ({scale})')
    if step < 1 or any(not 0 < r <= 1 for r in rescales):
        raise InputError(f'`step` must be >= 1 and `rescales` in (0, 1], got '
                         f'{step} and {list(rescales)}')
    skipped = []

    def crops() -> Iterable[Tuple[str, np.ndarray]]:
        for path in gt_paths:
            img = mmcv.imread(path, channel_order='rgb')
            if img is None:
                raise InputError(f'{path}: cannot be read as an image')
            stem = osp.splitext(osp.basename(path))[0]
            found = False
            for r in rescales:
                scaled = _rescaled(img, r)
                h, w = scaled.shape[:2]
                for y in crop_starts(h, gt_size, step):
                    for x in crop_starts(w, gt_size, step):
                        found = True
                        yield (f'{stem}_r{round(r * 100):03d}_{y:05d}_'
                               f'{x:05d}', scaled[y:y + gt_size,
                                                  x:x + gt_size])
            if not found:
                skipped.append(path)

    names = write_sr_pairs(crops(), out_root, scales=(scale, ),
                           overwrite=overwrite)
    return names, skipped


@torch.no_grad()
def sub_image_psnrs(lr: torch.Tensor,
                    gt: torch.Tensor,
                    scale: int,
                    model: Optional[Callable] = None,
                    batch_size: int = 32) -> List[float]:
    """Y-channel PSNR (MMagic's ``psnr``, no border) of ``model`` on each
    of the (N, C, h, w) LR sub-images ``lr`` against their (N, C, sH, sW)
    GT, both in 0-1; outputs are rounded to 8 bits, as saved images are.
    With no model, of bicubic upsampling."""
    import torch.nn.functional as F
    from mmagic.evaluation.metrics.psnr import psnr

    def to_uint8(t):
        return t.clamp(0, 1).mul(255).round().permute(0, 2, 3, 1).cpu()

    device = lr.device
    if model is not None:
        device = next(model.parameters()).device
    out = []
    for x, y in zip(lr.split(batch_size), gt.split(batch_size)):
        x = x.to(device)
        if model is None:
            sr = F.interpolate(x, scale_factor=scale, mode='bicubic',
                               align_corners=False)
        else:
            sr = model(x)
        for pred, ref in zip(to_uint8(sr).numpy(), to_uint8(y).numpy()):
            out.append(float(psnr(pred, ref, 0, 'HWC', convert_to='Y',
                                  channel_order='rgb')))
    return out


def reference_psnrs(data_root: str,
                    names: Sequence[str],
                    scale: int,
                    model: Optional[Callable] = None,
                    batch_size: int = 32) -> Dict[str, float]:
    """:func:`sub_image_psnrs` of the sub-images ``names`` written under
    ``data_root`` by :func:`extract_sub_images` (bicubic with no model: a
    cheaper proxy of how hard a sub-image is), read a batch at a time."""
    import mmcv

    def load(folder, group):
        arr = np.stack([
            mmcv.imread(osp.join(data_root, folder, n), channel_order='rgb')
            for n in group
        ])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255)

    out = {}
    for first in range(0, len(names), batch_size):
        group = names[first:first + batch_size]
        psnrs = sub_image_psnrs(load(f'LR_bicubic/X{scale}', group),
                                load('HR', group), scale, model, batch_size)
        out.update(zip(group, psnrs))
    return out


def label_by_psnr(psnrs: Dict[str, float],
                  num_classes: int = 3) -> Dict[str, int]:
    """Class of each sub-image: the highest-PSNR ``1/num_classes`` are
    class 0 (simple), ..., the lowest class ``num_classes - 1`` (hard),
    split at the quantiles of the PSNRs (ties broken by name). Any score
    where higher means easier works, e.g. minus a model's gain over
    bicubic (tools/classsr_prepare.py --label-by gain)."""
    if len(psnrs) < num_classes:
        raise InputError(f'label_by_psnr: {len(psnrs)} sub-images cannot '
                         f'fill {num_classes} classes')
    order = sorted(psnrs, key=lambda n: (-psnrs[n], n))
    return {
        name: min(num_classes - 1, i * num_classes // len(order))
        for i, name in enumerate(order)
    }


def write_class_files(out_root: str, classes: Dict[str, int],
                      psnrs: Dict[str, float], gt_size: int,
                      scores: Optional[Dict[str, float]] = None
                      ) -> List[str]:
    """One meta-info file per class, one for all sub-images, and
    ``sub_images.csv`` (name, the reference's PSNR, the score ranked, by
    default the PSNR, class). Returns the paths written."""
    scores = psnrs if scores is None else scores
    names = sorted(classes)
    members = [[n for n in names if classes[n] == k]
               for k in range(len(CLASS_FILES))]
    paths = []
    for fname, group in zip(CLASS_FILES + (ALL_FILE, ), members + [names]):
        paths.append(osp.join(out_root, fname))
        with open(paths[-1], 'w') as f:
            f.write(''.join(f'{n} ({gt_size},{gt_size},3)\n' for n in group))
    paths.append(osp.join(out_root, 'sub_images.csv'))
    with open(paths[-1], 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['name', 'psnr', 'score', 'class'])
        for name in sorted(classes):
            writer.writerow([name, f'{psnrs[name]:.4f}',
                             f'{scores[name]:.4f}', classes[name]])
    return paths

