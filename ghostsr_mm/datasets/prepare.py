"""Writing and checking super-resolution data in MMagic's folder layout.

MMagic's ``BasicImageDataset`` reads paired folders: ground truth images in
``<root>/<gt_dir>`` and their bicubic LR versions, with the same file names,
in ``<root>/<lr_dir>``. The LR images here are made with MMagic's
MATLAB-like bicubic resize (the DIV2K / Set5 convention).
"""
import os
import os.path as osp
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from mmcv import imwrite
from mmagic.datasets.transforms import MATLABLikeResize

from ghostsr_mm.utils import InputError

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W to multiples of ``scale`` (as MMagic's GTmod12 sets)."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def bicubic_downscale(img: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-like bicubic downscaling of a uint8 HxWx3 image."""
    out = MATLABLikeResize(keys=['img'], scale=1 / scale)(
        dict(img=img.astype(np.float32)))['img']
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def write_sr_pairs(images: Iterable[Tuple[str, np.ndarray]],
                   root: str,
                   scales: Iterable[int] = (2, ),
                   gt_dir: str = 'HR',
                   lr_dir: str = 'LR_bicubic/X{scale}',
                   overwrite: bool = False) -> List[str]:
    """Write GT images and their bicubic LR versions for each scale.

    Args:
        images (Iterable[tuple[str, ndarray]]): (name, uint8 HxWx3 RGB).
        root (str): Folder to write into.
        scales (Iterable[int]): Downscaling factors. Default: (2, ).
        gt_dir (str): GT sub-folder. Default: 'HR'.
        lr_dir (str): LR sub-folder, formatted with ``scale``.
        overwrite (bool): Replace existing files. Default: False, in which
            case an existing file raises ``FileExistsError``.

    Returns:
        list[str]: The names written (``<name>.png``).
    """
    scales = list(scales)
    lcm = int(np.lcm.reduce(scales))
    names = []
    for name, img in images:
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f'image {name!r}: expected a uint8 HxWx3 RGB '
                             f'array, got {img.dtype} {img.shape}')
        gt = mod_crop(img, lcm)
        targets = {osp.join(root, gt_dir, f'{name}.png'): gt}
        for s in scales:
            targets[osp.join(root, lr_dir.format(scale=s),
                             f'{name}.png')] = bicubic_downscale(gt, s)
        for path, arr in targets.items():
            if osp.exists(path) and not overwrite:
                raise FileExistsError(
                    f'{path} exists; pass overwrite=True to replace it')
            imwrite(arr[..., ::-1], path)  # mmcv writes BGR
        names.append(f'{name}.png')
    return names


def check_sr_data_root(data_root: str,
                       data_prefix: Dict[str, str],
                       ann_file: Optional[str] = None,
                       dataset_name: str = 'dataset') -> None:
    """Raise a clear error when an SR dataset is not where a config says.

    Args:
        data_root (str): The dataset's ``data_root``.
        data_prefix (dict): The dataset's ``data_prefix`` (``img``, ``gt``).
        ann_file (str, optional): Meta-info file relative to ``data_root``.
        dataset_name (str): Name used in the message.
    """
    missing = []
    for key, sub in sorted(data_prefix.items()):
        path = osp.join(data_root, sub)
        if not osp.isdir(path):
            missing.append(f'{key}: {path}/ (folder missing)')
        elif not any(f.lower().endswith(IMG_EXTENSIONS)
                     for f in os.listdir(path)):
            missing.append(f'{key}: {path}/ (no images)')
    if ann_file:
        path = osp.join(data_root, ann_file)
        if not osp.isfile(path):
            missing.append(f'ann_file: {path} (file missing)')
    if missing:
        raise FileNotFoundError(
            f'{dataset_name} data not found. Expected:\n  ' +
            '\n  '.join(missing) +
            '\nSee README.md, section "Data preparation", for the layout and '
            "MMagic's DIV2K preparation (sub-image cropping, meta-info file).")


def _image_names(folder: str) -> Dict[str, str]:
    return {
        f: osp.join(folder, f)
        for f in sorted(os.listdir(folder))
        if f.lower().endswith(IMG_EXTENSIONS)
    }


