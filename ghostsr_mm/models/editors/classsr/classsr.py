"""ClassSR's training and test model for MMagic's runner."""
from typing import Dict, List, Optional

import torch
from mmagic.models.base_models import BaseEditModel
from mmagic.registry import MODELS
from mmagic.structures import DataSample
from torch import Tensor

from .classsr_net import class_counts

CLASS_NAMES = ('simple', 'medium', 'hard')


def class_name(k: int, num_classes: int) -> str:
    return CLASS_NAMES[k] if num_classes == 3 else f'class{k}'


@MODELS.register_module()
class ClassSR(BaseEditModel):
    """ClassSR (Kong et al., CVPR 2021) as an MMagic edit model.

    Training: the generator (:class:`ClassSRNet`) mixes all branches by the
    class probabilities; the loss is ``pixel_loss`` on the mixture plus
    ``class_loss`` and ``average_loss`` on the probabilities, with the
    paper's weights 2000 : 1 : 6 as defaults. The share of the batch each
    branch would get at test time is logged as ``share_<class>``.

    Validation and test: the LR image is cut into sub-images of
    ``test_cfg['tile']`` pixels (default 32, overlap 2: the paper's stride
    28) and each goes through its branch only
    (:func:`ghostsr_mm.apis.routed_inference`); every prediction carries
    the count of sub-images per class (``class_counts``), which
    :class:`ClassSRRouting` turns into shares and average FLOPs per set.

    Args:
        generator (dict): A ``ClassSRNet`` config.
        pixel_loss (dict): Default: L1, weight 2000.
        class_loss (dict): Default: ``ClassLoss``, weight 1.
        average_loss (dict): Default: ``AverageLoss``, weight 6, divided
            by 4B/M as in the official code (``normalize=True``; in the
            paper's printed form the classifier stays at uniform
            probabilities, see ``AverageLoss``).
        test_cfg (dict, optional): ``tile``, ``overlap``, ``batch_size`` of
            the routed inference. Default: 32, 2, 64.
        Others: As ``BaseEditModel``.
    """

    def __init__(self,
                 generator: Dict,
                 pixel_loss: Optional[Dict] = None,
                 class_loss: Optional[Dict] = None,
                 average_loss: Optional[Dict] = None,
                 test_cfg: Optional[Dict] = None,
                 **kwargs) -> None:
        pixel_loss = pixel_loss or dict(
            type='L1Loss', loss_weight=2000.0, reduction='mean')
        super().__init__(generator, pixel_loss, test_cfg=test_cfg, **kwargs)
        self.class_loss = MODELS.build(
            class_loss or dict(type='ClassLoss', loss_weight=1.0))
        self.average_loss = MODELS.build(
            average_loss
            or dict(type='AverageLoss', loss_weight=6.0, normalize=True))
        tiling = dict(tile=32, overlap=2, batch_size=64)
        unknown = set(test_cfg or {}) - set(tiling)
        if unknown:
            raise ValueError(f'ClassSR: unknown `test_cfg` keys '
                             f'{sorted(unknown)}; expected {sorted(tiling)}')
        tiling.update(test_cfg or {})
        if tiling['tile'] <= 2 * tiling['overlap']:
            raise ValueError(
                f"ClassSR: test_cfg tile ({tiling['tile']}) must be larger "
                f"than twice the overlap ({tiling['overlap']})")
        self.tiling = tiling

    def forward_train(self,
                      inputs: Tensor,
                      data_samples: Optional[List[DataSample]] = None,
                      **kwargs) -> Dict[str, Tensor]:
        sr, probs = self.generator(inputs, return_probs=True)
        losses = dict(
            loss_pix=self.pixel_loss(sr, data_samples.gt_img),
            loss_class=self.class_loss(probs),
            loss_average=self.average_loss(probs))
        m = probs.shape[1]
        shares = class_counts(probs.detach().argmax(1), m).float()
        shares /= probs.shape[0]
        for k in range(m):
            losses[f'share_{class_name(k, m)}'] = shares[k]
        return losses

    def forward_tensor(self,
                       inputs: Tensor,
                       data_samples: Optional[List[DataSample]] = None,
                       **kwargs) -> Tensor:
        if self.generator.training:
            return self.generator(inputs)
        return self.routed(inputs)[0]

    def routed(self, inputs: Tensor):
        from .routing import routed_inference
        return routed_inference(self.generator, inputs, **self.tiling)

    def forward_inference(self,
                          inputs: Tensor,
                          data_samples: Optional[List[DataSample]] = None,
                          **kwargs) -> DataSample:
        sr, classes = self.routed(inputs)
        sr = self.data_preprocessor.destruct(sr, data_samples)
        predictions = DataSample(pred_img=sr.cpu())
        counts = class_counts(classes, self.generator.num_classes)
        predictions.set_field(counts.cpu(), 'class_counts')
        flops = self.branch_flops()
        cost = torch.tensor([flops['classifier']] + flops['branches'],
                            dtype=torch.float64)
        predictions.set_field(cost.expand(len(counts), -1).clone(),
                              'sub_image_flops')
        return predictions

    @torch.no_grad()
    def branch_flops(self) -> Dict[str, object]:
        """Per-sub-image cost of the classifier and of each branch (cached;
        see :func:`ghostsr_mm.apis.classsr.branch_flops`)."""
        if getattr(self, '_flops', None) is None:
            from .routing import branch_flops
            self._flops = branch_flops(self.generator, self.tiling['tile'])
        return self._flops
