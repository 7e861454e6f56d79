"""Model complexity (Table 1's columns): parameters and FLOPs, shared by
tools/analysis/complexity.py, ClassSR's routing costs, the demo and the
benchmarks. Timing is :mod:`.timing`."""
from typing import Sequence

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

__all__ = ['count_params', 'count_flops']

# The shift moves memory and costs no FLOPs (GhostSR Sec. 3.1); telling the
# analyser so leaves no "unsupported operator" warning for our ops.
_ZERO_FLOP_OPS = ('ghostsr::ghost_shift', 'ghostsr::learnable_ghost_shift')
# Element-wise ops (mean shift, residual additions and scaling) and the
# pixel shuffle are not counted, as in fvcore's and the paper's counts (for
# EDSR x2 on 3x512x512 this gives 10678G against Table 1's 10679G).
_UNCOUNTED_OPS = ('aten::add', 'aten::add_', 'aten::sub', 'aten::mul',
                  'aten::mul_', 'aten::div', 'aten::pixel_shuffle',
                  'aten::relu', 'aten::relu_', 'aten::leaky_relu_',
                  'aten::leaky_relu', 'aten::mean', 'aten::cat')


def count_params(model: nn.Module) -> int:
    """Parameters, counting shared modules once (CARN-M's recursion)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, shape: Sequence[int],
                device: str = 'cpu') -> int:
    """Multiply-accumulates of one forward pass (the paper's "FLOPs", as
    fvcore and mmengine count them) on a (1, *shape) input.

    A GhostConv2d counts its intrinsic conv; the shift counts 0. The model
    is traced in eval mode; every module is left in the mode it had.
    """
    inputs = torch.zeros(1, *shape, device=device)
    modes = [(m, m.training) for m in model.modules()]
    try:
        analyzer = FlopAnalyzer(model.eval(), inputs)
        for op in _ZERO_FLOP_OPS + _UNCOUNTED_OPS:
            analyzer.set_op_handle(op, None)
        analyzer.unsupported_ops_warnings(True).uncalled_modules_warnings(
            False)
        return int(analyzer.total())
    finally:
        for m, training in modes:
            m.training = training
