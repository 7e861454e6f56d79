_base_ = '../_base_/sisr_paper_x4.py'

# The multi-scale model trains x2, x3 and x4 together (one scale per
# iteration, LR made from the GT patch); this config tests its x4 output.
model = dict(
    type='MultiScaleEditModel',
    scales=(2, 3, 4),
    generator=dict(
        _delete_=True,
        type='CARNNet',
        upscale_factor=4,
        multi_scale=True,
        efficient=True))
find_unused_parameters = True  # DDP: one upsampler per iteration
