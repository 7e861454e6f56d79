"""Model helpers: the generator inside a runner's model, and tiled
inference (which ClassSR's model and the apis both use)."""
from mmengine.model import is_model_wrapper

from .tiled import receptive_radius, tile_layout, tiled_inference

__all__ = [
    'receptive_radius', 'tile_layout', 'tiled_inference', 'unwrap_generator'
]


def unwrap_generator(runner):
    """The generator of the runner's (possibly DDP-wrapped) model."""
    model = runner.model.module if is_model_wrapper(
        runner.model) else runner.model
    return getattr(model, 'generator', model)
