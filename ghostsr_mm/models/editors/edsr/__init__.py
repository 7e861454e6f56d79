from .ghost_edsr_net import GhostEDSRNet

__all__ = ['GhostEDSRNet']
