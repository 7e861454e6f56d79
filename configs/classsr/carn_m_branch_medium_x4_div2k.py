# ClassSR stage 2: the medium branch of ClassSR-CARN-M (CARN-M, width
# 52) trained from scratch on the sub-images labelled medium.
_base_ = './_base_/classsr_x4.py'

model = dict(generator=dict(_delete_=True, **_base_.carn_m_branches[1]))
train_dataloader = dict(dataset=dict(ann_file='meta_info_medium.txt'))
