from .carn_net import CARNNet, GhostCARNNet, narrowed_state_dict

__all__ = ['CARNNet', 'GhostCARNNet', 'narrowed_state_dict']
