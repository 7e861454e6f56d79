"""Helpers shared by the tests: tiny SR data, tiny MMagic configs, and the
tools run as from the command line."""
import contextlib
import importlib.util
import io
import os
import os.path as osp
import subprocess
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


ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def free_port() -> int:
    """A TCP port free now (tests run in parallel workers)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def load_tool(path: str):
    """A tool module by its path under the repository (tools/ is not a
    package; `test` would also clash with the standard library's)."""
    spec = importlib.util.spec_from_file_location(
        'tool_' + osp.basename(path)[:-3], osp.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(path: str, *argv) -> subprocess.CompletedProcess:
    """``python PATH ARGV...`` run in this process, through the same
    ``run_tool`` wrapper as the command line: its exit status, stdout and
    stderr (a defect's exception propagates with its traceback). What
    mmengine made for the run (loggers with their files, message hubs,
    visualizers) is closed and forgotten after it, as at a process's end,
    so no later test logs to this run's streams."""
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.visualization import Visualizer

    from ghostsr_mm.cli import run_tool as run
    managers = (MMLogger, MessageHub, Visualizer)
    before = {cls: set(cls._instance_dict) for cls in managers}
    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = run(load_tool(path).main, argv)
            except SystemExit as exit:  # argparse's usage errors
                status = exit.code if isinstance(exit.code, int) else 1
    finally:
        for cls in managers:
            for name in set(cls._instance_dict) - before[cls]:
                instance = cls._instance_dict.pop(name)
                if isinstance(instance, Visualizer):
                    instance.close()
                for handler in getattr(instance, 'handlers', [])[:]:
                    handler.close()
                    instance.removeHandler(handler)
    return subprocess.CompletedProcess([path, *argv], status,
                                       out.getvalue(), err.getvalue())
