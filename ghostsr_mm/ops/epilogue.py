"""The epilogue ``act(scale * y + residual)`` with standard ops: what the
compiled shift fuses into its pass, and what a regular conv of the same block
runs after the conv."""
from typing import Optional

import torch
from torch import Tensor

from ._checks import check_out, check_residual_shape

__all__ = ['apply_epilogue']


def apply_epilogue(moved: Tensor,
                   residual: Optional[Tensor] = None,
                   scale: float = 1.0,
                   relu: bool = False,
                   inplace: bool = False,
                   out: Optional[Tensor] = None) -> Tensor:
    """``act(scale * moved + residual)`` with standard ops.

    Args:
        moved (Tensor): (N, C, H, W), a layer's output.
        residual (Tensor, optional): Same shape, added after scaling.
        scale (float): Multiplies ``moved``. Default: 1.
        relu (bool): ReLU last. Default: False.
        inplace (bool): Overwrite ``moved`` (a fresh output that nothing
            else holds, e.g. a conv's) instead of allocating. Default: False.
        out (Tensor, optional): Write the result into this tensor (e.g. a
            channel slice of a concatenation buffer) in the same pass, and
            return it. Default: None.
    """
    if residual is not None:
        check_residual_shape(residual, moved.shape)
    if out is not None:
        check_out(out, moved, moved.shape)
        if torch.is_grad_enabled() and (moved.requires_grad or (
                residual is not None and residual.requires_grad)):
            # out= ops do not record gradients; copy_ into a view does.
            return out.copy_(apply_epilogue(moved, residual, scale, relu))
        if residual is not None:
            torch.add(residual, moved, alpha=scale, out=out)
        elif scale != 1:
            torch.mul(moved, scale, out=out)
        elif relu:
            return torch.clamp_min(moved, 0, out=out)
        else:
            return out.copy_(moved)
        return out.relu_() if relu else out
    if not inplace:
        out = moved if scale == 1 else moved * scale
        if residual is not None:
            out = residual + out
        return torch.relu(out) if relu else out
    if scale != 1:
        moved.mul_(scale)
    if residual is not None:
        moved.add_(residual)
    return moved.relu_() if relu else moved
