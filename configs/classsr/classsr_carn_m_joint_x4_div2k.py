# ClassSR stage 4: classifier and branches trained together from stage 3's
# model, with the same losses (training both from scratch at once is
# unstable, the paper reports).
_base_ = './classsr_carn_m_classifier_x4_div2k.py'

load_from = 'work_dirs/classsr_carn_m_classifier_x4_div2k/iter_200000.pth'
model = dict(generator=dict(branches=_base_.carn_m_branches))
custom_hooks = [dict(type='BasicVisualizationHook', interval=1)]
find_unused_parameters = False
