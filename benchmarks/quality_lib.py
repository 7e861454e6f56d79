"""Photos, training and evaluation for bench_quality.py (kept in memory so a
run spends its time in the models, not in image decoding).

Training photos and test photos are disjoint. The validation split (for
the shift oracle) is the bottom fifth of every training photo, never
cropped for training.
"""
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ghostsr_mm.datasets import bicubic_downscale, mod_crop

# Natural photos shipped inside installed packages (scikit-image's
# sample data, scikit-learn's sample images, matplotlib's sample data).
TRAIN_PHOTOS = ('skimage:coffee', 'skimage:rocket',
                'skimage:hubble_deep_field', 'skimage:retina',
                'skimage:immunohistochemistry', 'skimage:brick',
                'skimage:grass', 'skimage:gravel', 'skimage:camera',
                'skimage:coins', 'skimage:moon', 'sklearn:china.jpg')
TEST_PHOTOS = ('skimage:astronaut', 'skimage:chelsea',
               'skimage:stereo_motorcycle', 'sklearn:flower.jpg',
               'matplotlib:grace_hopper.jpg')
MAX_SIDE = 480
VAL_SHARE = 0.2


def load_photo(spec: str, max_side: int = MAX_SIDE) -> np.ndarray:
    """uint8 HxWx3 RGB of ``'<package>:<name>'``, its longer side at most
    ``max_side`` (area resize)."""
    package, name = spec.split(':')
    if package == 'skimage':
        from skimage import data
        img = getattr(data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disp)
            img = img[0]
    elif package == 'sklearn':
        from sklearn.datasets import load_sample_image
        img = load_sample_image(name)
    elif package == 'matplotlib':
        from matplotlib import cbook
        import matplotlib.image as mpimg
        with cbook.get_sample_data(name) as f:
            img = mpimg.imread(f, format=name.rsplit('.', 1)[-1])
    else:
        raise ValueError(f'unknown photo package in {spec!r}')
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = np.ascontiguousarray(img[..., :3])
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * (255 if img.max() <= 1 else 1)), 0,
                      255).astype(np.uint8)
    if max(img.shape[:2]) > max_side:
        import mmcv
        img = mmcv.imrescale(img, max_side / max(img.shape[:2]),
                             interpolation='area')
    return img


def to_tensor(img: np.ndarray) -> Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float().div(255)


class PairSet:
    """(LR, GT) float tensors in [0, 1] of a list of uint8 images."""

    def __init__(self, images: List[np.ndarray], scale: int) -> None:
        self.scale = scale
        self.gt = [mod_crop(img, scale) for img in images]
        self.lr = [bicubic_downscale(img, scale) for img in self.gt]
        self.gt_t = [to_tensor(x) for x in self.gt]
        self.lr_t = [to_tensor(x) for x in self.lr]

    def __len__(self) -> int:
        return len(self.gt)


def split_photos(specs, scale: int) -> Tuple[PairSet, PairSet]:
    """Training and validation sets: the top 4/5 and the bottom 1/5 of each
    photo."""
    train, val = [], []
    for spec in specs:
        img = load_photo(spec)
        cut = int(img.shape[0] * (1 - VAL_SHARE))
        cut -= cut % scale
        train.append(img[:cut])
        val.append(img[cut:])
    return PairSet(train, scale), PairSet(val, scale)


def sample_batch(data: PairSet, rng: np.random.Generator, batch: int,
                 patch: int) -> Tuple[Tensor, Tensor]:
    """Random LR patches of ``patch`` pixels and their GT, with random
    flips and 90-degree rotations (the paper's augmentation)."""
    s = data.scale
    lrs, gts = [], []
    for _ in range(batch):
        i = int(rng.integers(len(data)))
        lr, gt = data.lr_t[i], data.gt_t[i]
        y = int(rng.integers(lr.shape[1] - patch + 1))
        x = int(rng.integers(lr.shape[2] - patch + 1))
        lr = lr[:, y:y + patch, x:x + patch]
        gt = gt[:, y * s:(y + patch) * s, x * s:(x + patch) * s]
        k = int(rng.integers(4))
        if rng.random() < 0.5:
            lr, gt = lr.flip(-1), gt.flip(-1)
        lrs.append(lr.rot90(k, (1, 2)))
        gts.append(gt.rot90(k, (1, 2)))
    return torch.stack(lrs), torch.stack(gts)


def val_batches(data: PairSet, size: int = 48) -> List[Tuple[Tensor, Tensor]]:
    """The validation photos as (LR, GT) batches of ``size`` LR tiles."""
    s = data.scale
    lrs, gts = [], []
    for lr, gt in zip(data.lr_t, data.gt_t):
        for y in range(0, lr.shape[1] - size + 1, size):
            for x in range(0, lr.shape[2] - size + 1, size):
                lrs.append(lr[:, y:y + size, x:x + size])
                gts.append(gt[:, y * s:(y + size) * s, x * s:(x + size) * s])
    lrs, gts = torch.stack(lrs), torch.stack(gts)
    return list(zip(lrs.split(16), gts.split(16)))


def train(model: nn.Module,
          data: PairSet,
          iters: int,
          seed: int,
          lr: float = 2e-4,
          batch: int = 16,
          patch: int = 24,
          logit_lr_mult: float = 1.0,
          on_iter: Optional[Callable[[int], None]] = None) -> nn.Module:
    """Adam (0.9, 0.999, 1e-8) with a cosine decay to 0 over ``iters``, L1
    loss; the learnable
    shifts' W' at ``logit_lr_mult`` x ``lr``. ``on_iter(i)`` runs before
    iteration i."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    logits = [p for n, p in model.named_parameters()
              if n.endswith('shift_logits')]
    others = [p for n, p in model.named_parameters()
              if not n.endswith('shift_logits')]
    groups = [dict(params=others)]
    if logits:
        groups.append(dict(params=logits, lr=lr * logit_lr_mult))
    opt = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    model.train()
    for it in range(iters):
        if on_iter is not None:
            on_iter(it)
        x, y = sample_batch(data, rng, batch, patch)
        out = model(x)
        loss = F.l1_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def quantize(t: Tensor) -> np.ndarray:
    """A [0, 1] CHW tensor as uint8 HWC RGB (as an SR output is saved)."""
    return (t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


@torch.no_grad()
def evaluate(model: Optional[nn.Module], data: PairSet) -> Dict[str, float]:
    """Mean Y-PSNR / SSIM (MMagic's metrics, border = scale) over
    ``data``; ``model=None`` is bicubic upsampling."""
    from mmagic.evaluation.metrics.psnr import psnr
    from mmagic.evaluation.metrics.ssim import ssim
    import mmcv
    psnrs, ssims = [], []
    for lr, lr_t, gt in zip(data.lr, data.lr_t, data.gt):
        if model is None:
            sr = mmcv.imresize(lr, gt.shape[1::-1], interpolation='bicubic')
        else:
            model.eval()
            sr = quantize(model(lr_t[None])[0])
        psnrs.append(psnr(sr, gt, data.scale, convert_to='Y'))
        ssims.append(ssim(sr, gt, data.scale, convert_to='Y'))
    return dict(psnr=float(np.mean(psnrs)), ssim=float(np.mean(ssims)))
