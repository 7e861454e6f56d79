# GhostSR training and test settings (Nie et al., Sec. 4.1) at x2, on
# MMagic's own EDSR x2 config: DIV2K sub-images, 48x48 LR patches, batch 16,
# flips + 90-degree rotations (horizontal/vertical flips and a transpose
# generate all of them), Adam (0.9, 0.999, 1e-8), lr 1e-4 with cosine decay,
# L1; tests on Set5, Set14, B100, Urban100 and DIV2K100 with Y-channel
# PSNR/SSIM, crop_border = scale.
_base_ = 'mmagic::edsr/edsr_x2c64b16_1xb16-300k_div2k.py'

custom_imports = dict(imports=['ghostsr_mm'], allow_failed_imports=False)

scale = 2
lr_patch = 48
data_root = 'data'
work_dir = None  # tools/train.py: ./work_dirs/<config name>
experiment_name = None  # logs named after the config, not MMagic's base

train_pipeline = _base_.train_pipeline
train_pipeline[2] = dict(type='SetValues', dictionary=dict(scale=scale))
train_pipeline[3] = dict(type='PairedRandomCrop', gt_patch_size=lr_patch * scale)
test_pipeline = _base_.val_pipeline

train_dataloader = dict(
    num_workers=4,
    batch_size=16,
    dataset=dict(
        data_root=data_root + '/DIV2K',
        data_prefix=dict(
            img=f'DIV2K_train_LR_bicubic/X{scale}_sub',
            gt='DIV2K_train_HR_sub'),
        pipeline=train_pipeline))


def _test_set(name, root, img, gt='GTmod12', ann_file=''):
    return dict(
        num_workers=4,
        persistent_workers=False,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='BasicImageDataset',
            ann_file=ann_file,
            metainfo=dict(dataset_type=name.lower(), task_name='sisr'),
            data_root=f'{data_root}/{root}',
            data_prefix=dict(img=img, gt=gt),
            pipeline=test_pipeline))


def _metrics(prefix):
    return dict(
        type='Evaluator',
        metrics=[
            dict(type='PSNR', crop_border=scale, convert_to='Y',
                 prefix=prefix),
            dict(type='SSIM', crop_border=scale, convert_to='Y',
                 prefix=prefix),
        ])


test_sets = [
    ('Set5', 'Set5', f'LRbicx{scale}'),
    ('Set14', 'Set14', f'LRbicx{scale}'),
    ('B100', 'B100', f'LRbicx{scale}'),
    ('Urban100', 'Urban100', f'LRbicx{scale}'),
]
test_dataloader = [_test_set(*s) for s in test_sets] + [
    _test_set('DIV2K', 'DIV2K', f'DIV2K_valid_LR_bicubic/X{scale}',
              'DIV2K_valid_HR')
]
test_evaluator = [_metrics(s[0]) for s in test_sets] + [_metrics('DIV2K')]
test_cfg = dict(type='MultiTestLoop')
val_dataloader = dict(_delete_=True, **test_dataloader[0])
val_evaluator = dict(_delete_=True, **_metrics('Set5'))

max_iters = 300000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=5000)
optim_wrapper = dict(
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999), eps=1e-8))
param_scheduler = dict(
    _delete_=True,
    type='CosineAnnealingLR',
    by_epoch=False,
    T_max=max_iters,
    eta_min=1e-7)
default_hooks = dict(
    checkpoint=dict(
        out_dir=None, max_keep_ckpts=3, save_best='Set5/PSNR', rule='greater'))
