"""FreezeModulesHook: train part of a model, keep the rest fixed, from the
config (ClassSR's stage 3 trains the classifier with the branches frozen)."""
from typing import Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmagic.registry import HOOKS


@HOOKS.register_module()
class FreezeModulesHook(Hook):
    """Stop gradients to the named submodules before training starts.

    Their parameters get ``requires_grad=False``, so no gradient is computed
    for them and the optimiser leaves them as loaded. Under DDP set
    ``find_unused_parameters = True`` in the config (the model is wrapped
    before this hook runs).

    Args:
        modules (str | Sequence[str]): Dotted names in the model, e.g.
            ``'generator.branches'`` or ``['generator.branches.0']``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, modules: Union[str, Sequence[str]]) -> None:
        self.modules = [modules] if isinstance(modules, str) else list(modules)
        if not self.modules or not all(
                isinstance(m, str) and m for m in self.modules):
            raise ValueError('FreezeModulesHook: `modules` must be one or '
                             f'more module names, got {modules!r}')

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        names = dict(model.named_modules())
        missing = [m for m in self.modules if m not in names]
        if missing:
            children = sorted({n.split('.')[0] for n in names if n})
            raise ValueError(
                f'FreezeModulesHook: {type(model).__name__} has no module '
                f'{missing[0]!r}; its top-level modules are {children}')
        frozen = 0
        for name in self.modules:
            for param in names[name].parameters():
                if param.requires_grad:
                    param.requires_grad_(False)
                    frozen += param.numel()
        trainable = sum(p.numel() for p in model.parameters()
                        if p.requires_grad)
        runner.logger.info(
            f'FreezeModulesHook: froze {", ".join(self.modules)} '
            f'({frozen} parameters); {trainable} parameters train')
        if trainable == 0:
            raise ValueError('FreezeModulesHook: every parameter of the '
                             'model is frozen; nothing would train')
