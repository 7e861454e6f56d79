"""The cheap operations of a :class:`GhostConv2d`: how its ghost channels
are made from its intrinsic ones.

Each is one small class. It keeps its tensors on the layer itself (so the
state-dict keys are the layer's: ``shift_logits``, ``offsets``,
``cheap.weight``) and answers four questions: which tensors it adds
(:meth:`~CheapOperation.setup`), the (C_out, 2) offsets it shifts by in
eval mode (:meth:`~CheapOperation.offsets`), how it runs
(:meth:`~CheapOperation.forward`) and what it becomes in the inference graph
(:meth:`~CheapOperation.fixed`). A new cheap operation is a new class here
and an entry in :data:`CHEAP_OPS`.

* ``learnable`` — the paper's learned shift (Eq. 3-6): proxy weights W' over
  the (2d+1)x(2d+1) window, a straight-through one-hot weight in training,
  argmax W' in eval;
* ``fixed`` — given offsets, saved in the state dict (the inference graph);
* ``copy`` — offset 0 (Table 3's "no learnable shift");
* ``depthwise`` — a 3x3 depthwise conv of the intrinsic features
  (Ghost-DW of Table 2, GhostNet's cheap operation).
"""
from typing import TYPE_CHECKING, Dict, Optional, Type

import torch
import torch.nn as nn
from torch import Tensor

from ghostsr_mm.ops import (apply_epilogue, candidate_offsets, ghost_shift,
                            learnable_ghost_shift)

if TYPE_CHECKING:  # pragma: no cover
    from .ghost_conv import GhostConv2d

__all__ = [
    'CheapOperation', 'LearnableShift', 'FixedShift', 'Copy', 'Depthwise',
    'CHEAP_OPS', 'cheap_operation'
]


class CheapOperation:
    """Base class: a zero shift of every ghost channel (a copy)."""

    name = 'copy'

    def setup(self, layer: 'GhostConv2d', factory: dict) -> None:
        """Register the operation's parameters and buffers on ``layer``."""
        layer.register_buffer(
            'offsets',
            torch.zeros(
                layer.out_channels, 2, dtype=torch.long,
                device=factory.get('device')),
            persistent=False)

    def offsets(self, layer: 'GhostConv2d') -> Tensor:
        """(C_out, 2) shifts of the output channels in eval mode."""
        return layer.offsets

    def forward(self, layer: 'GhostConv2d', intrinsic: Tensor,
                residual: Optional[Tensor], scale: float, relu: bool,
                out: Optional[Tensor]) -> Tensor:
        """The layer's output from its intrinsic features, with the
        epilogue ``act(scale * y + residual)``, written into ``out`` when
        given."""
        return ghost_shift(intrinsic, layer.src, self.offsets(layer),
                           residual, scale, relu, out)

    def fixed(self, layer: 'GhostConv2d') -> 'CheapOperation':
        """The operation of the inference graph (installed by
        :meth:`GhostConv2d.fix_shift`); itself unless it learns."""
        return self


class Copy(CheapOperation):
    """Ghost channels are unshifted copies (Table 3, no learnable shift)."""

    name = 'copy'


class FixedShift(CheapOperation):
    """Given offsets, part of the state dict: the inference graph."""

    name = 'fixed'

    def setup(self, layer, factory) -> None:
        layer.register_buffer(
            'offsets',
            torch.zeros(
                layer.out_channels, 2, dtype=torch.long,
                device=factory.get('device')))


class LearnableShift(CheapOperation):
    """The learned shift of GhostSR Eq. 3-6 (see :class:`GhostConv2d` for
    the relaxation): one window of proxy weights W' per layer, or per ghost
    channel with ``per_channel_shift``."""

    name = 'learnable'

    def setup(self, layer, factory) -> None:
        super().setup(layer, factory)
        k = 2 * layer.max_offset + 1
        rows = layer.num_ghost if layer.per_channel_shift else 1
        # W' of Eq. 4; a bias towards the centre makes an untrained layer a
        # plain copy in eval mode instead of an arbitrary shift.
        logits = torch.zeros(rows, k, k, **factory)
        logits[:, layer.max_offset, layer.max_offset] = layer.zero_shift_bias
        layer.shift_logits = nn.Parameter(logits)

    def offsets(self, layer) -> Tensor:
        """argmax W' for the ghost channels, 0 for the intrinsic ones."""
        shifts = candidate_offsets(
            layer.shift_logits.detach().flatten(1).argmax(1),
            layer.max_offset)
        offsets = torch.zeros_like(layer.offsets)
        offsets[layer.ghost_channels] = shifts.expand(layer.num_ghost, 2)
        return offsets

    def forward(self, layer, intrinsic, residual, scale, relu, out):
        if not layer.training:
            return super().forward(layer, intrinsic, residual, scale, relu,
                                   out)
        layer.check_noise_driven()
        moved = learnable_ghost_shift(intrinsic, layer.src,
                                      layer.ghost_channels,
                                      layer.straight_through_weight(),
                                      residual, scale, relu)
        return moved if out is None else apply_epilogue(moved, out=out)

    def fixed(self, layer) -> CheapOperation:
        offsets = self.offsets(layer)
        del layer.shift_logits
        del layer.offsets
        layer.register_buffer('offsets', offsets)
        return FixedShift()


class Depthwise(CheapOperation):
    """A 3x3 depthwise conv of the intrinsic features makes the ghosts
    (Ghost-DW, Table 2): ghost j is cheap(intrinsic)[src[j]]."""

    name = 'depthwise'

    def setup(self, layer, factory) -> None:
        super().setup(layer, factory)
        m = layer.num_intrinsic
        layer.cheap = nn.Conv2d(m, m, 3, padding=1, groups=m, **factory)

    def forward(self, layer, intrinsic, residual, scale, relu, out):
        both = torch.cat([intrinsic, layer.cheap(intrinsic)], 1)
        # A ghost reads the cheap half: src + m. Out of place, one kernel,
        # no read back to the host.
        ghost = layer.ghost_channels
        src = layer.src.index_add(0, ghost,
                                  torch.full_like(ghost, layer.num_intrinsic))
        return ghost_shift(both, src, layer.offsets, residual, scale, relu,
                           out)


CHEAP_OPS: Dict[str, Type[CheapOperation]] = {
    cls.name: cls
    for cls in (LearnableShift, FixedShift, Copy, Depthwise)
}


def cheap_operation(name: str, where: str = 'GhostConv2d') -> CheapOperation:
    """The cheap operation called ``name`` (see :data:`CHEAP_OPS`)."""
    if name not in CHEAP_OPS:
        raise ValueError(f'{where}: unknown `cheap_op` {name!r}; expected '
                         f'one of {tuple(CHEAP_OPS)}')
    return CHEAP_OPS[name]()
