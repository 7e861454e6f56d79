from .classsr import (ALL_FILE, CLASS_FILES, crop_starts,
                      extract_sub_images, label_by_psnr, reference_psnrs,
                      sub_image_psnrs, write_class_files)
from .prepare import (bicubic_downscale, check_config_data, check_sr_data_root,
                      check_sr_pairs, mod_crop, write_sr_pairs)

__all__ = [
    'ALL_FILE', 'CLASS_FILES', 'crop_starts', 'extract_sub_images',
    'label_by_psnr', 'reference_psnrs', 'sub_image_psnrs',
    'write_class_files',
    'bicubic_downscale', 'check_config_data', 'check_sr_data_root',
    'check_sr_pairs', 'mod_crop', 'write_sr_pairs'
]
