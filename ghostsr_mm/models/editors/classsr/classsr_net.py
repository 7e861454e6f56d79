"""ClassSR's generator (Kong et al., "ClassSR: A General Framework to
Accelerate Super-Resolution Networks by Data Characteristic", CVPR 2021):
a Class-Module that scores each LR sub-image, and an SR-Module of branches
of different cost.

Training: every branch runs on every sub-image and the output is the
mixture weighted by the class probabilities (Eq. 1 of the paper). Eval: each
sub-image goes to its most probable branch only, and every branch runs once
on the batch of the sub-images routed to it. Tiling a large image into
sub-images is :func:`ghostsr_mm.apis.routed_inference`.
"""
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule, ModuleList
from mmagic.registry import MODELS
from torch import Tensor

__all__ = ['ClassSRClassifier', 'ClassSRNet', 'class_counts']


@MODELS.register_module()
class ClassSRClassifier(BaseModule):
    """ClassSR's Class-Module (the official code's ``Classifier``).

    conv 4x4 stride 4 (C -> 128), three 1x1 convs (128 -> 128), 1x1 conv
    (128 -> 32), LeakyReLU(0.1) after each conv but the last, global average
    pooling, linear 32 -> ``num_classes``: 60,035 parameters for RGB and 3
    classes, 3.77M multiply-accumulates on a 32x32 sub-image.

    Args:
        in_channels (int): Image channels. Default: 3.
        num_classes (int): Number of branches. Default: 3.
        mid_channels (int): Width of the convs. Default: 128.
        out_channels (int): Width of the last conv. Default: 32.

    Shapes:
        (N, C, H, W) with H, W >= 4 -> (N, num_classes) logits.
    """

    def __init__(self,
                 in_channels: int = 3,
                 num_classes: int = 3,
                 mid_channels: int = 128,
                 out_channels: int = 32,
                 init_cfg: Optional[Dict] = None) -> None:
        super().__init__(init_cfg)
        if num_classes < 2:
            raise ValueError('ClassSRClassifier: `num_classes` must be >= 2, '
                             f'got {num_classes}')
        act = dict(negative_slope=0.1, inplace=True)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 4, 4), nn.LeakyReLU(**act),
            nn.Conv2d(mid_channels, mid_channels, 1), nn.LeakyReLU(**act),
            nn.Conv2d(mid_channels, mid_channels, 1), nn.LeakyReLU(**act),
            nn.Conv2d(mid_channels, mid_channels, 1), nn.LeakyReLU(**act),
            nn.Conv2d(mid_channels, out_channels, 1))
        self.fc = nn.Linear(out_channels, num_classes)
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'ClassSRClassifier: expected (N, {self.in_channels}, H, W) '
                f'sub-images, got shape {tuple(x.shape)}')
        if min(x.shape[-2:]) < 4:
            raise ValueError('ClassSRClassifier: sub-images must be at '
                             'least 4x4 (its first conv has kernel 4, '
                             f'stride 4), got {tuple(x.shape[-2:])}')
        return self.fc(self.body(x).mean(dim=(2, 3)))


