"""CARN and CARN-M (Ahn et al., "Fast, Accurate, and Lightweight
Super-Resolution with Cascading Residual Network", ECCV 2018), which MMagic
lacks, and their ghost versions (GhostSR Table 1).

Structure (as the reference PyTorch code): mean shift -> entry 3x3 conv ->
three cascading blocks, each followed by a 1x1 fusion of the concatenation
of everything before it -> upsampler -> exit 3x3 conv -> mean shift back.
A CARN cascading block holds three residual blocks (conv-relu-conv, add,
relu), each followed by a 1x1 fusion; CARN-M's holds ONE efficient residual
block (3x3 group conv, relu, 3x3 group conv, relu, 1x1, add, relu) used
three times (recursive weight sharing).
"""
import inspect
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmagic.registry import MODELS
from torch import Tensor

from ghostsr_mm.models.layers import GrowingConcat, conv_epilogue, ghostify
from ..ghost_base import GhostModelMixin, ghost_layer_args

SCALES = (2, 3, 4)
GHOST_ARGS = tuple(inspect.signature(ghost_layer_args).parameters)


# The blocks below call their convs through conv_epilogue, so that in a ghost
# model the ReLUs and residual adds after a ghost layer ride in its shift pass,
# and write their outputs into `out` when given: the slice of the cascade's
# GrowingConcat, so that the concatenations copy nothing at inference.


class ResidualBlock(nn.Module):
    """conv3x3 - relu - conv3x3, add, relu."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor, out: Optional[Tensor] = None) -> Tensor:
        h = conv_epilogue(self.conv1, x, relu=True)
        return conv_epilogue(self.conv2, h, residual=x, relu=True, out=out)

    def conv3x3_names(self) -> List[str]:
        return ['conv1', 'conv2']


class EfficientResidualBlock(nn.Module):
    """CARN-M's block: group conv3x3 - relu - group conv3x3 - relu -
    conv1x1, add, relu."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, groups=groups)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, groups=groups)
        self.conv3 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, out: Optional[Tensor] = None) -> Tensor:
        h = conv_epilogue(self.conv1, x, relu=True)
        h = conv_epilogue(self.conv2, h, relu=True)
        return conv_epilogue(self.conv3, h, residual=x, relu=True, out=out)

    def conv3x3_names(self) -> List[str]:
        return ['conv1', 'conv2']


def fusion(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv + relu on a concatenation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))


def cascade(x: Tensor, blocks: Sequence[nn.Module],
            fusions: Sequence[nn.Sequential],
            out: Optional[Tensor] = None) -> Tensor:
    """CARN's cascading connections: each block reads the last fusion's
    output, and each fusion (1x1 conv, relu) the concatenation of ``x`` and
    every block output so far. Returns the last fusion's output (written
    into ``out`` when given)."""
    channels = x.shape[1]
    concat = GrowingConcat(x, channels * (len(blocks) + 1))
    h = x
    for i, (block, fuse) in enumerate(zip(blocks, fusions)):
        concat.append(lambda part: block(h, out=part), channels)
        h = conv_epilogue(fuse[0], concat.tensor, relu=True,
                          out=out if i == len(blocks) - 1 else None)
    return h


class CascadingBlock(nn.Module):
    """Three (residual block, 1x1 fusion) stages over a growing concat.

    With ``efficient=True`` (CARN-M) one efficient residual block,
    ``blocks.0``, serves all three stages (recursive weight sharing).
    """

    def __init__(self, channels: int, efficient: bool, groups: int) -> None:
        super().__init__()
        if efficient:
            self.blocks = nn.ModuleList(
                [EfficientResidualBlock(channels, groups)])
        else:
            self.blocks = nn.ModuleList(
                [ResidualBlock(channels) for _ in range(3)])
        self.fusions = nn.ModuleList(
            [fusion(channels * (i + 2), channels) for i in range(3)])

    def forward(self, x: Tensor, out: Optional[Tensor] = None) -> Tensor:
        blocks = [self.blocks[i % len(self.blocks)]
                  for i in range(len(self.fusions))]
        return cascade(x, blocks, self.fusions, out)


