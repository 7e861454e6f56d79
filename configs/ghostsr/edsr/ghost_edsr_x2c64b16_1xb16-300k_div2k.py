# MMagic's own EDSR x2 c64b16 config with the ghost backbone swapped in:
# the plugin import, a generator override and the hook that decays the
# Gumbel noise of the learnable shift (GhostSR Eq. 3).
_base_ = 'mmagic::edsr/edsr_x2c64b16_1xb16-300k_div2k.py'

custom_imports = dict(imports=['ghostsr_mm'], allow_failed_imports=False)
model = dict(generator=dict(type='GhostEDSRNet'))
custom_hooks = [
    dict(type='BasicVisualizationHook', interval=1),
    dict(type='GumbelAnnealHook'),
]
