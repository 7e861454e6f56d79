"""Each fix in ghostsr_mm.compat, shown to remove the error it prevents."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ghostsr_mm import compat
from helpers import free_port


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          capture_output=True,
                          text=True)


@pytest.mark.slow
@pytest.mark.skipif(compat.mmcv_has_compiled_ops(),
                    reason='a full mmcv with compiled ops is installed')
def test_mmagic_models_import_fails_without_placeholder():
    out = run_python('import mmagic.models')
    assert out.returncode != 0
    assert "No module named 'mmcv._ext'" in out.stderr


@pytest.mark.slow
@pytest.mark.skipif(compat.mmcv_has_compiled_ops(),
                    reason='a full mmcv with compiled ops is installed')
def test_placeholder_lets_mmagic_import_and_kernels_raise_clearly():
    out = run_python("""
        import ghostsr_mm, mmagic.models
        from mmcv.ops import ModulatedDeformConv2dPack
        import torch
        conv = ModulatedDeformConv2dPack(4, 4, 3, padding=1)
        try:
            conv(torch.zeros(1, 4, 5, 5))
        except RuntimeError as err:
            print(type(err).__name__, err)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('MMCVOpsUnavailableError')
    assert 'modulated_deform_conv_forward' in out.stdout
    assert 'mmcv-lite' in out.stdout


def test_placeholder_is_not_installed_over_real_ops(monkeypatch):
    monkeypatch.setattr(compat, 'mmcv_has_compiled_ops', lambda: True)
    monkeypatch.delitem(sys.modules, 'mmcv._ext', raising=False)
    assert compat.install_mmcv_ext_placeholder() is False
    assert 'mmcv._ext' not in sys.modules


def _mmengine_like_checkpoint(path):
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(np.float64(0.5))
    torch.save(
        dict(
            meta=dict(iter=np.int64(3), arr=np.arange(3), buf=buf),
            state_dict=dict(w=torch.ones(2))), path)


@pytest.mark.slow
def test_mmengine_checkpoint_needs_the_allowlist(tmp_path):
    path = tmp_path / 'ckpt.pth'
    _mmengine_like_checkpoint(path)
    # Without the allowlist (a fresh interpreter, no ghostsr_mm import).
    out = run_python(f"""
        import torch, mmengine.logging
        torch.load({str(path)!r}, weights_only=True)
    """)
    assert out.returncode != 0
    assert 'Weights only load failed' in out.stderr
    assert 'Unsupported global' in out.stderr


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    """Inside training_state_globals, and through mmengine's own loader:
    the allowlist is widened there and nowhere else."""
    from mmengine.runner.checkpoint import _load_checkpoint
    path = tmp_path / 'ckpt.pth'
    _mmengine_like_checkpoint(path)
    with compat.training_state_globals():
        ckpt = torch.load(path, weights_only=True)
    assert ckpt['meta']['iter'] == 3
    np.testing.assert_array_equal(ckpt['meta']['arr'], [0, 1, 2])
    assert ckpt['meta']['buf'].mean() == 0.5
    assert compat.mmengine_loads_under_weights_only() is True  # applied
    assert _load_checkpoint(str(path))['meta']['iter'] == 3
    # Outside: torch's allowlist is unchanged.
    with pytest.raises(Exception, match='Unsupported global'):
        torch.load(path, weights_only=True)
    # Arbitrary code is still refused, inside too.
    torch.save(dict(f=subprocess.Popen), tmp_path / 'evil.pth')
    with compat.training_state_globals(), pytest.raises(
            Exception, match='Weights only load failed'):
        torch.load(tmp_path / 'evil.pth', weights_only=True)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible')
@pytest.mark.parametrize('with_fix', [False, True])
def test_pytorch_launcher_on_a_machine_without_gpu(with_fix):
    out = run_python(f"""
        import os
        os.environ.update(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
                          MASTER_ADDR='127.0.0.1',
                          MASTER_PORT='{free_port()}')
        if {with_fix}:
            import ghostsr_mm
        from mmengine.dist import init_dist, get_world_size
        init_dist('pytorch', backend='gloo')
        print('world size', get_world_size())
    """)
    if with_fix:
        assert out.returncode == 0, out.stderr
        assert 'world size 1' in out.stdout
    else:
        assert out.returncode != 0
        assert 'NVIDIA driver' in out.stderr


@pytest.mark.parametrize('code, message', [
    # Defining a diffusers output class (as MMagic's imports do) warns.
    ('from diffusers.models import AutoencoderKL',
     '_register_pytree_node` is deprecated'),
    ('import pkg_resources', 'pkg_resources is deprecated as an API'),
])
@pytest.mark.slow
def test_importing_the_plugin_silences_dependency_warnings(code, message):
    loud = subprocess.run([sys.executable, '-c', code],
                          capture_output=True, text=True, check=True)
    assert message in loud.stderr  # the warning exists without the filter
    quiet = subprocess.run(
        [sys.executable, '-c', f'import ghostsr_mm; {code}'],
        capture_output=True, text=True, check=True)
    assert message not in quiet.stderr


def test_corrupt_image_is_named_by_the_loader(tmp_path):
    """Mid-training, a file MMagic's loader cannot decode is named (not an
    OpenCV assertion about an empty image)."""
    from mmagic.datasets.transforms import LoadImageFromFile
    bad = tmp_path / 'broken.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 20)
    loader = LoadImageFromFile(key='gt')
    with pytest.raises(ValueError, match=r'broken.png: cannot be decoded'):
        loader(dict(gt_path=str(bad)))
