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
            raise ValueError(f'image {name!r}: expected a uint8 HxWx3 RGB '
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


def check_config_data(cfg, phases: Sequence[str] = ('train', 'val')) -> None:
    """Check, before a Runner is built, that every dataset of the given
    phases of an MMagic config exists (see :func:`check_sr_data_root`)."""
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
            check_sr_data_root(data_root, dict(dataset.get('data_prefix', {})),
                               dataset.get('ann_file') or None,
                               f'{phase} dataset {name!r}')
