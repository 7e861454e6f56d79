"""GumbelAnnealHook: the epoch t of Eq. 3 and the temperature τ of Eq. 4."""
import math
from typing import Dict, Optional, Tuple

from mmengine.hooks import Hook
from mmagic.registry import HOOKS

from ghostsr_mm.models.layers import ghost_layers
from ghostsr_mm.models.utils import unwrap_generator


def gumbel_epoch(iteration: int, interval: int) -> int:
    """t of Eq. 3 at 0-based ``iteration`` with ``interval`` iterations per
    epoch (t counts from 1)."""
    return iteration // interval + 1


@HOOKS.register_module()
class GumbelAnnealHook(Hook):
    """Sets every ghost layer's epoch t (noise scale a^(t-1)) and τ.

    MMagic's SR configs train by iterations, so an epoch is the number of
    iterations that cover the training set once (``len`` of the train
    dataloader: the paper's epoch), ``interval`` iterations when given, or
    ``ceil(max_iters / epochs)`` iterations with ``epochs`` (so exactly
    ``epochs`` epochs, the last possibly shorter), which gives a
    training of any length the noise schedule of an ``epochs``-epoch one
    (the paper trains EDSR and RDN for 300 epochs, so the noise is at 5%
    after the first third). With an epoch-based loop the runner's epoch is
    used.

    Before training it logs the schedule and warns when the noise will still
    be above ``warn_noise`` at the end (a short fine-tune on a small set:
    the shifts are then learned under noise and their offsets barely
    settle). Logs the noise scale and each layer's shift offset whenever t
    changes, and the final offsets after training.

    Args:
        interval (int, optional): Iterations per epoch. Default: None (one
            pass over the training set).
        epochs (int, optional): Gumbel epochs over the whole training,
            instead of ``interval``. Default: None.
        tau (float, optional): τ to set. Default: None (keep each layer's).
        warn_noise (float): Warn when the final noise scale exceeds this.
            Default: 0.1.
    """

    priority = 'HIGH'

    def __init__(self,
                 interval: Optional[int] = None,
                 tau: Optional[float] = None,
                 epochs: Optional[int] = None,
                 warn_noise: float = 0.1) -> None:
        for arg, value in (('interval', interval), ('epochs', epochs)):
            if value is not None and (not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f'GumbelAnnealHook: `{arg}` must be an int '
                                 f'>= 1, got {value!r}')
        if interval is not None and epochs is not None:
            raise ValueError('GumbelAnnealHook: give `interval` or `epochs`, '
                             'not both')
        if tau is not None and tau <= 0:
            raise ValueError(f'GumbelAnnealHook: `tau` must be > 0, got '
                             f'{tau}')
        self.interval = interval
        self.epochs = epochs
        self.tau = tau
        self.warn_noise = warn_noise
        self.epoch: Optional[int] = None
        self._offsets: Dict[str, Tuple] = {}

    def before_train(self, runner) -> None:
        from mmengine.runner import EpochBasedTrainLoop
        by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)
        if by_epoch:
            total = runner.max_epochs
            unit = 'epochs (the runner\'s)'
        else:
            if self.epochs is not None:
                self.interval = max(1, math.ceil(runner.max_iters /
                                                 self.epochs))
            elif self.interval is None:
                self.interval = max(1, len(runner.train_dataloader))
            total = math.ceil(runner.max_iters / self.interval)
            unit = f'epochs of {self.interval} iterations'
        layers = [
            layer for _, layer in ghost_layers(unwrap_generator(runner))
            if layer.cheap_op == 'learnable'
        ]
        if not layers:
            runner.logger.warning('GumbelAnnealHook: the model has no '
                                  'learnable shift; nothing to anneal')
            return
        decay = layers[0].gumbel_decay
        final = decay**(total - 1)
        runner.logger.info(
            f'GumbelAnnealHook: {total} Gumbel {unit}; noise scale a^(t-1) '
            f'from 1 to {final:.3g} (a={decay})')
        if final > self.warn_noise:
            runner.logger.warning(
                f'GumbelAnnealHook: the Gumbel noise will still be at '
                f'{final:.3g} of its full strength when training ends '
                f'(a={decay}, {total} Gumbel epochs): the shifts will be '
                'learned under noise and may not settle. Set '
                '`epochs=300` (the paper\'s schedule over this training) or '
                'a smaller `interval`.')

    def current_epoch(self, runner) -> int:
        from mmengine.runner import EpochBasedTrainLoop
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            return runner.epoch + 1
        return gumbel_epoch(runner.iter, self.interval)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        epoch = self.current_epoch(runner)
        if epoch == self.epoch:
            return
        self.epoch = epoch
        generator = unwrap_generator(runner)
        layers = list(ghost_layers(generator))
        for _, layer in layers:
            layer.gumbel_epoch = epoch
            if self.tau is not None:
                layer.tau = self.tau
        if layers:
            scale = layers[0][1].noise_scale
            runner.message_hub.update_scalar('train/gumbel_noise_scale',
                                             scale)
            runner.logger.info(f'GumbelAnnealHook: epoch t={epoch}, noise '
                               f'scale a^(t-1)={scale:.4g}')
        self._log_offsets(runner, layers, changed_only=True)

    def after_train(self, runner) -> None:
        layers = list(ghost_layers(unwrap_generator(runner)))
        self._log_offsets(runner, layers, changed_only=False, final=True)

    def _log_offsets(self, runner, layers, changed_only: bool,
                     final: bool = False) -> None:
        lines = []
        for name, layer in layers:
            if layer.cheap_op != 'learnable':
                continue
            offsets = layer.current_offsets()[layer.ghost_channels]
            value = tuple(map(tuple, offsets.unique(dim=0).tolist()))
            if changed_only and self._offsets.get(name) == value:
                continue
            self._offsets[name] = value
            lines.append(f'  {name}: (dy, dx) {list(value)}')
        if lines:
            title = 'final shift offsets' if final else 'shift offsets'
            runner.logger.info(f'GumbelAnnealHook: {title}\n' +
                               '\n'.join(lines))
