"""Helpers shared by the tests: tiny SR data and tiny MMagic configs."""
import os
import os.path as osp
from typing import Optional

import numpy as np
from mmengine.config import Config

from ghostsr_mm.apis import sr_data_config
from ghostsr_mm.datasets import write_sr_pairs


def synthetic_images(num: int, size: int = 64, seed: int = 0):
    """Smooth random RGB images (blurred noise plus gradients)."""
    import cv2
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(num):
        noise = rng.random((size // 4, size // 4, 3)).astype(np.float32)
        img = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
        img = 0.6 * img + 0.4 * np.stack([yy, xx, yy * xx], -1)
        yield f'img{i:03d}', np.clip(img * 255, 0, 255).astype(np.uint8)


def make_sr_data(root: str, num: int = 4, size: int = 64, scales=(2, ),
                 seed: int = 0) -> str:
    write_sr_pairs(synthetic_images(num, size, seed), root, scales=scales)
    return root


def tiny_sr_config(tmp_dir: str,
                   data_root: str,
                   scale: int = 2,
                   generator: Optional[dict] = None,
                   base: str = 'edsr/edsr_x2c64b16_1xb16-300k_div2k.py',
                   iters: int = 4,
                   patch: int = 32) -> Config:
    """MMagic's own config ``base``, shrunk to a few iterations on
    ``data_root`` (written by :func:`make_sr_data`) with
    :func:`ghostsr_mm.apis.sr_data_config`."""
    os.makedirs(tmp_dir, exist_ok=True)
    path = osp.join(tmp_dir, 'tiny_cfg.py')
    with open(path, 'w') as f:
        f.write(f"_base_ = 'mmagic::{base}'\n"
                "custom_imports = dict(imports=['ghostsr_mm'], "
                "allow_failed_imports=False)\n")
    work_dir = osp.join(tmp_dir, 'work')
    metrics = [
        dict(type='PSNR', crop_border=scale, convert_to='Y'),
        dict(type='SSIM', crop_border=scale, convert_to='Y'),
    ]
    cfg = sr_data_config(
        Config.fromfile(path),
        data_root,
        iters,
        scale=scale,
        gt_patch=patch,
        overrides=dict(
            work_dir=work_dir,
            val_evaluator=dict(type='Evaluator', metrics=metrics),
            test_evaluator=[dict(type='Evaluator', metrics=metrics)],
            default_hooks=dict(
                checkpoint=dict(save_optimizer=True, out_dir=work_dir),
                logger=dict(interval=1)),
            custom_hooks=[],
            randomness=dict(seed=0)))
    for loader in (cfg.val_dataloader, cfg.test_dataloader[0]):
        loader.dataset.metainfo = dict(dataset_type='tiny', task_name='sisr')
    if generator is not None:
        cfg.model.generator = generator
    cfg.visualizer = dict(
        type='ConcatImageVisualizer',
        vis_backends=[dict(type='LocalVisBackend')],
        fn_key='gt_path',
        img_keys=['gt_img', 'input', 'pred_img'],
        bgr2rgb=True)
    return cfg


def y_psnr(pred: np.ndarray, gt: np.ndarray, crop: int) -> float:
    """Y-channel PSNR (ITU-R BT.601, MATLAB's rgb2ycbcr) of uint8 RGB
    images, written out independently of MMagic's metric."""
    def y(img):
        img = img.astype(np.float64) / 255.
        return 16. + img @ np.array([65.481, 128.553, 24.966])

    a = y(pred)[crop:-crop, crop:-crop]
    b = y(gt)[crop:-crop, crop:-crop]
    mse = np.mean((a - b)**2)
    return float(10 * np.log10(255.**2 / mse))
