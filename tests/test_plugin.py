"""The plugin registers into MMagic's registries through custom_imports."""
import subprocess
import sys
import textwrap

import pytest


@pytest.mark.slow
def test_custom_imports_registers_in_mmagic_registries(tmp_path):
    # A fresh interpreter, so that only the config's custom_imports can have
    # imported ghostsr_mm.
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("custom_imports = dict(imports=['ghostsr_mm'], "
                   'allow_failed_imports=False)\n')
    code = textwrap.dedent(f"""
        import sys
        from mmengine.config import Config
        assert 'ghostsr_mm' not in sys.modules
        Config.fromfile({str(cfg)!r})
        assert 'ghostsr_mm' in sys.modules
        from mmagic.registry import MODELS, HOOKS
        from mmagic.utils import register_all_modules
        register_all_modules()
        edsr = MODELS.build(dict(type='EDSRNet', in_channels=3,
                                 out_channels=3, mid_channels=8,
                                 num_blocks=1, upscale_factor=2))
        print(type(edsr).__module__, type(edsr).__name__)
        print(MODELS.get('GhostEDSRNet').__module__)
        print(HOOKS.get('GumbelAnnealHook').__module__)
    """)
    out = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[:2] == ['mmagic.models.editors.edsr.edsr_net', 'EDSRNet']
    assert lines[2].startswith('ghostsr_mm.models')
    assert lines[3].startswith('ghostsr_mm.engine.hooks')