class Upsampler(nn.Sequential):
    """(conv3x3 to r^2 C, relu, pixel shuffle r) steps: r = 2 for scales
    2^n, r = 3 for scale 3."""

    def __init__(self, channels: int, scale: int, groups: int = 1) -> None:
        if scale & (scale - 1) == 0:
            factors = [2] * int(math.log2(scale))
        elif scale == 3:
            factors = [3]
        else:
            raise ValueError(f'CARN upsampler: scale {scale} is not '
                             'supported; expected 2^n or 3')
        layers = []
        for r in factors:
            layers += [
                nn.Conv2d(channels, channels * r * r, 3, 1, 1, groups=groups),
                nn.ReLU(inplace=True),
                nn.PixelShuffle(r)
            ]
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(0, len(self), 3):  # (conv, relu, shuffle) steps
            x = self[i + 2](conv_epilogue(self[i], x, relu=True))
        return x

    def conv_names(self) -> List[str]:
        """The convs' names, one per step (ghost or not)."""
        return [str(i) for i in range(0, len(self), 3)]


@MODELS.register_module()
class CARNNet(BaseModule):
    """CARN / CARN-M backbone.

    Args:
        in_channels (int): Input channels. Default: 3.
        out_channels (int): Output channels. Default: 3.
        mid_channels (int): Feature channels. Default: 64.
        num_blocks (int): Cascading blocks. Default: 3.
        upscale_factor (int): Scale used when ``forward`` gets none.
            Default: 2.
        multi_scale (bool): Hold the x2, x3 and x4 upsamplers together (the
            CARN paper's multi-scale model); ``forward(x, scale)`` picks one.
            Default: False.
        efficient (bool): CARN-M: efficient residual blocks with group convs
            and recursive sharing. Default: False.
        groups (int): Groups of CARN-M's 3x3 convs and upsampler.
            Default: 4.
        rgb_mean (Sequence[float]): Mean subtracted from the 0-1 input (the
            DIV2K mean). Default: (0.4488, 0.4371, 0.4040).

    Shapes:
        (N, C_in, H, W) -> (N, C_out, s·H, s·W).
    """

    def __init__(self,
                 in_channels: int = 3,
                 out_channels: int = 3,
                 mid_channels: int = 64,
                 num_blocks: int = 3,
                 upscale_factor: int = 2,
                 multi_scale: bool = False,
                 efficient: bool = False,
                 groups: int = 4,
                 rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040),
                 init_cfg: Optional[Dict] = None) -> None:
        super().__init__(init_cfg)
        if upscale_factor not in SCALES:
            raise ValueError(f'CARNNet: `upscale_factor` must be one of '
                             f'{SCALES}, got {upscale_factor}')
        if len(rgb_mean) != in_channels:
            raise ValueError(f'CARNNet: `rgb_mean` needs {in_channels} '
                             f'values (in_channels), got {len(rgb_mean)}')
        self.upscale_factor = upscale_factor
        self.multi_scale = multi_scale
        self.efficient = efficient
        self.num_blocks = num_blocks
        group = groups if efficient else 1
        self.register_buffer(
            'rgb_mean',
            torch.tensor(rgb_mean, dtype=torch.float32).view(1, -1, 1, 1),
            persistent=False)
        self.entry = nn.Conv2d(in_channels, mid_channels, 3, 1, 1)
        self.blocks = nn.ModuleList([
            CascadingBlock(mid_channels, efficient, groups)
            for _ in range(num_blocks)
        ])
        self.fusions = nn.ModuleList([
            fusion(mid_channels * (i + 2), mid_channels)
            for i in range(num_blocks)
        ])
        scales = SCALES if multi_scale else (upscale_factor, )
        self.upsamplers = nn.ModuleDict(
            {f'x{s}': Upsampler(mid_channels, s, group)
             for s in scales})
        self.exit = nn.Conv2d(mid_channels, out_channels, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, scale: Optional[int] = None) -> Tensor:
        """Upscale ``x`` (N, C, H, W) in 0-1 by ``scale`` (default:
        ``upscale_factor``; another scale needs ``multi_scale=True``)."""
        scale = self.upscale_factor if scale is None else scale
        key = f'x{scale}'
        if key not in self.upsamplers:
            raise ValueError(
                f'CARNNet: scale {scale} is not available; this model has '
                f'{sorted(self.upsamplers)} (multi_scale={self.multi_scale})')
        mean = self.rgb_mean.to(x)
        x = self.relu(self.entry(x - mean))
        out = cascade(x, self.blocks, self.fusions)
        return self.exit(self.upsamplers[key](out)) + mean

    def conv3x3_body_names(self) -> List[str]:
        """The 3x3 convs inside the cascading blocks (shared ones once)."""
        names = []
        for b, block in enumerate(self.blocks):
            for r in range(len(block.blocks)):
                names += [
                    f'blocks.{b}.blocks.{r}.{n}'
                    for n in block.blocks[r].conv3x3_names()
                ]
        return names


