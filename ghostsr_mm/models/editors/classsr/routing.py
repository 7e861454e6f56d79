"""ClassSR's routed inference on images of any size (the project's tiler
with a router) and the cost of a routing.

:func:`routed_inference` cuts the LR image into sub-images with
:func:`~ghostsr_mm.models.utils.tiled_inference` (last row and column flush
with the border, overlaps blended), lets :class:`ClassSRNet` route every
batch of sub-images (each branch runs once per batch, on its own
sub-images), and returns the classes with the output; :func:`routing_flops`
is the average cost per sub-image of a routing.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ghostsr_mm.analysis.complexity import count_flops
from ghostsr_mm.models.utils import tiled_inference
from ghostsr_mm.utils import InputError

__all__ = ['branch_flops', 'routed_inference', 'routing_flops']


@torch.no_grad()
def routed_inference(model,
                     lr: Tensor,
                     tile: int = 32,
                     overlap: int = 2,
                     batch_size: int = 64,
                     progress=None) -> Tuple[Tensor, Tensor]:
    """Super-resolve ``lr`` (N, C, H, W) with a ClassSRNet in eval mode,
    sub-image by sub-image.

    Args:
        model (ClassSRNet): The model (put in eval mode here).
        tile (int): Sub-image size in LR pixels. Default: 32 (the paper's).
        overlap (int): Half the band two neighbouring sub-images share.
            Default: 2 (the paper's stride 28).
        batch_size (int): Sub-images classified and routed per step; memory
            grows with it, not with the image. Default: 64.

    Returns:
        tuple: The (N, C, sH, sW) output and the (N, P) class of each
        sub-image, in the order of :func:`tile_layout`.
    """
    model.eval()
    classes: List[Tensor] = []

    def run(patches: Tensor) -> Tensor:  # ClassSRNet.forward in eval
        chosen = model.choose(model.classifier(patches).log_softmax(dim=1))
        classes.append(chosen)
        return model.route(patches, chosen)

    sr = tiled_inference(run, lr, tile, overlap, batch_size, progress,
                         blend=True)
    return sr, torch.cat(classes).view(lr.shape[0], -1)


def branch_flops(model, tile: int = 32) -> Dict[str, object]:
    """Multiply-accumulates per ``tile x tile`` sub-image: of the
    classifier, and of each branch (a list, simple to hard)."""
    shape = (model.in_channels, tile, tile)
    device = next(model.parameters()).device
    return dict(
        classifier=count_flops(model.classifier, shape, device),
        branches=[count_flops(b, shape, device) for b in model.branches])


def routing_flops(counts: Sequence[int], flops: Dict[str, object]
                  ) -> Dict[str, float]:
    """The average cost per sub-image of a routing (ClassSR's "FLOPs"):
    ``sum_k n_k F_k / N`` plus the classifier, absolute and as a fraction of
    the hard branch alone (the costliest branch).

    Args:
        counts (Sequence[int]): Sub-images sent to each branch.
        flops (dict): From :func:`branch_flops`.
    """
    counts = [int(c) for c in counts]
    per_branch = flops['branches']
    if len(counts) != len(per_branch):
        raise InputError(f'routing_flops: {len(counts)} counts for '
                         f'{len(per_branch)} branches')
    total = sum(counts)
    if total == 0:
        raise InputError('routing_flops: no sub-image was routed')
    average = sum(n * f for n, f in zip(counts, per_branch)) / total
    average += flops['classifier']
    return dict(flops=average, ratio=average / max(per_branch),
                shares=[n / total for n in counts])
