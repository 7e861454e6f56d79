"""ClassSR's two losses on the class probabilities (Kong et al., Sec. 3.3),
beside the L1 loss on the mixed output. The paper weighs L1 : Class-Loss :
Average-Loss as 2000 : 1 : 6 (the official code 1000 : 0.5 : 3)."""
import torch
import torch.nn as nn
from mmagic.registry import MODELS
from torch import Tensor

__all__ = ['ClassLoss', 'AverageLoss']


def _check_probs(probs: Tensor, name: str) -> None:
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f'{name}: expected (N, M >= 2) class probabilities, '
                         f'got shape {tuple(probs.shape)}')


@MODELS.register_module()
class ClassLoss(nn.Module):
    """Class-Loss: pushes each sub-image's probabilities towards one-hot.

    Per sub-image, ``M - 1 - sum_{i<j} |P_i - P_j|`` (the paper's
    ``-sum_{i<j} |P_i - P_j|`` plus the constant ``M - 1`` the official code
    adds, so that 0 means one-hot); averaged over the batch.

    Args:
        loss_weight (float): Default: 1.0 (the paper's).
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, probs: Tensor) -> Tensor:
        _check_probs(probs, 'ClassLoss')
        m = probs.shape[1]
        i, j = torch.triu_indices(m, m, offset=1, device=probs.device)
        spread = (probs[:, i] - probs[:, j]).abs().sum(dim=1)
        return self.loss_weight * (m - 1 - spread).mean()


@MODELS.register_module()
class AverageLoss(nn.Module):
    """Average-Loss: each class should get its share of a batch.

    ``sum_i | sum_j P_i(x_j) - B / M |`` over the M classes and the B
    sub-images of the batch (the paper's form); it stops the classifier from
    sending every sub-image to one branch.

    In this form its gradient on each sub-image is about ``loss_weight``
    per class, against the Class-Loss's ``2 / B`` (a batch mean), so it
    can hold the probabilities at uniform: a classifier trained so at CPU
    scale stayed within 0.001 of 1/M on every tile (benchmarks/README.md).
    ``normalize=True`` divides by ``4 B / M``, as the official code does.

    Args:
        loss_weight (float): Default: 6.0 (the paper's).
        normalize (bool): Divide by ``4 B / M`` (the official code).
            Default: False (the paper's form).
    """

    def __init__(self, loss_weight: float = 6.0,
                 normalize: bool = False) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.normalize = normalize

    def forward(self, probs: Tensor) -> Tensor:
        _check_probs(probs, 'AverageLoss')
        b, m = probs.shape
        loss = (probs.sum(dim=0) - b / m).abs().sum()
        if self.normalize:
            loss = loss / (4 * b / m)
        return self.loss_weight * loss
