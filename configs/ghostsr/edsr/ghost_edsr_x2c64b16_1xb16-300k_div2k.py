# MMagic's own EDSR x2 c64b16 config with the ghost backbone swapped in:
# the plugin import and a generator override are all it takes.
_base_ = 'mmagic::edsr/edsr_x2c64b16_1xb16-300k_div2k.py'

custom_imports = dict(imports=['ghostsr_mm'], allow_failed_imports=False)
model = dict(generator=dict(type='GhostEDSRNet'))
