# GhostSR EDSR x2 (c256b32, the paper's): see configs/ghostsr/README.md.
_base_ = './ghostsr/edsr/ghost_edsr_x2c256b32_div2k.py'
