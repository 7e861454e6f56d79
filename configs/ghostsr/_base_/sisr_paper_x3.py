# The x2 settings of sisr_paper_x2.py rescaled to x3.
_base_ = './sisr_paper_x2.py'

scale = 3
train_pipeline = _base_.train_pipeline
train_pipeline[2] = dict(type='SetValues', dictionary=dict(scale=scale))
train_pipeline[3] = dict(
    type='PairedRandomCrop', gt_patch_size=_base_.lr_patch * scale)
train_dataloader = dict(
    dataset=dict(
        data_prefix=dict(img=f'DIV2K_train_LR_bicubic/X{scale}_sub'),
        pipeline=train_pipeline))

test_dataloader = _base_.test_dataloader
test_evaluator = _base_.test_evaluator
for _loader, _evaluator in zip(test_dataloader, test_evaluator):
    _prefix = _loader['dataset']['data_prefix']
    _prefix['img'] = _prefix['img'].replace('x2', f'x{scale}').replace(
        'X2', f'X{scale}')
    for _metric in _evaluator['metrics']:
        _metric['crop_border'] = scale
del _loader, _evaluator, _prefix, _metric
val_dataloader = dict(_delete_=True, **test_dataloader[0])
val_evaluator = dict(_delete_=True, **test_evaluator[0])