@MODELS.register_module()
class ClassSRNet(BaseModule):
    """ClassSR: a classifier routes each LR sub-image to one SR branch.

    Args:
        branches (Sequence[dict]): Configs of the branch generators, from
            the cheapest ("simple", class 0) to the most capable ("hard",
            the last class): any registered SR generator mapping
            (N, C, H, W) to (N, C, sH, sW) with the same scale, e.g.
            ``CARNNet`` with ``mid_channels`` 36 / 52 / 64 (the paper's
            ClassSR-CARN-M), ghost models, or MMagic's ``MSRResNet``. Give a
            branch ``init_cfg=dict(type='Pretrained', checkpoint=...,
            prefix='generator.')`` to start from a trained model.
        classifier (dict, optional): Config of the Class-Module. Default:
            ``ClassSRClassifier`` with ``num_classes=len(branches)``.
        in_channels (int): Image channels. Default: 3.
        cost_penalty (float): Eval routing picks
            ``argmax_k log P_k - cost_penalty * F_k / max(F)``, ``F_k`` the
            branch's FLOPs: 0 is the paper's most probable branch, > 0
            favours cheaper branches, < 0 more capable ones. The
            classifier's losses balance the classes of a training batch,
            not the cost on a test image; this moves the cost where it is
            wanted (:func:`ghostsr_mm.apis.calibrate_cost_penalty` finds
            the penalty for a FLOPs budget on a set of images). Default: 0.

    Shapes:
        (N, C, H, W) -> (N, C, sH, sW); ``forward(x, return_probs=True)``
        also gives the (N, num_branches) class probabilities.
    """

    def __init__(self,
                 branches: Sequence[Dict],
                 classifier: Optional[Dict] = None,
                 in_channels: int = 3,
                 cost_penalty: float = 0.0,
                 init_cfg: Optional[Dict] = None) -> None:
        super().__init__(init_cfg)
        if isinstance(cost_penalty, bool) or not isinstance(
                cost_penalty, (int, float)) or not math.isfinite(cost_penalty):
            raise ValueError('ClassSRNet: `cost_penalty` must be a finite '
                             f'number, got {cost_penalty!r}')
        self.cost_penalty = float(cost_penalty)
        self._relative_costs: Optional[Tensor] = None
        if not isinstance(branches, (list, tuple)) or len(branches) < 2:
            raise ValueError('ClassSRNet: `branches` must be a list of at '
                             'least two generator configs (simple to hard), '
                             f'got {branches!r}')
        # mmengine's ModuleList passes init_weights() on to the branches
        # (their init_cfg, e.g. Pretrained); torch's would not.
        self.branches = ModuleList([
            b if isinstance(b, nn.Module) else MODELS.build(b)
            for b in branches
        ])
        scales = {getattr(b, 'upscale_factor', None) for b in self.branches}
        scales.discard(None)
        if len(scales) > 1:
            raise ValueError('ClassSRNet: the branches upscale by different '
                             f'factors {sorted(scales)}; they must agree')
        self.upscale_factor = scales.pop() if scales else None
        classifier = dict(
            type='ClassSRClassifier', in_channels=in_channels,
            num_classes=len(branches)) if classifier is None else classifier
        self.classifier = MODELS.build(classifier)
        self.in_channels = in_channels
        self.num_classes = len(self.branches)

    def forward(self, x: Tensor, return_probs: bool = False):
        """Training mode: the probability-weighted mixture of all branches.
        Eval mode: each sub-image through its most probable branch only.

        Args:
            x (Tensor): (N, C, H, W) LR sub-images.
            return_probs (bool): Also return the (N, M) class
                probabilities. Default: False.
        """
        logits = self.classifier(x)
        probs = logits.softmax(dim=1)
        if self.training:
            out = sum(p.view(-1, 1, 1, 1) * branch(x)
                      for p, branch in zip(probs.unbind(1), self.branches))
        else:
            out = self.route(x, self.choose(logits.log_softmax(dim=1)))
        return (out, probs) if return_probs else out

    def relative_costs(self) -> Tensor:
        """Each branch's FLOPs on a 32x32 sub-image over the costliest's
        (computed once)."""
        if self._relative_costs is None:
            from ghostsr_mm.analysis import count_flops
            device = next(self.parameters()).device
            flops = torch.tensor([
                float(count_flops(b, (self.in_channels, 32, 32), device))
                for b in self.branches
            ])
            # (branches without FLOPs, e.g. interpolation: no preference)
            self._relative_costs = flops / flops.max() if flops.max() > 0 \
                else torch.zeros_like(flops)
        return self._relative_costs

    def choose(self, log_probs: Tensor,
               cost_penalty: Optional[float] = None) -> Tensor:
        """The branch of each sub-image from its (N, M) log-probabilities:
        ``argmax_k log_probs[:, k] - cost_penalty * relative_costs()[k]``
        (``cost_penalty`` defaults to the model's)."""
        penalty = self.cost_penalty if cost_penalty is None else cost_penalty
        if penalty == 0:
            return log_probs.argmax(dim=1)
        costs = self.relative_costs().to(log_probs)
        return (log_probs - penalty * costs).argmax(dim=1)

    def route(self, x: Tensor, classes: Tensor) -> Tensor:
        """Run branch ``k`` on the sub-images ``x[classes == k]`` (one batch
        per branch; branches with no sub-image do not run)."""
        if classes.shape != x.shape[:1]:
            raise ValueError(f'ClassSRNet.route: `classes` must have shape '
                             f'({x.shape[0]},), got {tuple(classes.shape)}')
        out = None
        for k, branch in enumerate(self.branches):
            index = (classes == k).nonzero().flatten()
            if index.numel() == 0:
                continue
            sr = branch(x.index_select(0, index))
            if out is None:
                out = sr.new_empty(x.shape[0], *sr.shape[1:])
            elif sr.shape[1:] != out.shape[1:]:
                raise ValueError(
                    f'ClassSRNet: branch {k} gives {tuple(sr.shape[1:])} '
                    f'outputs, another branch {tuple(out.shape[1:])}')
            out.index_copy_(0, index, sr)
        if out is None:  # an empty batch
            out = self.branches[0](x)
        return out

    def branch_names(self) -> List[str]:
        return [type(b).__name__ for b in self.branches]


def class_counts(classes: Tensor, num_classes: int) -> Tensor:
    """(..., P) class indices -> (..., num_classes) counts."""
    return torch.nn.functional.one_hot(classes, num_classes).sum(dim=-2)

