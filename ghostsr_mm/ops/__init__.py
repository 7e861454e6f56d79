"""The ghost shift (GhostSR Eq. 1-2) as a compiled op with a pure-PyTorch
reference.

Modules: :mod:`.ghost_shift` (the public op), :mod:`.learnable` (the shift
whose offsets come from a straight-through one-hot weight),
:mod:`.reference` (the reference and fallback), :mod:`.static` (the
shift as slices and pads, for ONNX export), :mod:`.epilogue` (the fused
epilogue with standard ops), :mod:`.registration` (fake kernels and autograd
of the compiled op), :mod:`._ext` (loading the extension).
"""
from ._ext import HAS_EXT, reference_mode
from .epilogue import apply_epilogue
from .ghost_shift import ghost_shift
from .learnable import candidate_offsets, learnable_ghost_shift
from .reference import (ghost_shift_backward_reference, ghost_shift_reference,
                        ghost_shift_weight_grad_reference)
from .static import ghost_shift_static

__all__ = [
    'HAS_EXT', 'apply_epilogue', 'candidate_offsets', 'ghost_shift',
    'ghost_shift_backward_reference', 'ghost_shift_reference',
    'ghost_shift_static',
    'ghost_shift_weight_grad_reference', 'learnable_ghost_shift',
    'reference_mode'
]
