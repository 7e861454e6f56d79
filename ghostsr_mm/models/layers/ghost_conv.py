"""GhostConv2d: the GhostSR module (Nie et al., Sec. 3.1, Eq. 1-6).

A regular convolution makes ceil((1 - λ) · C_out) intrinsic features; the
other λ · C_out output channels (ghost features) are intrinsic features moved
by a whole-pixel shift (:mod:`ghostsr_mm.ops`), written straight into their
output places, at no FLOPs.

The learnable shift (Eq. 3-6) follows the paper, not the authors' released
code: a proxy weight W' over the (2d+1)x(2d+1) window, exponentially decayed
Gumbel noise N = -log(-log U) · a^(t-1) with t the training epoch, the
relaxation S = softmax((W' + N) / τ), the one-hot W at argmax S in the
forward pass and the softmax's derivative in the backward pass
(straight-through: ``W - S.detach() + S``). The released code instead takes
a Gumbel-max of |W' + N| with an identity straight-through estimator and never
decays the noise.
"""
import math
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ghostsr_mm.ops import apply_epilogue
from .cheap_ops import cheap_operation

_IntPair = Union[int, Tuple[int, int]]


class GhostConv2d(nn.Module):
    """A drop-in for ``nn.Conv2d`` whose ghost channels are shifted copies.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels C_out (intrinsic + ghost).
        kernel_size (int | tuple[int]): Kernel size of the intrinsic conv.
        stride, padding, dilation, groups, bias, padding_mode: As for
            ``nn.Conv2d``.
        ratio (float): λ, the share of ghost channels, in (0, 1). The
            intrinsic channels, ceil((1 - λ) * out_channels), are rounded up
            to a multiple of ``groups`` (CARN-M's width-36 branch: 20
            intrinsic, 16 ghosts with groups=4). Default: 0.5.
        max_offset (int): d, the largest shift in pixels (the learnable
            shift's window is (2d+1)x(2d+1)). Default: 1.
        cheap_op (str): The cheap operation that makes the ghosts
            (:mod:`.cheap_ops`): 'learnable' (the paper's learned shift),
            'fixed' (given offsets: the inference graph), 'copy' (offset 0:
            Table 3's "no learnable shift") or 'depthwise' (a 3x3 depthwise
            conv: Ghost-DW of Table 2). Default: 'learnable'.
        per_channel_shift (bool): Learn one shift per ghost channel instead
            of one per layer (the paper). Default: False.
        gumbel_decay (float): a of Eq. 3. Default: 0.97.
        tau (float): τ of Eq. 4. Default: 1.0.
        zero_shift_bias (float): Initial W' of the zero offset (the others
            start at 0). The default, a tie-break, makes an untrained layer a
            copy in eval mode; a value near 1 also makes the copy the likelier
            draw early in training, which suits a layer cluster-initialised
            for copying (see benchmarks/README.md). Default: 1e-3.
        name (str, optional): Layer name used in error messages.

    Shapes:
        input (N, C_in, H, W) -> output (N, C_out, H', W').

    Channel mapping: buffer ``src`` (C_out,) names the intrinsic channel of
    every output channel and ``ghost_channels`` (G,) the output channels that
    are ghosts. By default (training from scratch) the mapping is by order
    (:func:`by_order_mapping`): intrinsic channel i sits at output i and
    ghost j (output m + j) is a shift of intrinsic j mod m, within each
    group for grouped convs; :meth:`set_mapping` installs a clustering map in
    which every output keeps its pre-trained position.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: _IntPair,
                 stride: _IntPair = 1,
                 padding: Union[str, _IntPair] = 0,
                 dilation: _IntPair = 1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 ratio: float = 0.5,
                 max_offset: int = 1,
                 cheap_op: str = 'learnable',
                 per_channel_shift: bool = False,
                 gumbel_decay: float = 0.97,
                 tau: float = 1.0,
                 zero_shift_bias: float = 1e-3,
                 name: Optional[str] = None,
                 device=None,
                 dtype=None) -> None:
        super().__init__()
        where = f'GhostConv2d {name!r}' if name else 'GhostConv2d'
        if not 0 < ratio < 1:
            raise ValueError(f'{where}: `ratio` (λ) must lie in (0, 1), got '
                             f'{ratio}')
        operation = cheap_operation(cheap_op, where)
        if not isinstance(max_offset, int) or max_offset < 0:
            raise ValueError(f'{where}: `max_offset` (d) must be an int >= 0, '
                             f'got {max_offset!r}')
        # A grouped conv makes a whole number of channels per group: the
        # intrinsic channels are rounded up to a multiple of `groups`.
        num_intrinsic = math.ceil((1 - ratio) * out_channels / groups) * groups
        num_ghost = out_channels - num_intrinsic
        if num_ghost < 1:
            raise ValueError(
                f'{where}: `out_channels`={out_channels} is too few for '
                f'ratio {ratio} and groups={groups}: '
                f'ceil((1 - ratio) * out_channels) rounded up to a multiple '
                f'of the groups is {num_intrinsic}, which leaves no ghost '
                'channel')
        if gumbel_decay < 0 or tau <= 0:
            raise ValueError(f'{where}: need `gumbel_decay` >= 0 and `tau` > '
                             f'0, got {gumbel_decay} and {tau}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_intrinsic = num_intrinsic
        self.ratio = ratio
        self.max_offset = max_offset
        self.per_channel_shift = per_channel_shift
        # Eq. 3-4 state, set by GumbelAnnealHook.
        self._gumbel_epoch = 1
        self._noise_driven = False
        self.gumbel_decay = gumbel_decay
        self.tau = tau
        self.zero_shift_bias = zero_shift_bias

        factory = dict(device=device, dtype=dtype)
        self.conv = nn.Conv2d(in_channels, num_intrinsic, kernel_size, stride,
                              padding, dilation, groups, bias, padding_mode,
                              **factory)
        _, src, ghost = by_order_mapping(out_channels, num_intrinsic, groups)
        self.register_buffer('src', src.to(device))
        self.register_buffer('ghost_channels', ghost.to(device))
        self.cheap_operation = operation
        operation.setup(self, factory)

    # ------------------------------------------------------------------
    @property
    def num_ghost(self) -> int:
        return self.out_channels - self.num_intrinsic

    @property
    def cheap_op(self) -> str:
        """The name of the cheap operation ('learnable', 'fixed', 'copy',
        'depthwise')."""
        return self.cheap_operation.name

    @property
    def gumbel_epoch(self) -> int:
        """t of Eq. 3 (1 until GumbelAnnealHook or the training loop sets
        it)."""
        return self._gumbel_epoch

    @gumbel_epoch.setter
    def gumbel_epoch(self, epoch: int) -> None:
        self._gumbel_epoch = epoch
        self._noise_driven = True

    def check_noise_driven(self) -> None:
        """Warn (once per process) when this layer trains its shift and
        nothing has ever set t: the noise of Eq. 3 would stay at full
        strength for the whole training."""
        if not self._noise_driven:
            self._noise_driven = True  # one check per layer
            warnings.warn(
                'GhostConv2d: a learnable shift is training with the Gumbel '
                'noise of GhostSR Eq. 3 at full strength and nothing '
                "decays it: add dict(type='GumbelAnnealHook') to the "
                "config's custom_hooks, or call "
                'model.set_gumbel_state(epoch=t) in your training loop.',
                stacklevel=3)

    @property
    def noise_scale(self) -> float:
        """a^(t-1) of Eq. 3."""
        return self.gumbel_decay**(self.gumbel_epoch - 1)

    def set_mapping(self, src: Sequence[int],
                    ghost_channels: Sequence[int]) -> None:
        """Install a channel map (e.g. from clustering).

        Args:
            src: (C_out,) intrinsic channel of each output channel.
            ghost_channels: (G,) the output channels that are ghosts. Every
                other output channel c must hold intrinsic channel src[c]
                unshifted, and every intrinsic channel must be placed once.
        """
        src = torch.as_tensor(src, device=self.src.device)
        ghost = torch.as_tensor(ghost_channels, device=self.src.device)
        problem = self.mapping_problem(src, ghost)
        if problem:
            raise ValueError(f'set_mapping: {problem}')
        self.src.copy_(src)
        self.ghost_channels.copy_(ghost)

    def mapping_problem(self, src: Tensor, ghost: Tensor) -> Optional[str]:
        """What makes (``src``, ``ghost_channels``) no channel map of this
        layer, or None: integer tensors of shapes (C_out,) and (G,), the
        ghosts G distinct output channels, every source an intrinsic
        channel, and the other output channels holding each intrinsic
        channel once."""
        if src.is_floating_point() or ghost.is_floating_point() or \
                src.dtype == torch.bool or ghost.dtype == torch.bool:
            return (f'src and ghost_channels must be integer tensors, got '
                    f'{src.dtype} and {ghost.dtype}')
        if src.shape != self.src.shape or ghost.shape != (self.num_ghost, ):
            return (f'expected src of shape {tuple(self.src.shape)} and '
                    f'ghost_channels of shape ({self.num_ghost},), got '
                    f'{tuple(src.shape)} and {tuple(ghost.shape)}')
        src, ghost = src.detach().cpu().long(), ghost.detach().cpu().long()
        if ghost.numel() and (ghost.min() < 0 or
                              ghost.max() >= self.out_channels or
                              ghost.unique().numel() != ghost.numel()):
            return (f'ghost_channels must be {self.num_ghost} distinct '
                    f'output channels in [0, {self.out_channels}), got '
                    f'{ghost.tolist()}')
        if src.min() < 0 or src.max() >= self.num_intrinsic:
            return (f'src values must be intrinsic channels in [0, '
                    f'{self.num_intrinsic}), got values in '
                    f'[{int(src.min())}, {int(src.max())}]')
        homes = torch.ones(self.out_channels, dtype=torch.bool)
        homes[ghost] = False
        if not torch.equal(src[homes].sort().values,
                           torch.arange(self.num_intrinsic)):
            return ('the non-ghost output channels must hold each intrinsic '
                    f'channel 0..{self.num_intrinsic - 1} exactly once')
        return None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Refuses a channel map that is none (see :meth:`mapping_problem`),
        naming the layer; load_state_dict raises it with the other errors.
        The shapes are left to nn.Module's own check."""
        src = state_dict.get(prefix + 'src')
        ghost = state_dict.get(prefix + 'ghost_channels')
        if isinstance(src, Tensor) and isinstance(ghost, Tensor) and \
                src.shape == self.src.shape and \
                ghost.shape == self.ghost_channels.shape:
            problem = self.mapping_problem(src, ghost)
            if problem:
                error_msgs.append(f'{prefix}src / {prefix}ghost_channels: '
                                  f'{problem}')
                # The layer keeps its own map (not reported as missing).
                state_dict = dict(state_dict)
                state_dict[prefix + 'src'] = self.src
                state_dict[prefix + 'ghost_channels'] = self.ghost_channels
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def gumbel_relaxation(self) -> Tensor:
        """S of Eq. 4, with the noise of Eq. 3 in training mode.

        Returns:
            Tensor: (rows, (2d+1)^2) soft weights, rows = 1 or G.
        """
        logits = self.shift_logits.flatten(1)
        if self.training and self.noise_scale > 0:
            u = torch.rand_like(logits).clamp_(1e-10, 1 - 1e-10)
            logits = logits - torch.log(-torch.log(u)) * self.noise_scale
        return F.softmax(logits / self.tau, dim=1)

    def straight_through_weight(self) -> Tensor:
        """One-hot W at argmax S (Eq. 2, 5) carrying S's gradient (Eq. 6)."""
        soft = self.gumbel_relaxation()
        hard = F.one_hot(soft.argmax(1), soft.shape[1]).to(soft)
        k = 2 * self.max_offset + 1
        return (hard - soft.detach() + soft).view(-1, k, k)

    def current_offsets(self) -> Tensor:
        """The (C_out, 2) offsets used in eval mode (argmax W' for the ghosts
        of a learnable layer)."""
        return self.cheap_operation.offsets(self)

    def forward(self,
                x: Tensor,
                residual: Optional[Tensor] = None,
                scale: float = 1.0,
                relu: bool = False,
                out: Optional[Tensor] = None) -> Tensor:
        """The layer's output y, or ``act(scale * y + residual)`` with the
        optional epilogue (a residual connection, EDSR's residual scaling, a
        following ReLU), which the shift applies while it writes y: the
        epilogue costs no memory pass of its own.

        Args:
            x (Tensor): (N, C_in, H, W).
            residual (Tensor, optional): (N, C_out, H', W'), added to
                ``scale * y``. Default: None.
            scale (float): Multiplies y. Default: 1.
            relu (bool): ReLU last. Default: False.
            out (Tensor, optional): (N, C_out, H', W') tensor to write the
                result into and return, e.g. a channel slice of a
                concatenation buffer (:class:`GrowingConcat`): the shift
                writes it in place. Default: None.
        """
        return self.cheap_operation.forward(self, self.conv(x), residual,
                                            scale, relu, out)

    @torch.no_grad()
    def fix_shift(self) -> None:
        """Turn the layer into its inference graph in place: a learnable
        shift becomes the fixed shift argmax W' and W' is dropped; other
        cheap operations stay as they are."""
        self.cheap_operation = self.cheap_operation.fixed(self)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **layer_args) -> 'GhostConv2d':
        """A GhostConv2d with ``conv``'s arguments; the intrinsic conv takes
        the first filters of each group (the by-order mapping)."""
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **layer_args)
        keep, _, _ = by_order_mapping(conv.out_channels, layer.num_intrinsic,
                                      conv.groups)
        with torch.no_grad():
            layer.conv.weight.copy_(conv.weight[keep])
            if conv.bias is not None:
                layer.conv.bias.copy_(conv.bias[keep])
        return layer

    def extra_repr(self) -> str:
        return (f'ratio={self.ratio}, intrinsic={self.num_intrinsic}, '
                f'ghost={self.num_ghost}, cheap_op={self.cheap_op!r}, '
                f'max_offset={self.max_offset}, '
                f'per_channel_shift={self.per_channel_shift}')


