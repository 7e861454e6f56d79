"""ClassSR's narrow branches started from a wide trained CARN / CARN-M:
:func:`narrowed_state_dict`, and ``init_cfg=dict(type='NarrowedPretrained',
checkpoint=PATH)`` for a generator config."""
from typing import Dict

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model.weight_init import update_init_info
from mmagic.registry import WEIGHT_INITIALIZERS
from torch import Tensor

from ..carn import CARNNet

__all__ = ['NarrowedPretrainedInit', 'narrowed_state_dict']


def narrowed_state_dict(state_dict: Dict[str, Tensor],
                        model: CARNNet) -> Dict[str, Tensor]:
    """The weights of a wider trained CARN / CARN-M cut to ``model``'s
    width (``mid_channels``): a start for a narrow network (e.g. ClassSR's
    simple and medium branches) that fine-tuning makes good far sooner than
    training from scratch.

    Every feature map keeps the first ``width / groups`` channels of each
    of its channel groups (the groups of CARN-M's group convs; CARN has
    one), the same channels everywhere, as the residual adds require; an
    upsampler conv keeps the pixel-shuffle outputs of those channels, a
    fusion the same channels of every part of its concatenation. Where the
    dropped channels of the wide network are zero, the narrow network
    computes the same function.

    Args:
        state_dict (dict): A regular :class:`CARNNet`'s weights, at least as
            wide as ``model``, with the same blocks, scales and groups.
        model (CARNNet): The narrower regular model (not a ghost model:
            narrow the regular network, then cluster it into a ghost one).

    Returns:
        dict: ``model``'s state dict, filled from ``state_dict``.
    """
    if type(model) is not CARNNet:
        raise ValueError('narrowed_state_dict: `model` must be a regular '
                         f'CARNNet, got {type(model).__name__}')
    if 'entry.weight' not in state_dict:
        raise ValueError('narrowed_state_dict: `state_dict` has no '
                         "'entry.weight'; expected a CARNNet's weights")
    wide, width = state_dict['entry.weight'].shape[0], model.entry.out_channels
    groups = max(m.groups for m in model.modules()
                 if isinstance(m, nn.Conv2d))
    if wide < width or wide % groups:
        raise ValueError(
            f'narrowed_state_dict: the state dict has {wide} feature '
            f'channels; expected at least the model\'s {width}, in '
            f'{groups} equal groups')
    per_group = width // groups
    keep = torch.cat([
        torch.arange(per_group) + g * (wide // groups) for g in range(groups)
    ])
    shuffled = {
        f'upsamplers.{key}.{i}'
        for key, up in model.upsamplers.items() for i in up.conv_names()
    }

    def parts(index: Tensor, size: int) -> Tensor:
        """``index`` in every ``wide``-channel part of a ``size`` axis."""
        return (torch.arange(size // wide)[:, None] * wide + index).flatten()

    out = {}
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        missing = [f'{name}.{p}' for p in ('weight', 'bias')
                   if f'{name}.{p}' not in state_dict]
        if missing:
            raise ValueError(f'narrowed_state_dict: `state_dict` lacks '
                             f'{missing}; expected a CARNNet with the '
                             "model's blocks, scales and groups")
        weight, bias = state_dict[f'{name}.weight'], state_dict[f'{name}.bias']
        rows = torch.arange(weight.shape[0])
        if conv.out_channels != weight.shape[0]:
            if name in shuffled:  # (channel, r^2 sub-pixels) outputs
                r2 = weight.shape[0] // wide
                rows = (keep[:, None] * r2 + torch.arange(r2)).flatten()
            else:
                rows = parts(keep, weight.shape[0])
        cols = torch.arange(weight.shape[1])
        if conv.groups > 1:
            if weight.shape[1] * conv.groups != wide:
                raise ValueError(
                    f'narrowed_state_dict: {name}.weight reads '
                    f'{weight.shape[1]} channels per group, so its '
                    f'{wide} channels are not in the model\'s {conv.groups} '
                    'groups')
            cols = torch.arange(per_group)  # the first of its own group
        elif conv.in_channels != weight.shape[1]:
            cols = parts(keep, weight.shape[1])
        weight = weight[rows][:, cols]
        if weight.shape != conv.weight.shape:
            raise ValueError(
                f'narrowed_state_dict: {name}.weight of shape '
                f'{tuple(state_dict[f"{name}.weight"].shape)} cannot be cut '
                f'to the model\'s {tuple(conv.weight.shape)}; expected a '
                "CARNNet with the model's blocks, scales and groups")
        out[f'{name}.weight'], out[f'{name}.bias'] = weight, bias[rows]
    return {k: v.clone() for k, v in out.items()}


@WEIGHT_INITIALIZERS.register_module(name='NarrowedPretrained')
class NarrowedPretrainedInit:
    """``init_cfg=dict(type='NarrowedPretrained', checkpoint=PATH)``: start
    a :class:`CARNNet` from a wider trained one (a bare state dict or an
    MMagic checkpoint of it), cut to its width by
    :func:`narrowed_state_dict`; e.g. ClassSR's simple and medium branches
    from the network ClassSR accelerates. The file is read weights-only.
    """

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint

    def __call__(self, module: nn.Module) -> None:
        from ghostsr_mm.checkpoint import CheckpointError, load_generator_state
        state = load_generator_state(self.checkpoint)
        try:
            module.load_state_dict(narrowed_state_dict(state, module))
        except ValueError as err:
            raise CheckpointError(f'{self.checkpoint}: {err}') from None
        print_log(f'{type(module).__name__} (width '
                  f'{module.entry.out_channels}) cut from the width-'
                  f'{state["entry.weight"].shape[0]} network in '
                  f'{self.checkpoint}', logger='current')
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())

    def _get_init_info(self) -> str:
        return f'NarrowedPretrained: cut from {self.checkpoint}'
