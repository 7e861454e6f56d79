"""Test a checkpoint with an MMagic config (MMagic's tools/test.py
interface).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
        [--debug]

The checkpoint must hold exactly the generator the config builds (a
checkpoint of another architecture, or the other graph of a ghost model, is
refused with the tensors that differ) before anything is tested or written.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import ghostsr_mm  # noqa: E402,F401  (compat fixes before MMagic loads)
from mmengine.runner import Runner  # noqa: E402

from ghostsr_mm.cli import (add_runner_args, check_config,  # noqa: E402
                            check_weights, exit_tool, load_config,
                            parse_runner_args, run_tool)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out', help='dump the metrics to this file (json/yaml/pkl)')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args)
    if args.out and osp.exists(args.out):
        raise FileExistsError(f'{args.out} exists; remove it or choose '
                              'another --out')
    model = check_config(cfg, ('test', ))  # no hook: testing clusters nothing
    # Wrong weights would give wrong numbers: refuse them first.
    check_weights(model, args.checkpoint, 'checkpoint')
    cfg.load_from = args.checkpoint
    if args.out:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='DumpMetricsHook', out_file=args.out)
        ]
    runner = Runner.from_cfg(cfg)
    runner.test()
    return 0


if __name__ == '__main__':
    exit_tool(run_tool(main))
