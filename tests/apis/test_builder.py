"""Configs written for a shorter training keep the shape of their LR
schedule."""
import os.path as osp

from ghostsr_mm.apis import sr_data_config
from ghostsr_mm.apis.builder import fit_schedule

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_schedules_follow_the_training_length():
    cosine = sr_data_config(
        osp.join(ROOT, 'configs/ghostsr/_base_/sisr_paper_x2.py'), '/data',
        1000)
    assert cosine.param_scheduler.T_max == 1000
    # MMagic's EDSR halves the LR at 200k of 300k iterations.
    steps = sr_data_config(
        osp.join(ROOT, 'configs/ghostsr/edsr/'
                 'ghost_edsr_x2c64b16_1xb16-300k_div2k.py'), '/data', 3000)
    assert steps.param_scheduler.milestones == [2000]
    assert steps.train_cfg.max_iters == 3000


def test_fit_schedule_warmup_then_cosine():
    scheds = [
        dict(type='LinearLR', by_epoch=False, begin=0, end=1000),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=1000,
             end=100000, T_max=99000),
        dict(type='MultiStepLR', by_epoch=True, milestones=[30]),
    ]
    fit_schedule(scheds, 100000, 500)
    assert scheds == [
        dict(type='LinearLR', by_epoch=False, begin=0, end=5),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=5, end=500,
             T_max=495),
        dict(type='MultiStepLR', by_epoch=True, milestones=[30]),
    ]
