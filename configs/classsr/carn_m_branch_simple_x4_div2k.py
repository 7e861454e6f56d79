# ClassSR stage 2: the simple branch of ClassSR-CARN-M (CARN-M, width
# 36) trained from scratch on the sub-images labelled simple.
_base_ = './_base_/classsr_x4.py'

model = dict(generator=dict(_delete_=True, **_base_.carn_m_branches[0]))
train_dataloader = dict(dataset=dict(ann_file='meta_info_simple.txt'))
