from .classsr_loss import AverageLoss, ClassLoss

__all__ = ['AverageLoss', 'ClassLoss']
