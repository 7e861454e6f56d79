"""Super-resolving images of any size in tiles, with memory bounded by the
tile and batch size, and the same output as one whole-image pass.

A tile is a ``tile x tile`` patch of the LR image fed to the network
(smaller where the image is smaller). Patches overlap: each keeps only the
part of its output that lies ``overlap`` pixels or more away from its inner
edges (the image's own borders need no margin), and those parts tile the
image; the last row and column of patches sit flush with the image border,
so nothing is dropped and the output is exactly ``scale`` times the input.

With ``overlap`` at least the network's receptive-field radius
(:func:`receptive_radius`) every kept output pixel sees the same input as in
a whole-image pass, so the tiled output equals it up to float rounding: no
seams, no blending needed. With a smaller overlap the kept pixels near a
patch edge see zero padding instead of their neighbours and seams can show.
"""
import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ghostsr_mm.utils import InputError

__all__ = ['receptive_radius', 'tile_layout', 'tiled_inference']


@torch.no_grad()
def receptive_radius(model: nn.Module,
                     in_channels: Optional[int] = None,
                     largest_shifts: bool = False) -> int:
    """The receptive-field radius of ``model`` in LR pixels, computed from
    its structure.

    Every convolution run in a forward pass adds ``(k - 1) / 2 * dilation``
    pixels at the resolution it runs at (convs after the upsampler add a
    fraction of an LR pixel), and every ghost layer adds its largest shift.
    Summed over all of them this is exact for a chain of layers, as in EDSR,
    RDN (every dense layer feeds the next) and CARN, and an upper bound for
    a network with parallel branches: either way, tiles with this overlap
    give the whole-image output. Operations other than convolutions and
    ghost shifts that mix neighbouring pixels (resampling inside the
    network, attention) are not counted: give such a network's overlap
    yourself.

    Args:
        model (nn.Module): A generator mapping (N, C, H, W) to
            (N, C', s·H, s·W).
        in_channels (int, optional): Its input channels. Default: those of
            its first convolution.
        largest_shifts (bool): Count every ghost layer's largest possible
            shift (``max_offset``) instead of its current one: a bound for
            any trained or deployed version of the model. Default: False.

    Returns:
        int: The radius, rounded up.
    """
    from ghostsr_mm.models.layers import GhostConv2d
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InputError(f'receptive_radius: {type(model).__name__} has no '
                         'convolution')
    size = 8
    total = [0.0, 0.0]  # LR pixels along H and W

    def conv_hook(module, args, output):
        f = args[0].shape[-2] / size  # the resolution it runs at
        for axis in (0, 1):
            k, d = module.kernel_size[axis], module.dilation[axis]
            total[axis] += (k - 1) / 2 * d / f

    def ghost_hook(module, args, output):
        f = args[0].shape[-2] / size
        if largest_shifts:
            for axis in (0, 1):
                total[axis] += module.max_offset / f
            return
        shift = module.current_offsets()[module.ghost_channels].abs()
        if shift.numel():
            for axis in (0, 1):
                total[axis] += int(shift[:, axis].max()) / f

    handles = [m.register_forward_hook(conv_hook) for m in convs]
    handles += [
        m.register_forward_hook(ghost_hook) for m in model.modules()
        if isinstance(m, GhostConv2d)
    ]
    was_training = model.training
    param = next(model.parameters())
    channels = in_channels or convs[0].in_channels
    try:
        model.eval()
        model(torch.zeros(1, channels, size, size, device=param.device,
                          dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return math.ceil(max(total) - 1e-9)


def _axis_layout(size: int, tile: int,
                 overlap: int) -> List[Tuple[int, int, int]]:
    """(patch start, kept start, kept end) along one axis."""
    if size <= tile:
        return [(0, 0, size)]
    step = tile - 2 * overlap
    starts = list(range(0, size - tile, step)) + [size - tile]
    layout = []
    for i, p in enumerate(starts):
        lo = 0 if i == 0 else p + overlap
        hi = size if i == len(starts) - 1 else p + tile - overlap
        layout.append((p, lo, hi))
    return layout


def tile_layout(height: int, width: int, tile: int, overlap: int):
    """The patches of a ``height x width`` image: a list of
    ``((y, x), (y0, y1, x0, x1))``, the patch's top-left corner and the LR
    region whose output it provides. Those regions cover the image; every
    patch is ``min(tile, height) x min(tile, width)``.

    Raises:
        ValueError: ``tile`` is not larger than ``2 * overlap``.
    """
    if not isinstance(tile, int) or tile < 1:
        raise InputError(f'`tile` must be a positive int, got {tile!r}')
    if not isinstance(overlap, int) or overlap < 0:
        raise InputError(f'`overlap` must be an int >= 0, got {overlap!r}')
    if tile <= 2 * overlap and (height > tile or width > tile):
        raise InputError(
            f'`tile` ({tile}) must be larger than twice the overlap '
            f'({overlap}): each patch keeps its output {overlap} pixels away '
            f'from its inner edges (the overlap is at least the network\'s '
            'receptive-field radius for an output equal to the whole-image '
            'one); use a larger tile')
    rows = _axis_layout(height, tile, overlap)
    cols = _axis_layout(width, tile, overlap)
    return [((py, px), (y0, y1, x0, x1)) for py, y0, y1 in rows
            for px, x0, x1 in cols]


@torch.no_grad()
def tiled_inference(model: Callable[[Tensor], Tensor],
                    lr: Tensor,
                    tile: int,
                    overlap: Optional[int] = None,
                    batch_size: int = 4,
                    progress: Optional[Callable[[int], None]] = None,
                    blend: bool = False) -> Tensor:
    """Super-resolve ``lr`` patch by patch (see the module docstring).

    Args:
        model (nn.Module | callable): The generator, (N, C, H, W) ->
            (N, C', sH, sW) (any callable, e.g. an ONNX Runtime session
            wrapped in a function, when ``overlap`` is given).
        lr (Tensor): (N, C, H, W) images, any H and W.
        tile (int): Patch size fed to the network (LR pixels); peak memory
            grows with ``batch_size * tile ** 2``, not with the image.
        overlap (int, optional): Margin each patch keeps away from its
            inner edges (neighbours share ``2 * overlap`` pixels).
            Default: :func:`receptive_radius` of ``model`` (the output then
            equals a whole-image pass).
        batch_size (int): Patches per forward pass. Default: 4.
        progress (callable, optional): Called with the number of patches
            done after every forward pass.
        blend (bool): Blend whole patch outputs across their shared bands
            instead of keeping each patch's inner part. Default: False.

    Returns:
        Tensor: (N, C', s·H, s·W), on ``lr``'s device, in the model's
        output dtype.
    """
    if not isinstance(lr, Tensor) or lr.dim() != 4:
        raise InputError('tiled_inference: `lr` must be a 4-D tensor (N, C, '
                         f'H, W), got {getattr(lr, "shape", type(lr))}')
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError('tiled_inference: `batch_size` must be an int >= 1, '
                         f'got {batch_size!r}')
    if overlap is None:
        if not isinstance(model, nn.Module):
            raise InputError('tiled_inference: give `overlap` for a model '
                             'that is not an nn.Module')
        overlap = receptive_radius(model, lr.shape[1])
    n, _, h, w = lr.shape
    layout = tile_layout(h, w, tile, overlap)
    ph, pw = min(tile, h), min(tile, w)
    out = weight = window = None
    scale = None
    for i in range(n):
        for first in range(0, len(layout), batch_size):
            group = layout[first:first + batch_size]
            patches = torch.stack([
                lr[i, :, y:y + ph, x:x + pw] for (y, x), _ in group
            ])
            sr = model(patches)
            if out is None:
                scale = sr.shape[-2] // ph
                if sr.shape[-2:] != (ph * scale, pw * scale) or scale < 1:
                    raise InputError(
                        'tiled_inference: the model maps a '
                        f'{ph}x{pw} patch to {sr.shape[-2]}x{sr.shape[-1]}, '
                        'not to an integer multiple of it')
                out = sr.new_empty(n, sr.shape[1], h * scale, w * scale)
                if blend:
                    out.zero_()
                    weight = sr.new_zeros(h * scale, w * scale,
                                          dtype=torch.float32)
                    window = _ramp(ph * scale, 2 * overlap * scale,
                                   sr.device)[:, None] * _ramp(
                                       pw * scale, 2 * overlap * scale,
                                       sr.device)[None]
            for ((y, x), (y0, y1, x0, x1)), patch in zip(group, sr):
                if blend:
                    ys, xs = y * scale, x * scale
                    ye, xe = ys + ph * scale, xs + pw * scale
                    out[i, :, ys:ye, xs:xe] += patch * window
                    if i == 0:  # every image has the same layout
                        weight[ys:ye, xs:xe] += window
                    continue
                out[i, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                    patch[:, (y0 - y) * scale:(y1 - y) * scale,
                          (x0 - x) * scale:(x1 - x) * scale]
            if progress is not None:
                progress(len(group))
    if blend:
        out /= weight
    return out


def _ramp(length: int, band: int, device) -> Tensor:
    """Weights along a patch of ``length`` output pixels: rising linearly
    from its edges over ``band`` pixels, 1 inside. Two neighbours sharing
    ``band`` pixels have weights summing to 1 there; every weight is > 0."""
    pos = torch.arange(length, device=device, dtype=torch.float32) + 0.5
    if band <= 0:
        return torch.ones_like(pos)
    return torch.minimum(pos, length - pos).div(band).clamp(max=1.0)
