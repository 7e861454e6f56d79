"""Model complexity (Table 1's columns: parameters, FLOPs, latency), shared
by tools/analysis/complexity.py, the demo and the benchmarks."""
import os
import os.path as osp
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

__all__ = [
    'count_params', 'count_flops', 'interleaved_times',
    'interleaved_median_times', 'median_times', 'paired_ratio',
    'results_path'
]

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


def interleaved_times(fns: Dict[str, Callable[[], object]],
                      repeats: int = 10,
                      warmup: int = 2,
                      sync: Callable[[], None] = lambda: None,
                      min_seconds: float = 0.0) -> Dict[str, List[float]]:
    """Seconds of every timed call of each function, timed in rounds
    A B C, C B A, A B C, ... so that drifts of the machine, and the order
    within a round, hit every candidate alike.

    Args:
        fns (dict): name -> zero-argument callable.
        repeats (int): Timed rounds, at least. Default: 10.
        warmup (int): Untimed rounds first. Default: 2.
        sync (callable): Called before reading the clock (e.g.
            ``torch.cuda.synchronize``).
        min_seconds (float): If > 0, go on with more rounds (an even number
            in all) until the timed calls add up to this, so that fast
            models get as many rounds as the machine's noise needs.
            Default: 0.

    Returns:
        dict: name -> the times, round by round.
    """
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times = {name: [] for name in fns}
    rounds = total = 0
    while rounds < repeats or (min_seconds > 0 and
                               (total < min_seconds or rounds % 2)):
        order = names if rounds % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            fns[name]()
            sync()
            elapsed = time.perf_counter() - start
            times[name].append(elapsed)
            total += elapsed
        rounds += 1
    return times


def interleaved_median_times(fns: Dict[str, Callable[[], object]],
                             repeats: int = 10,
                             warmup: int = 2,
                             sync: Callable[[], None] = lambda: None
                             ) -> Dict[str, float]:
    """Median seconds per call of each function, from
    :func:`interleaved_times` (same arguments)."""
    return median_times(interleaved_times(fns, repeats, warmup, sync))


def median_times(times: Dict[str, List[float]]) -> Dict[str, float]:
    """name -> median of the times of :func:`interleaved_times`."""
    return {name: statistics.median(t) for name, t in times.items()}


def paired_ratio(times: Dict[str, List[float]], num: str,
                 den: str) -> Tuple[float, float, float]:
    """The time ratio ``num / den`` from :func:`interleaved_times`, round by
    round: each ratio compares two calls made seconds apart, so a machine
    that speeds up or slows down between rounds moves it less than it
    moves the ratio of the two medians.

    Returns:
        tuple: (median, lower quartile, upper quartile) of the per-round
        ratios.
    """
    ratios = [a / b for a, b in zip(times[num], times[den])]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    low, mid, high = statistics.quantiles(ratios, n=4, method='inclusive')
    return mid, low, high


def results_path(out_dir: str, name: str, overwrite: bool = False) -> str:
    """The path a benchmark writes its JSON to, ``out_dir/name``, checked
    before anything is timed: an existing file is kept unless
    ``overwrite``.

    Raises:
        FileExistsError: naming the file and the ``--overwrite`` flag.
    """
    path = osp.join(out_dir, name)
    if osp.exists(path) and not overwrite:
        raise FileExistsError(
            f'{path} exists; pass --overwrite to replace it, or --out-dir '
            'to write elsewhere')
    os.makedirs(out_dir, exist_ok=True)
    return path
