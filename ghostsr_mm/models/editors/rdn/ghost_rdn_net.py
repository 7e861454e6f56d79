"""Ghost RDN (GhostSR Table 1) on MMagic's RDNNet."""
from typing import List

import torch
import torch.nn as nn
from mmagic.models.editors.rdn.rdn_net import DenseLayer, RDNNet
from mmagic.registry import MODELS
from torch import Tensor

from ghostsr_mm.models.layers import conv_epilogue, ghostify
from ..ghost_base import GhostModelMixin, ghost_cfg


class GhostDenseLayer(DenseLayer):
    """MMagic's RDN dense layer (conv, relu, concat with the input) whose
    ReLU rides in the ghost layer's shift pass."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, conv_epilogue(self.conv, x, relu=True)], 1)


@MODELS.register_module()
class GhostRDNNet(GhostModelMixin, RDNNet):
    """RDN whose middle 3x3 convs are GhostConv2d layers.

    Same constructor arguments and state-dict keys as MMagic's ``RDNNet``
    for every layer that stays regular.

    Ghost layers: sfe2, the 3x3 conv of every dense layer, and the 3x3 conv
    of the global feature fusion (gff.1). Regular: sfe1 (first), the 1x1
    local/global fusions (point-wise, as the paper keeps them), the
    upsampler and the output conv (last layers). For x2/x3/x4 this gives
    11.47M/11.65M/11.61M parameters against Table 1's 11.54M/11.73M/11.64M
    (within 0.7%).

    Args:
        in_channels, out_channels, mid_channels, num_blocks,
        upscale_factor, num_layers, channel_growth: As ``RDNNet``.
        ratio, max_offset, shift_mode, per_channel_shift, gumbel_decay,
        tau: GhostConv2d arguments (see :func:`ghost_cfg`).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 mid_channels: int = 64,
                 num_blocks: int = 16,
                 upscale_factor: int = 4,
                 num_layers: int = 8,
                 channel_growth: int = 64,
                 **ghost_args) -> None:
        super().__init__(in_channels, out_channels, mid_channels, num_blocks,
                         upscale_factor, num_layers, channel_growth)
        for rdb in self.rdbs:
            rdb.layers = nn.Sequential(*[
                GhostDenseLayer(layer.conv.in_channels,
                                layer.conv.out_channels)
                for layer in rdb.layers
            ])
        ghostify(self, self.ghost_layer_names(), **ghost_cfg(**ghost_args))

    def ghost_layer_names(self) -> List[str]:
        names = ['sfe2']
        for b in range(self.num_blocks):
            names += [
                f'rdbs.{b}.layers.{j}.conv' for j in range(self.num_layers)
            ]
        return names + ['gff.1']
