_base_ = '../_base_/sisr_paper_x2.py'

model = dict(
    generator=dict(
        _delete_=True,
        type='CARNNet',
        upscale_factor=2,
        multi_scale=True,
        efficient=True))
