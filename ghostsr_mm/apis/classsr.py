"""ClassSR for users: a cost penalty that meets a FLOPs budget, and the
routing as a picture. Routed inference and the cost of a routing are the
model's (:mod:`ghostsr_mm.models.editors.classsr.routing`), re-exported.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ghostsr_mm.models.editors.classsr.routing import (branch_flops,
                                                      routed_inference,
                                                      routing_flops)
from ghostsr_mm.models.utils import tile_layout
from ghostsr_mm.utils import InputError

__all__ = [
    'CLASS_COLOURS', 'branch_flops', 'calibrate_cost_penalty',
    'routed_inference', 'routing_flops',
    'routing_map', 'routing_picture', 'write_routing_picture'
]

# simple, medium, hard (more classes cycle).
CLASS_COLOURS = ((0.0, 0.75, 0.0), (1.0, 0.8, 0.0), (0.9, 0.0, 0.0),
                 (0.0, 0.4, 1.0))


@torch.no_grad()
def calibrate_cost_penalty(model,
                           images: Sequence[Tensor],
                           flops_ratio: float,
                           tile: int = 32,
                           overlap: int = 2,
                           batch_size: int = 64) -> float:
    """The ``cost_penalty`` of a ClassSRNet whose routing of the
    sub-images of ``images`` costs at most ``flops_ratio`` of the hard
    branch on average (classifier included, as :func:`routing_flops`),
    as close to it as the routing allows: a FLOPs budget set on a
    calibration set (LR images only), then kept for every image.

    Args:
        model (ClassSRNet): The model; its ``cost_penalty`` is not changed.
        images (Sequence[Tensor]): (N, C, H, W) LR images, any sizes.
        flops_ratio (float): The budget, a fraction of the hard branch's
            FLOPs per sub-image.
        tile, overlap, batch_size: As :func:`routed_inference`.

    Returns:
        float: The penalty (``model.cost_penalty = penalty``, or
        ``model.generator.cost_penalty`` in a config).

    Raises:
        ValueError: A budget below the cost of sending every sub-image to
            the cheapest branch, or no image.
    """
    if isinstance(flops_ratio, bool) or not isinstance(
            flops_ratio, (int, float)) or not math.isfinite(flops_ratio) \
            or flops_ratio <= 0:
        raise InputError('calibrate_cost_penalty: `flops_ratio` must be a '
                         f'positive number, got {flops_ratio!r}')
    if isinstance(images, Tensor):
        images = [images]
    if len(images) == 0:
        raise InputError('calibrate_cost_penalty: no calibration image')
    model.eval()
    log_probs = []
    for lr in images:
        if not isinstance(lr, Tensor) or lr.dim() != 4:
            raise InputError('calibrate_cost_penalty: images must be 4-D '
                             '(N, C, H, W) tensors, got '
                             f'{getattr(lr, "shape", type(lr))}')
        h, w = lr.shape[-2:]
        ph, pw = min(tile, h), min(tile, w)
        corners = [c for c, _ in tile_layout(h, w, tile, overlap)]
        for image in lr:
            for first in range(0, len(corners), batch_size):
                patches = torch.stack([
                    image[:, y:y + ph, x:x + pw]
                    for y, x in corners[first:first + batch_size]
                ])
                log_probs.append(model.classifier(patches).log_softmax(1))
    log_probs = torch.cat(log_probs).double()
    flops = branch_flops(model, tile)
    branch = torch.tensor(flops['branches'], dtype=torch.float64)
    extra = flops['classifier'] / branch.max().item()

    def cost(penalty):
        chosen = model.choose(log_probs, penalty)
        return branch[chosen.cpu()].mean().item() / branch.max().item() + \
            extra

    # Beyond this penalty the log-probabilities no longer decide: every
    # sub-image goes to the cheapest (or, negated, the costliest) branch.
    spread = (log_probs.max(1).values - log_probs.min(1).values).max()
    gap = model.relative_costs().double().sort().values.diff()
    gap = gap[gap > 0]  # none: every branch costs the same
    bound = 2 * spread.item() / gap.min().item() + 1 if len(gap) else 1.0
    if cost(bound) > flops_ratio:
        raise InputError(
            f'calibrate_cost_penalty: a budget of {flops_ratio} of the hard '
            'branch is below the cheapest routing (every sub-image to the '
            f'cheapest branch: {cost(bound):.4f})')

    def smallest(limit):
        """The smallest penalty whose routing costs at most ``limit``."""
        low, high = -bound, bound
        if cost(low) <= limit:
            return low
        for _ in range(100):
            mid = (low + high) / 2
            low, high = (low, mid) if cost(mid) <= limit else (mid, high)
        return high

    # The middle of the penalties that give this routing, not its edge, so
    # that a rounded value routes the same.
    edge = smallest(flops_ratio)
    spent = cost(edge)
    cheaper = cost(bound) < spent
    end = smallest(spent - 1e-9 * max(spent, 1e-12)) if cheaper else bound
    return (edge + end) / 2


def routing_map(classes: Tensor, height: int, width: int, tile: int,
                overlap: int) -> np.ndarray:
    """The class of every LR pixel (H, W): the class of the sub-image whose
    inner part holds it (as :func:`tile_layout` assigns them)."""
    layout = tile_layout(height, width, tile, overlap)
    classes = classes.flatten().tolist()
    if len(classes) != len(layout):
        raise InputError(f'routing_map: {len(classes)} classes for the '
                         f'{len(layout)} sub-images of a {height}x{width} '
                         f'image with tile {tile}, overlap {overlap}')
    out = np.zeros((height, width), dtype=np.int64)
    for (_, (y0, y1, x0, x1)), k in zip(layout, classes):
        out[y0:y1, x0:x1] = k
    return out


def routing_picture(image: np.ndarray,
                    class_map: np.ndarray,
                    alpha: float = 0.45,
                    colours: Optional[Sequence[Tuple[float, float,
                                                     float]]] = None
                    ) -> np.ndarray:
    """``image`` (H, W, 3) or (H, W) in 0-1 with each pixel tinted by its
    class (green simple, yellow medium, red hard); ``class_map`` may be at
    a lower resolution (the LR one) and is enlarged to the image's."""
    colours = np.asarray(colours or CLASS_COLOURS, dtype=np.float32)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    ch, cw = class_map.shape
    if h % ch or w % cw or h // ch != w // cw:
        raise InputError(f'routing_picture: a {ch}x{cw} class map does not '
                         f'divide a {h}x{w} image')
    f = h // ch
    big = np.repeat(np.repeat(class_map, f, axis=0), f, axis=1)
    tint = colours[big % len(colours)]
    return (1 - alpha) * image[..., :3] + alpha * tint


def write_routing_picture(path: str, image: np.ndarray,
                          class_map: np.ndarray) -> None:
    """:func:`routing_picture` written to ``path`` as 8-bit RGB.

    Raises:
        ValueError: The file could not be written.
    """
    import mmcv
    picture = routing_picture(image, class_map)
    rgb8 = np.clip(np.round(picture * 255), 0, 255).astype(np.uint8)
    if not mmcv.imwrite(np.ascontiguousarray(rgb8[..., ::-1]), path):
        raise InputError(f'{path}: could not be written')
