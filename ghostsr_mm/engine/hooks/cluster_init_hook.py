"""GhostClusterInitHook: clustering initialisation before training."""
from typing import Optional

from mmengine.hooks import Hook
from mmagic.registry import HOOKS

from ghostsr_mm.checkpoint import load_generator_state
from ghostsr_mm.models.clustering import check_pretrained, cluster_init
from ghostsr_mm.models.utils import unwrap_generator
from ghostsr_mm.utils import InputError


@HOOKS.register_module()
class GhostClusterInitHook(Hook):
    """Initialise the ghost generator from a pre-trained regular one
    (GhostSR Eq. 7-9) before training starts.

    Does nothing when training resumes or starts from ``load_from`` (the
    weights the user gave win; mmengine loads them before this hook runs,
    and the hook logs that it kept them). Runs the
    same :func:`~ghostsr_mm.models.clustering.cluster_init` as
    ``tools/cluster_init.py``, so both give the same weights.

    Args:
        pretrained (str): Checkpoint of the regular model (bare state dict
            or MMagic checkpoint), loaded with ``weights_only=True``.
        seed (int): k-means seed. Default: 0.
    """

    priority = 'VERY_HIGH'

    def __init__(self, pretrained: str, seed: int = 0) -> None:
        self.pretrained = pretrained
        self.seed = seed
        self.report: Optional[object] = None

    def check_model(self, model) -> None:
        """Check, before a Runner is built (``tools/train.py`` calls it),
        that ``pretrained`` is readable and can initialise ``model``'s
        generator; raises an error naming the file otherwise."""
        state = load_generator_state(self.pretrained)
        try:
            check_pretrained(getattr(model, 'generator', model), state)
        except InputError as err:
            raise InputError(f'GhostClusterInitHook: {self.pretrained}: '
                             f'{err}') from None

    def before_train(self, runner) -> None:
        if runner._resume or runner.iter > 0:
            runner.logger.info('GhostClusterInitHook: resumed training, '
                               'keeping the resumed weights')
            return
        if runner._load_from:
            runner.logger.info(
                f'GhostClusterInitHook: keeping the weights of load_from '
                f'({runner._load_from}); not clustering {self.pretrained}')
            return
        state = load_generator_state(self.pretrained)
        generator = unwrap_generator(runner)
        self.report = cluster_init(generator, state, seed=self.seed)
        runner.logger.info(
            f'GhostClusterInitHook: initialised from {self.pretrained}\n' +
            '\n'.join(self.report.lines()))