def conv_epilogue(conv: nn.Module,
                  x: Tensor,
                  residual: Optional[Tensor] = None,
                  scale: float = 1.0,
                  relu: bool = False,
                  out: Optional[Tensor] = None) -> Tensor:
    """``act(scale * conv(x) + residual)`` for a regular or a ghost conv,
    written into ``out`` when given.

    A block written with it serves both a regular model and its ghost
    version: for a :class:`GhostConv2d` the epilogue is fused into the
    shift's pass (which writes ``out`` in place), for an ``nn.Conv2d`` it
    runs as in-place standard ops on the conv's fresh output (the last one
    writing ``out``).
    """
    if isinstance(conv, GhostConv2d):
        return conv(x, residual, scale, relu, out)
    return apply_epilogue(conv(x), residual, scale, relu, inplace=True,
                          out=out)


def by_order_mapping(out_channels: int, num_intrinsic: int, groups: int = 1):
    """The by-order channel map, within each group.

    Group g owns outputs [g·o, (g+1)·o) (o = C_out / groups) and intrinsic
    channels [g·i, (g+1)·i) (i = m / groups); its first i outputs are its
    intrinsic channels in place, and its other outputs are shifts of them
    in order (cyclically when there are more ghosts than intrinsic ones).

    Returns:
        tuple[Tensor]: ``keep`` (m,), the output channel each intrinsic
        channel sits at; ``src`` (C_out,); ``ghost_channels`` (G,).
    """
    if out_channels % groups:
        warnings.warn(
            f'by_order_mapping: {out_channels} output channels do not split '
            f'into {groups} groups; mapping ghosts across groups (as for '
            'groups=1)')
        groups = 1
    per_out, per_in = out_channels // groups, num_intrinsic // groups
    keep, src, ghost = [], [], []
    for g in range(groups):
        for j in range(per_out):
            src.append(g * per_in + j % per_in)
            (keep if j < per_in else ghost).append(g * per_out + j)
    return torch.tensor(keep), torch.tensor(src), torch.tensor(ghost)
