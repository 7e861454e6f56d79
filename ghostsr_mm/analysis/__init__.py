"""Analysis of models: complexity (:mod:`.complexity`: parameters, FLOPs),
timing (:mod:`.timing`) and the shift oracle (:mod:`.shift_oracle`, imported
by name: it needs the models)."""
from .complexity import count_flops, count_params
from .timing import (interleaved_median_times, interleaved_times, machine,
                     median_times, paired_ratio, results_path)

__all__ = [
    'count_flops', 'count_params', 'interleaved_median_times',
    'interleaved_times', 'machine', 'median_times', 'paired_ratio',
    'results_path'
]
