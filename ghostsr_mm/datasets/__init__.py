from .prepare import (bicubic_downscale, check_config_data, check_sr_data_root,
                      check_sr_pairs, mod_crop, write_sr_pairs)

__all__ = [
    'bicubic_downscale', 'check_config_data', 'check_sr_data_root',
    'check_sr_pairs', 'mod_crop', 'write_sr_pairs'
]
