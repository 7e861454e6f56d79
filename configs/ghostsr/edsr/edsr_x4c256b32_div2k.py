_base_ = '../_base_/sisr_paper_x4.py'

model = dict(
    generator=dict(
        type='EDSRNet',
        mid_channels=256,
        num_blocks=32,
        res_scale=0.1,
        upscale_factor=4))
