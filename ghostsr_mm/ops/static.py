"""The ghost shift with offsets and sources known when a graph is built:
channel slices, zero pads and one concat, all with constant bounds.

This is how the shift is exported to ONNX (``torch.onnx.export`` of a
deployed model, whose offsets are fixed): ONNX Runtime then runs it as
copies, where the general reference (a gather per output element with
computed indices) would cost more than the convolution it replaces. Uses
the standard operators Pad (a shift is one pad with a negative side),
Slice and Concat (plus Gather for a clustering map whose channels are not
in runs), so any ONNX runtime can run it; the epilogue is Mul/Add/Relu.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .epilogue import apply_epilogue

__all__ = ['ghost_shift_static']


def _shifted(x: Tensor, dy: int, dx: int) -> Tensor:
    """``out[..., y, x] = x[..., y - dy, x - dx]``, zero outside: one pad
    that adds ``dy`` rows on one side and removes them on the other (a
    negative pad crops), so one pass. A shift of the whole height or width
    or more leaves only zeros (a pad cannot crop more than the size)."""
    if dy == 0 and dx == 0:
        return x
    if abs(dy) >= x.shape[-2] or abs(dx) >= x.shape[-1]:
        return torch.zeros_like(x)
    return F.pad(x, (dx, -dx, dy, -dy))


def _runs(src: List[int],
          offsets: List[Tuple[int, int]]) -> List[Tuple[int, int, int, int]]:
    """(first source, length, dy, dx) of each run of consecutive output
    channels that read consecutive sources with one offset."""
    runs: List[List[int]] = []
    for s, (dy, dx) in zip(src, offsets):
        if runs and runs[-1][0] + runs[-1][1] == s and \
                (runs[-1][2], runs[-1][3]) == (dy, dx):
            runs[-1][1] += 1
        else:
            runs.append([s, 1, dy, dx])
    return [tuple(r) for r in runs]


def ghost_shift_static(input: Tensor,
                       src: Tensor,
                       offsets: Tensor,
                       residual: Optional[Tensor] = None,
                       scale: float = 1.0,
                       relu: bool = False) -> Tensor:
    """:func:`~ghostsr_mm.ops.ghost_shift` built from slices, pads and a
    concat, with ``src`` and ``offsets`` read as constants.

    Output channels that read consecutive sources with one offset (a
    by-order layer's intrinsic channels, and its ghosts) are one slice and
    one shift. Where the runs outnumber the distinct offsets (a clustering
    map), each offset's channels are gathered, shifted together, and the
    groups put back in order with one gather.
    """
    src_l = [int(s) for s in src.tolist()]
    off_l = [(int(a), int(b)) for a, b in offsets.tolist()]
    runs = _runs(src_l, off_l)
    distinct = sorted(set(off_l))
    if relu and residual is None and scale >= 0:
        # A zero-filled shift commutes with ReLU, and so does a scale >= 0:
        # applied first, a runtime can fuse it into the convolution that
        # made `input`.
        input, relu = torch.relu(input), False
    channels = input.shape[1]
    if len(runs) <= 2 * len(distinct):
        parts = [
            _shifted(input if (s, n) == (0, channels) else
                     input[:, s:s + n], dy, dx) for s, n, dy, dx in runs
        ]
    else:
        parts, order = [], []
        for off in distinct:
            chans = [c for c, o in enumerate(off_l) if o == off]
            index = torch.tensor([src_l[c] for c in chans],
                                 device=input.device)
            parts.append(_shifted(input.index_select(1, index), *off))
            order += chans
        position = [0] * len(order)
        for i, c in enumerate(order):
            position[c] = i
    out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    if len(runs) > 2 * len(distinct):
        out = out.index_select(
            1, torch.tensor(position, device=input.device))
    return apply_epilogue(out, residual, scale, relu)
