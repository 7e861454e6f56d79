# ClassSR (Kong et al., CVPR 2021) at x4, as the paper trains it: DIV2K
# training sub-images (GT 128 / LR 32), labelled simple / medium / hard by
# tools/classsr_prepare.py into data/DIV2K_classsr_x4; Adam (0.9, 0.99),
# cosine decay to 1e-7, flips and transposes; tested on Test2K / Test4K /
# Test8K (DIV8K 1201-1500, downsampled to 2K / 4K / full size) with RGB
# PSNR and SSIM, 4-pixel border crop.
_base_ = '../../ghostsr/_base_/sisr_paper_x4.py'

scale = 4
lr_patch = 32
data_root = 'data/DIV2K_classsr_x4'

train_pipeline = _base_.train_pipeline
train_pipeline[3] = dict(type='PairedRandomCrop',
                         gt_patch_size=lr_patch * scale)  # whole sub-image
train_dataloader = dict(
    batch_size=16,
    dataset=dict(
        data_root=data_root,
        ann_file='meta_info_all.txt',
        data_prefix=dict(img=f'LR_bicubic/X{scale}', gt='HR'),
        pipeline=train_pipeline))

max_iters = 500000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=5000)
optim_wrapper = dict(
    optimizer=dict(type='Adam', lr=2e-4, betas=(0.9, 0.99), eps=1e-8))
param_scheduler = dict(
    _delete_=True,
    type='CosineAnnealingLR',
    by_epoch=False,
    T_max=max_iters,
    eta_min=1e-7)


def _test_set(name):
    return dict(
        num_workers=4,
        persistent_workers=False,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='BasicImageDataset',
            metainfo=dict(dataset_type=name.lower(), task_name='sisr'),
            data_root=f'data/DIV8K/{name}',
            data_prefix=dict(img=f'LR_bicubic/X{scale}', gt='HR'),
            pipeline=_base_.test_pipeline))


def _metrics(prefix, routing=False):
    metrics = [
        dict(type='PSNR', crop_border=scale, prefix=prefix),
        dict(type='SSIM', crop_border=scale, prefix=prefix),
    ]
    if routing:  # share of sub-images per branch, average FLOPs
        metrics.append(dict(type='ClassSRRouting', prefix=prefix))
    return dict(type='Evaluator', metrics=metrics)


test_sets = ('Test2K', 'Test4K', 'Test8K')
test_dataloader = [_test_set(s) for s in test_sets]
test_evaluator = [_metrics(s) for s in test_sets]
classsr_test_evaluator = [_metrics(s, routing=True) for s in test_sets]
classsr_val_evaluator = dict(
    type='Evaluator',
    metrics=_base_.val_evaluator['metrics'] +
    [dict(type='ClassSRRouting', prefix='Set5')])

# The SR-Module of ClassSR-CARN-M: CARN-M branches of width 36 / 52 / 64
# (simple / medium / hard), 0.38G / 0.77G / 1.15G FLOPs per 32x32
# sub-image (2x multiply-accumulates).
branch_names = ('simple', 'medium', 'hard')
carn_m_branches = [
    dict(type='CARNNet', mid_channels=w, upscale_factor=scale,
         efficient=True) for w in (36, 52, 64)
]
