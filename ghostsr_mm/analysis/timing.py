"""Timing for the benchmarks: medians of interleaved repeats and paired
ratios (each round times every model once, so slow phases of the machine hit
all of them alike), and where results are written."""
import os
import os.path as osp
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch

__all__ = [
    'interleaved_times', 'interleaved_median_times', 'machine',
    'median_times', 'paired_ratio', 'results_path'
]


def machine(device: str = 'cpu') -> Dict[str, object]:
    """What a timing depends on: the CPU model and its vector extensions
    (AVX2, AVX-512, AMX: oneDNN's convolutions differ by several times
    between them), the threads, torch, and the GPU when ``device`` is
    cuda."""
    import platform
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name':
                    cpu = value.strip()
                elif key.strip() == 'flags':
                    flags = set(value.split())
                    break
    except OSError:
        pass
    info = dict(cpu=cpu, vector=[
        name for name, flag in (('AVX2', 'avx2'), ('AVX-512', 'avx512f'),
                                ('AMX', 'amx_tile')) if flag in flags
    ], threads=torch.get_num_threads(), torch=torch.__version__)
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


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
