"""GumbelAnnealHook: the epoch t of Eq. 3 and the temperature τ of Eq. 4."""
from typing import Dict, Optional, Tuple

from mmengine.hooks import Hook
from mmagic.registry import HOOKS

from ghostsr_mm.models.layers import ghost_layers
from .cluster_init_hook import unwrap_generator


@HOOKS.register_module()
class GumbelAnnealHook(Hook):
    """Sets every ghost layer's epoch t (noise scale a^(t-1)) and τ.

    MMagic's SR configs train by iterations, so an epoch is the number of
    iterations that cover the training set once (``len`` of the train
    dataloader), or ``interval`` iterations when given. With an epoch-based
    loop the runner's epoch is used.

    Logs the noise scale and each layer's shift offset whenever t changes,
    and the final offsets after training.

    Args:
        interval (int, optional): Iterations per epoch. Default: None (one
            pass over the training set).
        tau (float, optional): τ to set. Default: None (keep each layer's).
    """

    priority = 'HIGH'

    def __init__(self,
                 interval: Optional[int] = None,
                 tau: Optional[float] = None) -> None:
        if interval is not None and interval < 1:
            raise ValueError(f'GumbelAnnealHook: `interval` must be >= 1, '
                             f'got {interval}')
        if tau is not None and tau <= 0:
            raise ValueError(f'GumbelAnnealHook: `tau` must be > 0, got '
                             f'{tau}')
        self.interval = interval
        self.tau = tau
        self.epoch: Optional[int] = None
        self._offsets: Dict[str, Tuple] = {}

    def before_train(self, runner) -> None:
        if self.interval is None:
            self.interval = max(1, len(runner.train_dataloader))
        runner.logger.info(
            f'GumbelAnnealHook: one Gumbel epoch = {self.interval} '
            'iterations')

    def current_epoch(self, runner) -> int:
        from mmengine.runner import EpochBasedTrainLoop
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            return runner.epoch + 1
        return runner.iter // self.interval + 1

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
