"""Building and loading generators from MMagic configs, shared by the
tools, the demo and the benchmarks."""
from typing import Optional

import torch.nn as nn
from mmengine.config import Config

from ghostsr_mm.models.clustering import load_pretrained_state

__all__ = ['build_generator', 'load_generator']


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
