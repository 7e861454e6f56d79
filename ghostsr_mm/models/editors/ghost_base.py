"""What every ghost backbone shares: its ghost arguments and model-level
helpers (inference graph, Gumbel state)."""
from typing import Dict, Iterator, Tuple

import torch.nn as nn

from ghostsr_mm.models.layers import (GhostConv2d, convert_to_inference,
                                      ghost_layers)


def ghost_layer_args(ratio: float = 0.5,
                     max_offset: int = 1,
                     cheap_op: str = 'learnable',
                     per_channel_shift: bool = False,
                     gumbel_decay: float = 0.97,
                     tau: float = 1.0,
                     zero_shift_bias: float = 1e-3) -> Dict:
    """The GhostConv2d arguments of a ghost backbone (paper defaults:
    λ = 0.5, d = 1, a = 0.97, τ = 1; ``zero_shift_bias`` is the initial
    W' at the zero offset)."""
    return dict(
        ratio=ratio,
        max_offset=max_offset,
        cheap_op=cheap_op,
        per_channel_shift=per_channel_shift,
        gumbel_decay=gumbel_decay,
        tau=tau,
        zero_shift_bias=zero_shift_bias)


class GhostModelMixin:
    """Model-level helpers of ghost backbones."""

    def ghost_layers(self: nn.Module) -> Iterator[Tuple[str, GhostConv2d]]:
        """(name, layer) of each distinct GhostConv2d, in network order."""
        return ghost_layers(self)

    def screened_inputs(self) -> Dict[str, str]:
        """{ghost layer: the ghost layer whose output is its whole input}
        (through an activation only), for Eq. 9's screening in
        :func:`~ghostsr_mm.models.clustering.cluster_init`. A layer fed by
        a residual sum, a concatenation or a regular conv is not listed:
        its input channels are not that layer's intrinsic and ghost
        features. Default: none."""
        return {}

    def convert_to_inference(self: nn.Module,
                             inplace: bool = False) -> nn.Module:
        """The inference graph: learnable shifts fixed to argmax W', no
        Gumbel parameters, same eval outputs."""
        return convert_to_inference(self, inplace=inplace)

    def set_gumbel_state(self: nn.Module, epoch: int = None,
                         tau: float = None) -> None:
        """Set t (Eq. 3) and τ (Eq. 4) of every ghost layer."""
        for _, layer in ghost_layers(self):
            if epoch is not None:
                layer.gumbel_epoch = epoch
            if tau is not None:
                layer.tau = tau