@MODELS.register_module()
class GhostCARNNet(GhostModelMixin, CARNNet):
    """CARN / CARN-M with GhostConv2d layers (GhostSR Table 1).

    Ghost layers: both 3x3 convs of every (efficient) residual block -- in
    CARN-M the recursively shared block is one module, so its ghost layers
    and learnable shifts are shared too -- plus the first conv (or, with
    ``ghost_upsampler_convs='all'``, every conv) of the upsamplers named in
    ``ghost_upsamplers``. Regular: the entry conv (first), the exit conv
    (last), every 1x1 fusion (point-wise) and the other upsampler convs.

    The paper does not say which upsampler convs it converts; the defaults
    are the smallest sets that reproduce Table 1's parameter counts of the
    multi-scale models: CARN ('x2',): 1.186M vs 1.19M; CARN-M
    ('x2', 'x3'): 0.327M vs 0.33M. With no upsampler conv converted the
    counts would be 1.26M and 0.387M.

    Args:
        ghost_upsamplers (Sequence[str], optional): Upsamplers ('x2', 'x3',
            'x4') with ghost convs. Default: None, i.e. ('x2',) for CARN
            and ('x2', 'x3') for CARN-M (so a single-scale x4 model has
            none).
        ghost_upsampler_convs (str): 'first': the first conv of each of
            ``ghost_upsamplers`` (x2 and x3 have only one); 'all': every
            conv, e.g. both of x4, whose second conv, at twice the input
            size, costs four times the first. Default: 'first'.
        ratio, max_offset, cheap_op, per_channel_shift, gumbel_decay,
        tau, zero_shift_bias: GhostConv2d arguments (see
        :func:`ghost_layer_args`), by keyword.
        Others: As :class:`CARNNet`, by keyword.
    """

    def __init__(self,
                 ghost_upsamplers: Optional[Sequence[str]] = None,
                 ghost_upsampler_convs: str = 'first',
                 **kwargs) -> None:
        ghost_args = {k: kwargs.pop(k) for k in GHOST_ARGS if k in kwargs}
        super().__init__(**kwargs)
        if ghost_upsamplers is None:  # the defaults this model has
            ghost_upsamplers = tuple(
                u for u in (('x2', 'x3') if self.efficient else ('x2', ))
                if u in self.upsamplers)
        unknown = [u for u in ghost_upsamplers if u not in self.upsamplers]
        if unknown:
            raise ValueError(
                f'GhostCARNNet: `ghost_upsamplers` {unknown} are not '
                f'upsamplers of this model; it has {sorted(self.upsamplers)} '
                f'(multi_scale={self.multi_scale})')
        if ghost_upsampler_convs not in ('first', 'all'):
            raise ValueError(
                "GhostCARNNet: `ghost_upsampler_convs` must be 'first' or "
                f"'all', got {ghost_upsampler_convs!r}")
        self.ghost_upsamplers = tuple(ghost_upsamplers)
        self.ghost_upsampler_convs = ghost_upsampler_convs
        ghostify(self, self.ghost_layer_names(),
                 **ghost_layer_args(**ghost_args))

    def screened_inputs(self) -> Dict[str, str]:
        """conv2 reads relu(conv1) in every residual block (CARN-M's are
        group convs, which Eq. 9 leaves unscreened); conv1 reads a block
        input or a 1x1 fusion's output, and the upsamplers the body's sum:
        not screened."""
        return {f'{p}.conv2': f'{p}.conv1'
                for p in {n.rpartition('.')[0]
                          for n in self.conv3x3_body_names()}}

    def ghost_layer_names(self) -> List[str]:
        names = self.conv3x3_body_names()
        for key in self.ghost_upsamplers:
            convs = self.upsamplers[key].conv_names()
            if self.ghost_upsampler_convs == 'first':
                convs = convs[:1]
            names += [f'upsamplers.{key}.{i}' for i in convs]
        return names
