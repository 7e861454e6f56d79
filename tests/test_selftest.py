"""python -m ghostsr_mm.selftest, in-process."""
import pytest

from ghostsr_mm import selftest
from ghostsr_mm.ops import HAS_EXT


@pytest.mark.skipif(not HAS_EXT, reason='checks the compiled op')
def test_selftest_passes_on_this_machine(capsys):
    assert selftest.run([]) == 0
    out = capsys.readouterr().out
    # 3 dtypes x 2 layouts x 3 ops + the training step, per device
    n = 19 * len(selftest.devices())
    assert f'{n} of {n} checks passed' in out
    assert 'cpu   bfloat16  channels_last  weight grad' in out
    assert 'FAIL' not in out


@pytest.mark.skipif(not HAS_EXT, reason='checks the compiled op')
def test_selftest_fails_on_a_mismatch(capsys, monkeypatch):
    """A tolerance no kernel meets (float32 rounding differs from float64):
    every float32 op check fails and the exit status says so."""
    monkeypatch.setitem(selftest.TOL, selftest.torch.float32, 0.0)
    assert selftest.run([]) == 1
    out = capsys.readouterr().out
    assert out.count('FAIL') == 6 * len(selftest.devices())
    assert 'FAIL  cpu   float32   NCHW           forward' in out


def test_selftest_fails_without_the_extension(capsys, monkeypatch):
    monkeypatch.setattr('ghostsr_mm.ops.HAS_EXT', False)
    assert selftest.run([]) == 1
    assert 'the compiled op is not built' in capsys.readouterr().out
