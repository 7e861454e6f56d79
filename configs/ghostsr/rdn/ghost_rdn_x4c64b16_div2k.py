# Ghost version, fine-tuned from the regular model through the
# clustering initialisation (GhostSR Algorithm 1).
_base_ = './rdn_x4c64b16_div2k.py'

model = dict(generator=dict(type='GhostRDNNet'))

# The trained regular model (train ./rdn_x4c64b16_div2k.py first).
pretrained = 'work_dirs/rdn_x4c64b16_div2k/iter_300000.pth'
custom_hooks = [
    dict(type='BasicVisualizationHook', interval=1),
    dict(type='GhostClusterInitHook', pretrained=pretrained),
    dict(type='GumbelAnnealHook'),
]
