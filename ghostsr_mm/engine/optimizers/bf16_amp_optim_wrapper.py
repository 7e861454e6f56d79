"""Mixed precision training in bfloat16, on the CPU or a GPU.

mmengine's ``AmpOptimWrapper`` needs a GPU (it scales the loss for float16
with ``torch.cuda.amp.GradScaler``). bfloat16 has float32's exponent range,
so its gradients need no loss scaling: this wrapper only runs the forward
pass under ``torch.autocast`` on the model's device. ``tools/train.py --amp``
picks it when no GPU is visible.
"""
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmagic.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BF16AmpOptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose forward passes run under bfloat16
    autocast (convolutions in bfloat16, reductions and the loss in float32)
    on the device of the model's parameters; backward and step as
    ``OptimWrapper`` (parameters and their gradients stay float32).

    Args:
        **kwargs: As :class:`mmengine.optim.OptimWrapper`.
    """

    @contextmanager
    def optim_context(self, model: nn.Module):
        param = next(model.parameters(), None)
        device = param.device.type if param is not None else 'cpu'
        with super().optim_context(model), torch.autocast(
                device_type=device, dtype=torch.bfloat16):
            yield
