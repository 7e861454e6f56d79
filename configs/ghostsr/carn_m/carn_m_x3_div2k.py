_base_ = '../_base_/sisr_paper_x3.py'

model = dict(
    generator=dict(
        _delete_=True,
        type='CARNNet',
        upscale_factor=3,
        multi_scale=True,
        efficient=True))
