_base_ = '../_base_/sisr_paper_x4.py'

model = dict(
    generator=dict(
        _delete_=True,
        type='CARNNet',
        upscale_factor=4,
        multi_scale=True,
        efficient=True))
