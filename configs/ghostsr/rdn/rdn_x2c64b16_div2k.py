_base_ = '../_base_/sisr_paper_x2.py'

model = dict(
    generator=dict(
        _delete_=True,
        type='RDNNet',
        in_channels=3,
        out_channels=3,
        mid_channels=64,
        num_blocks=16,
        upscale_factor=2))
