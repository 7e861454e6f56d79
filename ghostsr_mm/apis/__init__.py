"""What the tools, the demo, the benchmarks and users' scripts call:
building and loading generators from configs, small data configs, and
tiled inference on images of any size."""
from ghostsr_mm.models.utils import (receptive_radius, tile_layout,
                                     tiled_inference)
from .builder import (build_generator, load_generator, load_sr_model,
                      sr_data_config, write_data_config)
from .classsr import (branch_flops, calibrate_cost_penalty,
                      routed_inference, routing_flops, routing_map,
                      routing_picture, write_routing_picture)
from .images import SRImage, list_images, read_image, write_image

__all__ = [
    'SRImage', 'branch_flops', 'build_generator', 'calibrate_cost_penalty',
    'list_images', 'load_generator', 'load_sr_model', 'read_image',
    'receptive_radius', 'routed_inference', 'routing_flops', 'routing_map',
    'routing_picture', 'sr_data_config', 'tile_layout', 'tiled_inference',
    'write_data_config', 'write_image', 'write_routing_picture'
]
