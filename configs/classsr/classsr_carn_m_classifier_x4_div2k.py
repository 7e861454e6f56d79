# ClassSR stage 3: the Class-Module learns to route sub-images, with the
# three branches trained in stage 2 loaded and frozen (FreezeModulesHook);
# batch 96, 200K iterations; L1 : Class-Loss : Average-Loss = 2000 : 1 : 6.
_base_ = './_base_/classsr_x4.py'

branch_checkpoint = 'work_dirs/carn_m_branch_{}_x4_div2k/iter_500000.pth'
model = dict(
    type='ClassSR',
    generator=dict(
        _delete_=True,
        type='ClassSRNet',
        branches=[
            dict(b,
                 init_cfg=dict(
                     type='Pretrained',
                     checkpoint=branch_checkpoint.format(name),
                     prefix='generator.'))
            for name, b in zip(_base_.branch_names, _base_.carn_m_branches)
        ]),
    pixel_loss=dict(type='L1Loss', loss_weight=2000.0, reduction='mean'),
    class_loss=dict(type='ClassLoss', loss_weight=1.0),
    # Divided by 4B/M as in the official code: in the paper's printed form
    # (normalize=False) the classifier stays at uniform probabilities.
    average_loss=dict(type='AverageLoss', loss_weight=6.0, normalize=True),
    test_cfg=dict(tile=32, overlap=2, batch_size=64))  # stride 28

custom_hooks = [
    dict(type='FreezeModulesHook', modules='generator.branches'),
    dict(type='BasicVisualizationHook', interval=1)
]
# DDP: the frozen branches' parameters get no gradient.
find_unused_parameters = True
max_iters = 200000
train_dataloader = dict(batch_size=96)
train_cfg = dict(max_iters=max_iters)
param_scheduler = dict(T_max=max_iters)
val_evaluator = _base_.classsr_val_evaluator
test_evaluator = _base_.classsr_test_evaluator
