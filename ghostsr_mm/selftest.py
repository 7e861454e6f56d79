"""Check an installation: ``python -m ghostsr_mm.selftest``.

Runs the compiled ghost shift against its pure-PyTorch reference on every
device present (the CPU, and CUDA when a GPU is visible): forward, input
gradient and weight gradient, in float32, float16 and bfloat16, NCHW and
channels_last; then one training step of a tiny Ghost EDSR against the same
step made with the reference op. Prints one line per check and exits with
status 1 on any mismatch or error (0 when all pass).
"""
import argparse
import sys
from contextlib import nullcontext
from typing import Callable, List, Optional, Sequence, Tuple

import torch

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def _sample(device: str, dtype: torch.dtype, channels_last: bool):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 19, 23, generator=gen, dtype=torch.float64)
    grad = torch.randn(2, 13, 19, 23, generator=gen, dtype=torch.float64)
    src = torch.randint(0, 8, (13, ), generator=gen)
    offsets = torch.randint(-3, 4, (13, 2), generator=gen)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def to_device(t):
        return t.to(device, dtype).contiguous(memory_format=fmt)

    return (x, grad, src, offsets), (to_device(x), to_device(grad),
                                     src.to(device), offsets.to(device))


def _error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest difference, relative to the reference's largest value."""
    got = got.detach().cpu().double()
    if got.shape != expected.shape:
        raise ValueError(f'shape {tuple(got.shape)}, expected '
                         f'{tuple(expected.shape)}')
    scale = max(expected.abs().max().item(), 1.0) if expected.numel() else 1
    return (got - expected).abs().max().item() / scale if got.numel() else 0


def op_checks(device: str) -> List[Tuple[str, Callable[[], float], float]]:
    """(name, check returning its relative error, tolerance) for the op."""
    from ghostsr_mm.ops import (ghost_shift_backward_reference,
                                ghost_shift_reference,
                                ghost_shift_weight_grad_reference)
    ops = torch.ops.ghostsr
    checks = []
    for dtype, tol in TOL.items():
        for channels_last in (False, True):
            ref, dev = _sample(device, dtype, channels_last)
            x, grad, src, offsets = ref
            dx, dgrad, dsrc, doff = dev
            channels = torch.arange(13)
            layout = 'channels_last' if channels_last else 'NCHW'
            name = f'{device:<5} {str(dtype)[6:]:<9} {layout:<14} '
            # Bind through defaults: each lambda keeps its own case.
            checks += [
                (f'{name}forward', lambda dx=dx, dsrc=dsrc, doff=doff, x=x,
                 src=src, offsets=offsets: _error(
                     ops.ghost_shift(dx, dsrc, doff, None, 0.5, True),
                     ghost_shift_reference(x, src, offsets, None, 0.5,
                                           True)), tol),
                (f'{name}input grad', lambda dgrad=dgrad, dsrc=dsrc,
                 doff=doff, grad=grad, src=src, offsets=offsets: _error(
                     ops.ghost_shift_backward(dgrad, dsrc, doff, 8),
                     ghost_shift_backward_reference(grad, src, offsets, 8)),
                 tol),
                (f'{name}weight grad', lambda dgrad=dgrad, dx=dx, dsrc=dsrc,
                 grad=grad, x=x, src=src, channels=channels: _error(
                     ops.ghost_shift_weight_grad(dgrad, dx, dsrc,
                                                 channels.to(device), 1),
                     ghost_shift_weight_grad_reference(
                         grad, x, src, channels, 1)), tol * 10),
            ]
    return checks


def training_step_error(device: str) -> float:
    """One Adam step of a tiny Ghost EDSR with the compiled op, against the
    same step with the reference op: the largest relative difference of the
    updated weights."""
    from ghostsr_mm.models import GhostEDSRNet
    from ghostsr_mm.ops import reference_mode

    def step(reference: bool) -> List[torch.Tensor]:
        torch.manual_seed(0)
        model = GhostEDSRNet(3, 3, mid_channels=16, num_blocks=2,
                             upscale_factor=2).to(device)
        model.set_gumbel_state(epoch=2)  # Eq. 3's noise, decayed once
        optim = torch.optim.Adam(model.parameters(), lr=1e-3)
        lr = torch.rand(2, 3, 12, 12, device=device)
        gt = torch.rand(2, 3, 24, 24, device=device)
        with reference_mode() if reference else nullcontext():
            loss = (model(lr) - gt).abs().mean()
            loss.backward()
        optim.step()
        return [p.detach().cpu().double() for p in model.parameters()]

    return max(
        _error(a, b) for a, b in zip(step(reference=False),
                                     step(reference=True)))


def devices() -> List[str]:
    return ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def run(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m ghostsr_mm.selftest', description=__doc__.split(
            '\n\n')[0])
    parser.parse_args(argv)
    from ghostsr_mm.ops import HAS_EXT
    from ghostsr_mm.ops._ext import EXT_ERROR
    print(f'torch {torch.__version__}, CUDA '
          f'{torch.version.cuda or "none"}, devices: {", ".join(devices())}')
    if not HAS_EXT:
        print(f'FAIL  the compiled op is not built ({EXT_ERROR}); build it '
              'with `make setup` or `pip install --no-build-isolation -e .`')
        return 1
    checks = []
    for device in devices():
        checks += op_checks(device)
        checks.append((f'{device:<5} float32   NCHW           Ghost EDSR '
                       'training step', lambda d=device: training_step_error(
                           d), 1e-4))
    failed = 0
    for name, check, tol in checks:
        try:
            err = check()
            ok = err <= tol
            detail = f'error {err:.1e} (tolerance {tol:.0e})'
        except Exception as exc:  # report every check, then fail
            ok, detail = False, f'{type(exc).__name__}: {exc}'.splitlines()[0]
        failed += not ok
        print(f'{"ok  " if ok else "FAIL"}  {name:<50} {detail}')
    print(f'{len(checks) - failed} of {len(checks)} checks passed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(run())
