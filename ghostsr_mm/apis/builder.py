"""Building and loading generators from MMagic configs, and small data
configs, shared by the tools, the demo, the benchmarks and the tests."""
import os.path as osp
from typing import Optional, Union

import torch.nn as nn
from mmengine.config import Config

from ghostsr_mm.checkpoint import (check_state_matches, load_generator,
                                   load_generator_state)

__all__ = [
    'build_generator', 'load_generator', 'load_sr_model', 'sr_data_config',
    'write_data_config'
]


def build_generator(config: Union[str, Config],
                    cfg_options: Optional[dict] = None) -> nn.Module:
    """``model.generator`` of an MMagic config (path or Config)."""
    from mmagic.registry import MODELS
    from mmagic.utils import register_all_modules
    register_all_modules()
    if isinstance(config, str) and not osp.isfile(config):
        raise FileNotFoundError(f'config file {config} not found')
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return MODELS.build(cfg.model.generator)


def load_sr_model(config: Union[str, Config],
                  checkpoint: str,
                  device: str = 'cpu') -> nn.Module:
    """The generator of ``config`` with ``checkpoint``'s weights, ready for
    inference (eval mode, on ``device``).

    Takes a regular checkpoint, a ghost training-graph checkpoint (its
    learnable shifts are fixed to argmax W', the inference graph) or a
    deployed inference-graph checkpoint (``tools/deploy.py``), with the
    config the model was trained with. A checkpoint that does not hold
    exactly that model is refused (see
    :func:`ghostsr_mm.checkpoint.check_state_matches`).
    """
    from ghostsr_mm.models.layers import convert_to_inference, ghost_layers
    model = build_generator(config)
    state = load_generator_state(checkpoint)
    deployed = any(k.endswith('.offsets') for k in state) and not any(
        k.endswith('.shift_logits') for k in state)
    if deployed and any(layer.cheap_op == 'learnable'
                        for _, layer in ghost_layers(model)):
        model = convert_to_inference(model, inplace=True)
    check_state_matches(model, state, checkpoint)
    model.load_state_dict(state)
    return convert_to_inference(model, inplace=True).to(device)


def _as_list(loaders):
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def sr_data_config(base: Union[str, Config],
                   data_root: str,
                   iters: int,
                   scale: int = 2,
                   batch_size: int = 2,
                   gt_patch: int = 32,
                   num_workers: int = 0,
                   lr_dir: str = 'LR_bicubic/X{scale}',
                   gt_dir: str = 'HR',
                   val_root: Optional[str] = None,
                   overrides: Optional[dict] = None) -> Config:
    """An MMagic SR config (``base``) made to train, validate and test on
    one folder pair written by :func:`ghostsr_mm.datasets.write_sr_pairs`,
    for ``iters`` iterations (validation and a checkpoint at the end).

    Args:
        base (str | Config): The config to start from, e.g. one of
            configs/ghostsr or ``mmagic::edsr/...``.
        data_root (str): Folder with ``gt_dir`` and ``lr_dir``.
        iters (int): Training iterations; the LR schedule is stretched to
            them (:func:`fit_schedule`).
        val_root (str, optional): Folder (same layout) to validate and test
            on. Default: ``data_root``.
        overrides (dict, optional): Merged last (``Config.merge_from_dict``),
            e.g. ``dict(model=dict(generator=dict(mid_channels=16)))``.

    Returns:
        Config: Use it directly or :meth:`Config.dump` it for the tools.
    """
    cfg = base.copy() if isinstance(base, Config) else Config.fromfile(base)
    prefix = dict(img=lr_dir.format(scale=scale), gt=gt_dir)
    data = dict(data_root=data_root, ann_file='', data_prefix=prefix)
    held_out = dict(data, data_root=val_root or data_root)
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'PairedRandomCrop':
            step['gt_patch_size'] = gt_patch
    cfg.train_dataloader.update(
        num_workers=num_workers,
        batch_size=batch_size,
        persistent_workers=False)
    cfg.train_dataloader.dataset.update(data)
    val = _as_list(cfg.val_dataloader)[0]
    val.update(num_workers=0, persistent_workers=False)
    val.dataset.update(held_out)
    cfg.val_dataloader = val
    cfg.val_evaluator = _as_list(cfg.val_evaluator)[0]
    test = _as_list(cfg.test_dataloader)[0]
    test.update(num_workers=0, persistent_workers=False)
    test.dataset.update(held_out)
    cfg.test_dataloader = [test]
    cfg.test_evaluator = [_as_list(cfg.test_evaluator)[0]]
    cfg.test_cfg = dict(type='MultiTestLoop')
    cfg.val_cfg = dict(type='MultiValLoop')
    old_iters = cfg.train_cfg.get('max_iters') or cfg.get('max_iters')
    cfg.max_iters = iters
    cfg.train_cfg.update(max_iters=iters, val_interval=iters)
    cfg.default_hooks.logger = dict(
        type='LoggerHook', interval=max(1, iters // 10))
    cfg.default_hooks.checkpoint.update(interval=iters, out_dir=None)
    if old_iters and 'param_scheduler' in cfg:
        fit_schedule(cfg.param_scheduler, old_iters, iters)
    if overrides:
        cfg.merge_from_dict(overrides)
    return cfg


def fit_schedule(schedulers, old_iters: int, iters: int) -> None:
    """Stretch iteration-based LR schedulers (a dict or a list of them)
    written for ``old_iters`` iterations to ``iters``, in place: a cosine
    ``T_max`` spans the new training, ``milestones``, ``begin`` and ``end``
    keep their share of it."""
    ratio = iters / old_iters
    for sched in _as_list(schedulers):
        if sched.get('by_epoch', True) is not False:
            continue
        for key in ('begin', 'end'):
            if key in sched:
                sched[key] = min(iters, round(sched[key] * ratio))
        if 'milestones' in sched:
            sched['milestones'] = [
                max(1, round(m * ratio)) for m in sched['milestones']
            ]
        if 'T_max' in sched:
            sched['T_max'] = max(
                1, sched.get('end', iters) - sched.get('begin', 0))


def write_data_config(path: str, base: Union[str, Config], data_root: str,
                      iters: int, **kwargs) -> str:
    """:func:`sr_data_config` written to ``path`` (a config file the tools
    take). Returns ``path``."""
    sr_data_config(base, data_root, iters, **kwargs).dump(path)
    return path
