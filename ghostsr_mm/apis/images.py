"""Reading images for super-resolution and writing the results, through
mmcv, for ``tools/infer.py`` and users' scripts.

What is done to each kind of image:

* 8- and 16-bit images are read as values in 0-1 and written back in the
  same bit depth where the format holds it (PNG, TIFF); JPEG and BMP are
  written in 8 bits.
* A grey image is super-resolved as an RGB image with three equal channels;
  the result's channel mean is written back as a grey image.
* An alpha channel is not super-resolved: it is upscaled bicubically
  (clipped to its range) and attached to the super-resolved colour image
  (JPEG, which has no alpha, gets the colour image alone).
"""
import glob
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional

import mmcv
import numpy as np

from ghostsr_mm.datasets.prepare import IMG_EXTENSIONS as IMAGE_EXTENSIONS
from ghostsr_mm.utils import InputError

__all__ = [
    'IMAGE_EXTENSIONS', 'SRImage', 'list_images', 'read_image', 'write_image'
]

_EIGHT_BIT_FORMATS = ('.jpg', '.jpeg', '.bmp')


@dataclass
class SRImage:
    """An image ready for the network, with what is needed to write the
    result back like the input.

    Attributes:
        rgb (ndarray): float32 (H, W, 3) in 0-1.
        alpha (ndarray, optional): float32 (H, W) in 0-1.
        grey (bool): The input had one channel.
        max_value (int): 255 or 65535, the input's range.
    """
    rgb: np.ndarray
    alpha: Optional[np.ndarray] = None
    grey: bool = False
    max_value: int = 255


def list_images(source: str) -> List[str]:
    """The images of a file, a folder (not recursive) or a glob pattern,
    sorted.

    Raises:
        FileNotFoundError: Nothing matches.
    """
    if osp.isdir(source):
        paths = [
            osp.join(source, f) for f in os.listdir(source)
            if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    elif osp.isfile(source):
        paths = [source]
    else:
        paths = [
            p for p in glob.glob(source)
            if osp.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS)
        ]
    if not paths:
        raise FileNotFoundError(
            f'no images found at {source} (a file, a folder or a glob '
            f'pattern of {", ".join(IMAGE_EXTENSIONS)} files)')
    return sorted(paths)


def read_image(path: str) -> SRImage:
    """Read ``path`` for super-resolution (see the module docstring).

    Raises:
        ValueError: The file cannot be decoded, or has an unsupported
            bit depth or channel count.
    """
    try:
        img = mmcv.imread(path, flag='unchanged')
    except Exception as err:  # mmcv/OpenCV: unreadable file
        raise InputError(f'{path}: cannot be read as an image ({err})') \
            from None
    if img is None:
        raise InputError(f'{path}: cannot be decoded as an image (truncated '
                         'or corrupt file?)')
    if img.dtype == np.uint8:
        max_value = 255
    elif img.dtype == np.uint16:
        max_value = 65535
    else:
        raise InputError(f'{path}: {img.dtype} pixels are not supported '
                         '(8- or 16-bit images are)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    values = img.astype(np.float32) / max_value
    if values.ndim == 2:
        return SRImage(np.repeat(values[..., None], 3, 2), None, True,
                       max_value)
    if values.shape[2] not in (3, 4):
        raise InputError(f'{path}: {values.shape[2]} channels are not '
                         'supported (1, 3 or 4 are)')
    rgb = np.ascontiguousarray(values[..., 2::-1])  # OpenCV's BGR(A)
    alpha = values[..., 3] if values.shape[2] == 4 else None
    return SRImage(rgb, alpha, False, max_value)


def write_image(path: str, sr_rgb: np.ndarray, source: SRImage) -> None:
    """Write a super-resolved float (sH, sW, 3) image in 0-1 like
    ``source`` was read (grey, alpha, bit depth; see the module docstring).
    """
    h, w = sr_rgb.shape[:2]
    max_value = source.max_value
    if osp.splitext(path)[1].lower() in _EIGHT_BIT_FORMATS:
        max_value = 255
    dtype = np.uint8 if max_value == 255 else np.uint16
    if source.grey:
        out = sr_rgb.mean(2)
    else:
        out = sr_rgb[..., ::-1]  # to BGR
        if source.alpha is not None and not path.lower().endswith(
                ('.jpg', '.jpeg')):
            alpha = mmcv.imresize(source.alpha, (w, h),
                                  interpolation='bicubic')
            out = np.concatenate([out, alpha[..., None]], 2)
    out = np.clip(np.round(np.clip(out, 0, 1) * max_value), 0, max_value)
    if not mmcv.imwrite(out.astype(dtype), path):
        raise InputError(f'{path}: could not be written')
