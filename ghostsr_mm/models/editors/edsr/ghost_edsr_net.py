"""Ghost EDSR (GhostSR Table 1) on MMagic's EDSRNet."""
from typing import Dict, List, Sequence

from mmagic.models.archs import ResidualBlockNoBN
from mmagic.models.editors.edsr.edsr_net import EDSRNet
from mmagic.models.utils import make_layer
from mmagic.registry import MODELS
from torch import Tensor

from ghostsr_mm.models.layers import conv_epilogue, ghostify
from ..ghost_base import GhostModelMixin, ghost_layer_args


class GhostResidualBlockNoBN(ResidualBlockNoBN):
    """MMagic's EDSR block (conv-relu-conv, scaled, plus identity) whose
    ReLU, scaling and residual add ride in the ghost layers' shift pass."""

    def forward(self, x: Tensor) -> Tensor:
        out = conv_epilogue(self.conv1, x, relu=True)
        return conv_epilogue(
            self.conv2, out, residual=x, scale=self.res_scale)


@MODELS.register_module()
class GhostEDSRNet(GhostModelMixin, EDSRNet):
    """EDSR whose 3x3 body convs are GhostConv2d layers.

    Same constructor arguments and state-dict keys as MMagic's ``EDSRNet``
    for every layer that stays regular, so an EDSRNet checkpoint maps onto it
    (the ghost layers' intrinsic convs sit at ``<name>.conv``).

    Ghost layers: conv1/conv2 of every residual block and conv_after_body.
    Regular: conv_first (first layer), the upsampler and conv_last (last
    layers), as the paper keeps the first and last convs. With 32 blocks of
    256 channels this gives, for x2/x3/x4, 21.55M/24.50M/23.91M parameters
    against Table 1's 21.63M/24.53M/23.93M (within 0.4%); leaving
    conv_after_body regular would give 21.85M/24.80M/24.21M.

    Args:
        in_channels, out_channels, mid_channels, num_blocks,
        upscale_factor, res_scale, rgb_mean, rgb_std: As ``EDSRNet``.
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
                 res_scale: float = 1,
                 rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040),
                 rgb_std: Sequence[float] = (1.0, 1.0, 1.0),
                 **ghost_args) -> None:
        super().__init__(in_channels, out_channels, mid_channels, num_blocks,
                         upscale_factor, res_scale, list(rgb_mean),
                         list(rgb_std))
        self.body = make_layer(
            GhostResidualBlockNoBN,
            num_blocks,
            mid_channels=mid_channels,
            res_scale=res_scale)
        ghostify(self, self.ghost_layer_names(),
                 **ghost_layer_args(**ghost_args))

    def screened_inputs(self) -> Dict[str, str]:
        """conv2 reads relu(conv1) in every block; conv1 and
        conv_after_body read the residual stream (a sum), not screened."""
        return {f'body.{i}.conv2': f'body.{i}.conv1'
                for i in range(self.num_blocks)}

    def ghost_layer_names(self) -> List[str]:
        names = []
        for i in range(self.num_blocks):
            names += [f'body.{i}.conv1', f'body.{i}.conv2']
        return names + ['conv_after_body']
