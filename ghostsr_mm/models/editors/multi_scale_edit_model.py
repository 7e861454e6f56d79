"""Multi-scale SR training (the CARN paper's multi-scale model)."""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmagic.models.base_models import BaseEditModel
from mmagic.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class MultiScaleEditModel(BaseEditModel):
    """BaseEditModel that trains one generator for several scales.

    Each training iteration draws one scale from ``scales`` (the same on
    every rank: the draw is seeded by the iteration) and feeds the
    generator the GT batch downscaled by it (bicubic with anti-aliasing);
    the generator is called as ``generator(lr, scale=s)``. Validation and
    test use the generator's own ``upscale_factor`` on the dataset's LR
    images, as BaseEditModel does.

    Args:
        scales (Sequence[int]): Scales to train. Default: (2, 3, 4).
        seed (int): Seed of the scale draws. Default: 0.
        Others: As ``BaseEditModel``.
    """

    def __init__(self,
                 generator: Dict,
                 pixel_loss: Dict,
                 scales: Sequence[int] = (2, 3, 4),
                 seed: int = 0,
                 **kwargs) -> None:
        super().__init__(generator, pixel_loss, **kwargs)
        if not scales or any(s < 2 for s in scales):
            raise ValueError('MultiScaleEditModel: `scales` must be integers '
                             f'>= 2, got {scales}')
        self.scales = tuple(scales)
        self.seed = seed

    def scale_for_iter(self, iteration: int) -> int:
        rng = np.random.default_rng([self.seed, iteration])
        return self.scales[rng.integers(len(self.scales))]

    def forward_train(self,
                      inputs: Tensor,
                      data_samples: Optional[List] = None,
                      **kwargs) -> Dict[str, Tensor]:
        iteration = MessageHub.get_current_instance().get_info('iter', 0)
        scale = self.scale_for_iter(iteration)
        gt = data_samples.gt_img
        h, w = gt.shape[-2:]
        gt = gt[..., :h - h % scale, :w - w % scale]
        lr = F.interpolate(
            gt, scale_factor=1 / scale, mode='bicubic', antialias=True)
        sr = self.generator(lr, scale=scale)
        return dict(loss=self.pixel_loss(sr, gt))
