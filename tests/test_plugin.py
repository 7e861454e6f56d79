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


def test_short_fine_tune_recipe_from_the_readme():
    """The README's short fine-tune recipe, through mmengine's optimiser
    builder: every W' at 100x the LR, every other parameter at the LR, and
    each learnable layer starts with W' = 1 at the zero offset."""
    from mmengine.optim import build_optim_wrapper
    from mmagic.registry import MODELS
    from mmagic.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(dict(
        type='BaseEditModel',
        generator=dict(type='GhostEDSRNet', in_channels=3, out_channels=3,
                       mid_channels=8, num_blocks=2, upscale_factor=2,
                       zero_shift_bias=1.0),
        pixel_loss=dict(type='L1Loss')))
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper',
        optimizer=dict(type='Adam', lr=1e-4),
        paramwise_cfg=dict(custom_keys={'shift_logits': dict(lr_mult=100.)})))
    lr_of = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            lr_of[id(p)] = group['lr']
    logits = 0
    for name, p in model.named_parameters():
        expected = 1e-2 if name.endswith('shift_logits') else 1e-4
        assert lr_of[id(p)] == pytest.approx(expected), name
        if name.endswith('shift_logits'):
            logits += 1
            assert p[0, 1, 1] == 1.0 and p.abs().sum() == 1.0
    assert logits == 5  # 2 blocks x 2 convs + conv_after_body
