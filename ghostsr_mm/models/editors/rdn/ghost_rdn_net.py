"""Ghost RDN (GhostSR Table 1) on MMagic's RDNNet."""
from typing import List, Optional

from mmagic.models.editors.rdn.rdn_net import RDB, RDNNet
from mmagic.registry import MODELS
from torch import Tensor

from ghostsr_mm.models.layers import GrowingConcat, conv_epilogue, ghostify
from ..ghost_base import GhostModelMixin, ghost_layer_args


class GhostRDB(RDB):
    """MMagic's residual dense block (same modules and keys) computed as
    ``x + lff(concat(x, relu(conv_1(.)), ..., relu(conv_L(.))))`` over a
    :class:`GrowingConcat`: each dense layer's ReLU rides in its ghost
    layer's shift pass, which at inference writes straight into the
    concatenation, and the block output is written into ``out`` when
    given."""

    def forward(self, x: Tensor, out: Optional[Tensor] = None) -> Tensor:
        growth = self.layers[0].conv.out_channels
        concat = GrowingConcat(x, x.shape[1] + len(self.layers) * growth)
        for layer in self.layers:
            concat.append(
                lambda part: conv_epilogue(
                    layer.conv, concat.tensor, relu=True, out=part), growth)
        return conv_epilogue(self.lff, concat.tensor, residual=x, out=out)


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
        ratio, max_offset, cheap_op, per_channel_shift, gumbel_decay,
        tau, zero_shift_bias: GhostConv2d arguments (see
        :func:`ghost_layer_args`).
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
        for i, rdb in enumerate(self.rdbs):
            ghost_rdb = GhostRDB(mid_channels, channel_growth, num_layers)
            ghost_rdb.load_state_dict(rdb.state_dict())
            self.rdbs[i] = ghost_rdb
        ghostify(self, self.ghost_layer_names(),
                 **ghost_layer_args(**ghost_args))

    def forward(self, x: Tensor) -> Tensor:
        """As ``RDNNet.forward``, with the blocks' outputs written into one
        :class:`GrowingConcat` for the global feature fusion."""
        sfe1 = self.sfe1(x)
        h = self.sfe2(sfe1)
        h = self.rdbs[0](h)
        local = GrowingConcat(h, h.shape[1] * self.num_blocks)
        for rdb in self.rdbs[1:]:
            h = local.append(lambda part: rdb(h, out=part), h.shape[1])
        gff = conv_epilogue(self.gff[1], self.gff[0](local.tensor),
                            residual=sfe1)
        return self.output(self.upscale(gff))

    def ghost_layer_names(self) -> List[str]:
        names = ['sfe2']
        for b in range(self.num_blocks):
            names += [
                f'rdbs.{b}.layers.{j}.conv' for j in range(self.num_layers)
            ]
        return names + ['gff.1']
