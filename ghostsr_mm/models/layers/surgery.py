"""Model surgery: turning regular convs of a model into ghost layers, and a
ghost model into its inference graph."""
import copy
from typing import Iterator, Sequence, Tuple

import torch.nn as nn

from .ghost_conv import GhostConv2d

__all__ = ['ghost_layers', 'ghostify', 'convert_to_inference']


def ghost_layers(model: nn.Module) -> Iterator[Tuple[str, GhostConv2d]]:
    """Yield (name, GhostConv2d) once per distinct layer (shared layers,
    as in CARN-M's recursive blocks, appear once)."""
    seen = set()
    for name, module in model.named_modules():
        if isinstance(module, GhostConv2d) and id(module) not in seen:
            seen.add(id(module))
            yield name, module


def ghostify(model: nn.Module, names: Sequence[str], **layer_args) -> None:
    """Replace the ``nn.Conv2d`` submodules ``names`` by GhostConv2d layers
    built with :meth:`GhostConv2d.from_conv`, in place."""
    for name in names:
        parent_name, _, attr = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        conv = getattr(parent, attr)
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f'ghostify: {name!r} is a {type(conv).__name__}, '
                            'expected nn.Conv2d')
        setattr(parent, attr, GhostConv2d.from_conv(
            conv, name=name, **layer_args))


def convert_to_inference(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fix every learnable shift to argmax W' and drop W' (the inference
    graph). Outputs equal the eval-mode outputs of ``model`` exactly.

    Args:
        model (nn.Module): A model with GhostConv2d layers.
        inplace (bool): Modify ``model`` itself. Default: False (a copy).

    Returns:
        nn.Module: The converted model, in eval mode.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for _, layer in ghost_layers(model):
        layer.fix_shift()
    return model.eval()