def _image_size(path: str) -> Tuple[int, int]:
    """(H, W) of an image file, checking that the whole file is there
    (PIL reads the header and verifies the chunks without decoding)."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            size = img.size
            img.verify()
    except Exception as err:
        raise InputError(f'{path}: not a readable image, truncated or '
                         f'corrupt ({type(err).__name__}: {err})') from None
    return size[1], size[0]


def check_sr_pairs(data_root: str,
                   data_prefix: Dict[str, str],
                   scale: Optional[int] = None,
                   dataset_name: str = 'dataset',
                   max_files: Optional[int] = None) -> int:
    """Check the LR/GT pairs of a folder-pair dataset (``data_prefix`` with
    ``img`` and ``gt``, the same file names in both): every GT image has an
    LR partner and every LR image a GT one; every image file is complete and
    readable; every GT is ``scale`` times its LR (or the same integer
    multiple for all pairs when ``scale`` is None).

    Args:
        max_files (int, optional): Read the headers of at most this many
            pairs (the pairing itself is always checked in full). Default:
            None (all).

    Returns:
        int: The number of pairs.

    Raises:
        ValueError: Naming the files at fault.
    """
    if set(data_prefix) != {'img', 'gt'}:
        return 0
    lr = _image_names(osp.join(data_root, data_prefix['img']))
    gt = _image_names(osp.join(data_root, data_prefix['gt']))
    for have, lack, what in ((gt, lr, 'GT images without an LR partner'),
                             (lr, gt, 'LR images without a GT partner')):
        alone = [have[n] for n in have if n not in lack]
        if alone:
            more = f' and {len(alone) - 3} more' if len(alone) > 3 else ''
            raise InputError(f'{dataset_name}: {len(alone)} {what} (same '
                             f'file name expected): {", ".join(alone[:3])}'
                             f'{more}')
    ratios = {}
    for name in list(gt)[:max_files]:
        (gh, gw), (lh, lw) = _image_size(gt[name]), _image_size(lr[name])
        expected = scale or (gh // lh if lh else 0) or 1
        if (gh, gw) != (lh * expected, lw * expected):
            raise InputError(
                f'{dataset_name}: {gt[name]} is {gh}x{gw} but its LR '
                f'partner {lr[name]} is {lh}x{lw}; expected the GT to be '
                f'{expected}x the LR ({lh * expected}x{lw * expected})')
        ratios.setdefault(expected, name)
    if len(ratios) > 1:
        raise InputError(f'{dataset_name}: pairs of different scales: '
                         + ', '.join(f'{n} is x{r}'
                                     for r, n in sorted(ratios.items())))
    return len(gt)


# Training sets can hold tens of thousands of sub-images: their headers are
# read up to this many pairs (val/test sets in full).
TRAIN_SCAN_LIMIT = 2000


def check_config_data(cfg, phases: Sequence[str] = ('train', 'val')) -> None:
    """Check, before a Runner is built, that every dataset of the given
    phases of an MMagic config exists (see :func:`check_sr_data_root`) and
    that its LR/GT pairs are sound (see :func:`check_sr_pairs`)."""
    scale = cfg.get('scale', None)
    for phase in phases:
        loaders = cfg.get(f'{phase}_dataloader')
        if loaders is None:
            continue
        if isinstance(loaders, dict):
            loaders = [loaders]
        for loader in loaders:
            dataset = loader['dataset']
            data_root = dataset.get('data_root', '')
            name = dataset.get('metainfo', {}).get('dataset_type', phase)
            prefix = dict(dataset.get('data_prefix', {}))
            label = f'{phase} dataset {name!r}'
            check_sr_data_root(data_root, prefix,
                               dataset.get('ann_file') or None, label)
            tmpl = dataset.get('filename_tmpl', {}) or {}
            if all(t == '{}' for t in tmpl.values()):
                check_sr_pairs(
                    data_root, prefix, scale, label,
                    TRAIN_SCAN_LIMIT if phase == 'train' else None)
