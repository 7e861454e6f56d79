from .ghost_shift import (HAS_EXT, apply_epilogue, candidate_offsets,
                          ghost_shift, ghost_shift_backward_reference,
                          ghost_shift_reference,
                          ghost_shift_weight_grad_reference,
                          learnable_ghost_shift, reference_mode)

__all__ = [
    'HAS_EXT', 'apply_epilogue', 'candidate_offsets', 'ghost_shift',
    'ghost_shift_backward_reference', 'ghost_shift_reference',
    'ghost_shift_weight_grad_reference', 'learnable_ghost_shift',
    'reference_mode'
]
