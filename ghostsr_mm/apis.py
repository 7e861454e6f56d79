"""Building and loading generators from MMagic configs, shared by the
tools, the demo and the benchmarks."""
from typing import Optional

import torch.nn as nn
from mmengine.config import Config

from ghostsr_mm.models.clustering import load_pretrained_state

__all__ = ['build_generator', 'load_generator', 'write_data_config']


def build_generator(config, cfg_options: Optional[dict] = None) -> nn.Module:
    """``model.generator`` of an MMagic config (path or Config)."""
    from mmagic.registry import MODELS
    from mmagic.utils import register_all_modules
    register_all_modules()
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return MODELS.build(cfg.model.generator)


def load_generator(model: nn.Module, checkpoint: str) -> nn.Module:
    """Load a generator's weights (bare or MMagic checkpoint, loaded with
    ``weights_only=True``), strictly: a checkpoint of another architecture
    raises an error naming the missing and unexpected keys."""
    state = load_pretrained_state(checkpoint)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f'{checkpoint} does not match {type(model).__name__}: missing '
            f'keys {missing[:5]}{"..." if len(missing) > 5 else ""}, '
            f'unexpected keys {unexpected[:5]}'
            f'{"..." if len(unexpected) > 5 else ""}')
    return model


def write_data_config(path: str,
                      base: str,
                      data_root: str,
                      iters: int,
                      scale: int = 2,
                      batch_size: int = 2,
                      gt_patch: int = 32,
                      num_workers: int = 0,
                      lr_dir: str = 'LR_bicubic/X{scale}',
                      gt_dir: str = 'HR',
                      val_root: Optional[str] = None,
                      extra: str = '') -> str:
    """Write a config that inherits ``base`` (a config of configs/ghostsr)
    and trains/validates/tests on one folder pair written by
    :func:`ghostsr_mm.datasets.write_sr_pairs`.

    Args:
        path (str): Config file to write.
        base (str): Absolute path of the config to inherit.
        data_root (str): Folder with ``gt_dir`` and ``lr_dir``.
        iters (int): Training iterations (validation and a checkpoint at
            the end).
        val_root (str, optional): Folder (same layout) to validate and test
            on. Default: ``data_root``.
        extra (str): More config lines (e.g. a generator override).

    Returns:
        str: ``path``.
    """
    prefix = dict(img=lr_dir.format(scale=scale), gt=gt_dir)
    val_root = val_root or data_root
    text = f"""_base_ = {base!r}
_data = dict(data_root={data_root!r}, ann_file='', data_prefix={prefix!r})
_val = dict(_data, data_root={val_root!r})
_pipeline = _base_.train_pipeline
_pipeline[3] = dict(type='PairedRandomCrop', gt_patch_size={gt_patch})
train_dataloader = dict(num_workers={num_workers}, batch_size={batch_size},
                        persistent_workers=False,
                        dataset=dict(pipeline=_pipeline, **_data))
val_dataloader = dict(num_workers=0, dataset=_val)
test_dataloader = [dict(_base_.test_dataloader[0], num_workers=0)]
test_dataloader[0]['dataset'].update(_val)
test_evaluator = [_base_.test_evaluator[0]]
max_iters = {iters}
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=max(1, max_iters // 10)),
                     checkpoint=dict(interval=max_iters, out_dir=None))
{extra}
"""
    with open(path, 'w') as f:
        f.write(text)
    return path
