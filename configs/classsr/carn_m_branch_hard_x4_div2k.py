# ClassSR stage 2: the hard branch of ClassSR-CARN-M (CARN-M, width
# 64) trained from scratch on the sub-images labelled hard.
_base_ = './_base_/classsr_x4.py'

model = dict(generator=dict(_delete_=True, **_base_.carn_m_branches[2]))
train_dataloader = dict(dataset=dict(ann_file='meta_info_hard.txt'))
