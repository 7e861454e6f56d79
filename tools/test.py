"""Test a checkpoint with an MMagic config (MMagic's tools/test.py
interface).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import ghostsr_mm  # noqa: E402,F401  (compat fixes before MMagic loads)
from mmengine.runner import Runner  # noqa: E402

from ghostsr_mm.datasets import check_config_data  # noqa: E402
from train import (add_runner_args, load_config,  # noqa: E402
                   parse_runner_args)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out', help='dump the metrics to this file (json/yaml/pkl)')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} not found')
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    check_config_data(cfg, ('test', ))
    if args.out:
        if osp.exists(args.out):
            raise FileExistsError(f'{args.out} exists; remove it or choose '
                                  'another --out')
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='DumpMetricsHook', out_file=args.out)
        ]
    runner = Runner.from_cfg(cfg)
    runner.test()


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, FileExistsError) as err:
        sys.exit(f'error: {err}')
