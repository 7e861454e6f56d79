from .ghost_rdn_net import GhostRDNNet

__all__ = ['GhostRDNNet']
