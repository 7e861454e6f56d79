"""The shift oracle: for a trained ghost model, the validation loss of every
candidate offset of every ghost layer, the other layers held, so one can
see whether learning (GhostSR Eq. 3-6) picked the best offset.

Used by ``tools/analysis/shift_oracle.py``. Evaluate on a validation split
of the training photos, never on the test photos.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ghostsr_mm.models.layers import GhostConv2d, ghost_layers

__all__ = ['LayerOracle', 'shift_oracle']


@dataclass
class LayerOracle:
    """Validation loss of each candidate offset of one ghost layer.

    Attributes:
        name (str): The layer.
        learned (tuple[int, int]): The offset the model has.
        losses (dict): (dy, dx) -> validation loss with that offset (the
            other layers as learned).
    """
    name: str
    learned: Tuple[int, int]
    losses: Dict[Tuple[int, int], float]

    @property
    def best(self) -> Tuple[int, int]:
        return min(self.losses, key=self.losses.get)

    @property
    def regret(self) -> float:
        """Loss of the learned offset minus the best one's (>= 0)."""
        return self.losses[self.learned] - self.losses[self.best]


def _layer_offset(layer: GhostConv2d) -> Tuple[int, int]:
    shifts = layer.current_offsets()[layer.ghost_channels]
    if not (shifts == shifts[0]).all():
        raise ValueError('shift_oracle: a layer with one shift per ghost '
                         'channel (per_channel_shift) is not supported')
    return int(shifts[0, 0]), int(shifts[0, 1])


@torch.no_grad()
def shift_oracle(model: nn.Module,
                 batches: Sequence[Tuple[Tensor, Tensor]],
                 loss: Callable[[Tensor, Tensor], Tensor] = (
                     lambda sr, gt: (sr - gt).abs().mean()),
                 choose: bool = False) -> List[LayerOracle]:
    """Try every candidate offset of every ghost layer of ``model``.

    With ``choose=True`` each layer keeps its best offset before the next
    layer is tried (a greedy pass in network order), so the model leaves
    with offsets chosen on the validation loss; as every layer's current
    offset is a candidate, that loss never rises.

    Args:
        model (nn.Module): A ghost model in its inference graph (fixed
            shifts, one per layer), e.g. from
            :func:`ghostsr_mm.apis.load_sr_model`.
        batches (Sequence[tuple[Tensor, Tensor]]): (LR, GT) validation
            batches.
        loss (callable): Validation loss of (SR, GT). Default: L1.
        choose (bool): Keep each layer's best offset. Default: False (the
            model is left as it came).

    Returns:
        list[LayerOracle]: One per ghost layer, in network order.
    """
    layers = list(ghost_layers(model))
    if not layers:
        raise ValueError(f'shift_oracle: {type(model).__name__} has no '
                         'ghost layer')
    for name, layer in layers:
        if layer.cheap_op != 'fixed':
            raise ValueError(f'shift_oracle: layer {name} is '
                             f'{layer.cheap_op!r}; convert the model to '
                             'its inference graph (fixed shifts) first')

    def evaluate() -> float:
        total = 0.0
        for lr, gt in batches:
            total += float(loss(model(lr), gt)) * len(lr)
        return total / sum(len(lr) for lr, _ in batches)

    model.eval()
    results = []
    for name, layer in layers:
        learned = _layer_offset(layer)
        d = layer.max_offset
        losses = {}
        try:
            for dy in range(-d, d + 1):
                for dx in range(-d, d + 1):
                    layer.offsets[layer.ghost_channels] = torch.tensor(
                        [dy, dx], device=layer.offsets.device)
                    losses[(dy, dx)] = evaluate()
        finally:
            kept = learned
            if choose and len(losses) == (2 * d + 1)**2:
                kept = min(losses, key=losses.get)
            layer.offsets[layer.ghost_channels] = torch.tensor(
                kept, device=layer.offsets.device)
        results.append(LayerOracle(name, learned, losses))
    return results
