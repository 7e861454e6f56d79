from .carn_net import CARNNet, GhostCARNNet

__all__ = ['CARNNet', 'GhostCARNNet']
