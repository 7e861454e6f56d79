"""Train a model with an MMagic config (MMagic's tools/train.py interface).

    python tools/train.py CONFIG [--work-dir DIR] [--resume] [--amp]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
        [--debug]

The config is checked before the Runner writes anything (the model and the
custom hooks build with its arguments, the data is present and sound, and
with --resume the checkpoint to resume from is readable, else load_from
holds the weights of the model); an error is one
line naming what is wrong (--debug: with the traceback). A model with
learnable ghost shifts gets GumbelAnnealHook when the config has none.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import ghostsr_mm  # noqa: E402,F401  (compat fixes before MMagic loads)
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from ghostsr_mm.cli import (add_runner_args, check_config,  # noqa: E402
                            check_resume_checkpoint, check_weights,
                            enable_amp, ensure_gumbel_annealing, exit_tool,
                            load_config, parse_runner_args, run_tool)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume', action='store_true', help='resume from the latest '
        'checkpoint in the work dir (or from load_from)')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args)
    if args.amp:
        enable_amp(cfg)
    model = check_config(cfg, ('train', 'val'))
    ensure_gumbel_annealing(cfg, model)
    if args.resume:
        cfg.resume = True
        check_resume_checkpoint(cfg)
    elif cfg.get('load_from'):
        check_weights(model, cfg.load_from, 'load_from')
    runner = Runner.from_cfg(cfg)
    print_log(f'Working directory: {cfg.work_dir}', logger='current')
    runner.train()
    print_log(f'Checkpoints saved under {cfg.work_dir}', logger='current')
    return 0


if __name__ == '__main__':
    exit_tool(run_tool(main))
