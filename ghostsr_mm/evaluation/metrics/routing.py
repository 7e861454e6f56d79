"""ClassSRRouting: how a ClassSR model shared out the sub-images of a test
set, and what that cost."""
from typing import Dict, List, Optional, Sequence

from mmagic.evaluation.metrics.base_sample_wise_metric import \
    BaseSampleWiseMetric
from mmagic.registry import METRICS

from ghostsr_mm.models.editors.classsr.routing import routing_flops
from ghostsr_mm.models.editors.classsr.classsr import class_name


@METRICS.register_module()
class ClassSRRouting(BaseSampleWiseMetric):
    """Share of the sub-images per class and average cost of the set.

    Reads the ``class_counts`` and ``sub_image_flops`` that
    :class:`~ghostsr_mm.models.ClassSR` puts in each prediction, and reports
    ``share_<class>`` (sub-images of the set sent to that branch, 0-1) and
    ``flops_ratio`` (average multiply-accumulates per sub-image, classifier
    included, over the hard branch's). Logged with the other metrics every
    validation, so a classifier collapsing onto one branch shows at once.
    """

    metric = 'routing'
    default_prefix = ''

    def __init__(self, collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            output = sample.get('output', sample)
            if 'class_counts' not in output:
                raise KeyError('ClassSRRouting: the predictions carry no '
                               '`class_counts`; it needs a ClassSR model')
            self.results.append(
                dict(counts=output['class_counts'].tolist(),
                     flops=output['sub_image_flops'].tolist()))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        counts = [sum(c) for c in zip(*(r['counts'] for r in results))]
        cost = results[0]['flops']
        routing = routing_flops(
            counts, dict(classifier=cost[0], branches=cost[1:]))
        metrics = {
            f'share_{class_name(k, len(counts))}': share
            for k, share in enumerate(routing['shares'])
        }
        metrics['flops_ratio'] = routing['ratio']
        return metrics
