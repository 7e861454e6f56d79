"""DumpMetricsHook: write the test metrics to a file."""
import os
import os.path as osp

from mmengine.fileio import dump
from mmengine.hooks import Hook
from mmagic.registry import HOOKS


@HOOKS.register_module()
class DumpMetricsHook(Hook):
    """Dump the metrics of the test epoch (all test sets of MMagic's
    ``MultiTestLoop``) to ``out_file`` (.json, .yaml or .pkl).

    Args:
        out_file (str): Output file; it must not exist yet.
    """

    def __init__(self, out_file: str) -> None:
        if osp.exists(out_file):
            raise FileExistsError(f'DumpMetricsHook: {out_file} exists; '
                                  'remove it or choose another file')
        self.out_file = out_file

    def after_test_epoch(self, runner, metrics=None) -> None:
        if runner.rank != 0:
            return
        os.makedirs(osp.dirname(osp.abspath(self.out_file)), exist_ok=True)
        dump({k: float(v) for k, v in (metrics or {}).items()}, self.out_file)
        runner.logger.info(f'metrics written to {self.out_file}')
