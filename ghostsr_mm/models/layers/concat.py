"""A channel concatenation that grows part by part, as in the dense blocks of
RDN and the cascading blocks of CARN.

``torch.cat([concat, part], 1)`` after every part copies the whole growing
prefix again: in an RDN dense block of L layers that is O(L^2) channel planes
per block, about a seventh of a ghost model's CPU time. Without autograd,
:class:`GrowingConcat` instead writes every part straight into its slice of
one buffer: a part made by a :class:`GhostConv2d` is written there by the
shift itself (no copy at all), a part made by a regular conv by its last
epilogue op (one pass over the part only). With autograd it concatenates
with ``torch.cat``: a buffer written after a conv has read it would change
what the conv saved for its backward pass. Under ``torch.compile`` it
concatenates with ``torch.cat`` too: inductor runs the convolutions
channels_last, where a prefix of the channels is not dense, so a buffer
laid out by eager code would be converted before every conv; with
``torch.cat`` inductor lays out each concatenation itself (measured in
benchmarks/README.md).
"""
from typing import Callable, Optional

import torch
from torch import Tensor

from ghostsr_mm.utils import ThreadLocalSwitch

__all__ = ['GrowingConcat', 'concat_with_torch_cat']

_torch_cat = ThreadLocalSwitch()


def concat_with_torch_cat():
    """Make every GrowingConcat inside the block use ``torch.cat`` (the
    ablation of the in-place parts in benchmarks/bench_models.py)."""
    return _torch_cat.on()


def _writes_in_place() -> bool:
    """In-place parts need no autograd and an eager run (the TorchScript
    tracer behind ONNX export records plain concats; for torch.compile see
    the module's note)."""
    return not torch.is_grad_enabled() and not torch.jit.is_tracing() \
        and not torch.jit.is_scripting() and not _torch_cat \
        and not torch.compiler.is_compiling()


class GrowingConcat:
    """``torch.cat`` of ``first`` and the parts appended later, on dim 1.

    Args:
        first (Tensor): The first part, (N, C_0, H, W).
        channels (int): Channels of the full concatenation (C_0 plus every
            part to come).

    Example::

        concat = GrowingConcat(x, 64 + 3 * 32)
        for layer in layers:  # each makes 32 channels
            concat.append(lambda out: conv_epilogue(
                layer, concat.tensor, relu=True, out=out), 32)
        features = concat.tensor
    """

    def __init__(self, first: Tensor, channels: int) -> None:
        if first.dim() != 4 or first.shape[1] > channels:
            raise ValueError(
                'GrowingConcat: `first` must be (N, C, H, W) with C <= '
                f'channels={channels}, got shape {tuple(first.shape)}')
        self.channels = channels
        if not _writes_in_place():
            self.tensor = first
            self._buffer = None
            return
        n, c, h, w = first.shape
        channels_last = not first.is_contiguous() and first.is_contiguous(
            memory_format=torch.channels_last)
        self._buffer = torch.empty(
            (n, channels, h, w),
            dtype=first.dtype,
            device=first.device,
            memory_format=torch.channels_last
            if channels_last else torch.contiguous_format)
        self._buffer[:, :c].copy_(first)
        self.tensor = self._buffer[:, :c]

    def append(self, write: Callable[[Optional[Tensor]], Tensor],
               channels: int) -> Tensor:
        """Add a part of ``channels`` channels made by ``write(out)``.

        Args:
            write: Makes the part. Called with the part's slice of the
                buffer, it must write the part there (e.g. by passing it as
                ``out`` to :func:`conv_epilogue` or a GhostConv2d); called
                with None, it returns the part.
            channels (int): The part's channels.

        Returns:
            Tensor: The part (in place: its slice of the buffer). The
            concatenation so far is ``self.tensor``.
        """
        start = self.tensor.shape[1]
        if start + channels > self.channels:
            raise ValueError(
                f'GrowingConcat: a part of {channels} channels after '
                f'{start} exceeds the {self.channels} channels it was made '
                'for')
        if self._buffer is None:
            part = write(None)
            if part.shape[1] != channels:
                raise ValueError(
                    f'GrowingConcat: the part was announced with {channels} '
                    f'channels but has {part.shape[1]}')
            self.tensor = torch.cat([self.tensor, part], 1)
            return part
        part = self._buffer[:, start:start + channels]
        write(part)
        self.tensor = self._buffer[:, :start + channels]
        return part
