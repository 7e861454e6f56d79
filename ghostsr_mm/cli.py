"""What the command-line tools share: MMagic's runner options, loading a
config with the command line applied, checking a config before anything is
written, and one error style (a one-line message and exit status 1 for a
user's mistake; ``--debug`` shows the traceback)."""
import argparse
import difflib
import glob
import logging
import os
import os.path as osp
import re
import sys
import warnings
from typing import Callable, NoReturn, Optional, Sequence

import torch
from mmengine.config import Config, DictAction

from ghostsr_mm.utils import InputError

__all__ = [
    'UserError', 'add_runner_args', 'parse_runner_args', 'load_config',
    'enable_amp', 'check_config', 'check_resume_checkpoint', 'check_weights',
    'run_tool', 'exit_tool'
]


class UserError(InputError):
    """A mistake in what the user asked a tool for: reported as one
    line."""


# Errors a tool reports as one line: the project's own (raised where the
# user's input is checked, naming it) and files missing, present or
# unreadable. Any other exception is a defect and keeps its traceback.
USER_ERRORS = (InputError, FileNotFoundError, FileExistsError,
               IsADirectoryError, NotADirectoryError, PermissionError)


def run_tool(main: Callable[[Optional[Sequence[str]]], Optional[int]],
             argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's ``main``; a user error prints ``error: <message>`` to
    stderr and returns 1, unless ``--debug`` is on the command line.

    A process group that ``main`` started (``--launcher``) is destroyed
    before returning (pytorch/pytorch#190489); :func:`exit_tool` then ends
    such a process.
    """
    global _RAN_DISTRIBUTED
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = '--debug' in argv
    if debug:
        argv.remove('--debug')
    try:
        return main(argv) or 0
    except USER_ERRORS as err:
        if debug:
            raise
        print(f'error: {err}\n(run with --debug for the traceback)',
              file=sys.stderr)
        return 1
    finally:
        if torch.distributed.is_available() and \
                torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            _RAN_DISTRIBUTED = True


_RAN_DISTRIBUTED = False


def exit_tool(status: int) -> NoReturn:
    """End a tool's process with ``status`` (``sys.exit``). A process that
    ran in a process group leaves through ``os._exit`` once its output is
    flushed: at interpreter shutdown after a gloo run, a rank aborted now
    and then ("terminate called without an active exception": C++ threads
    still joinable when static objects are destroyed), failing a training
    that had finished."""
    if _RAN_DISTRIBUTED:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by train.py and test.py (MMagic's names)."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, e.g. key=value')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument(
        '--debug',
        action='store_true',
        help='show the traceback of an error, not only its message')


def parse_runner_args(parser: argparse.ArgumentParser, argv=None):
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(args) -> Config:
    """The config with the command line applied (train.py and test.py)."""
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file {args.config} not found')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.launcher != 'none' and not torch.cuda.is_available():
        # Distributed on CPUs: gloo, and DDP without device ids.
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
        cfg.env_cfg.dist_cfg.backend = 'gloo'
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def enable_amp(cfg: Config) -> None:
    """Switch the config's optimiser wrapper to mixed precision: on a GPU
    mmengine's ``AmpOptimWrapper`` (float16 autocast, dynamic loss
    scaling), else :class:`~ghostsr_mm.engine.BF16AmpOptimWrapper`
    (bfloat16 autocast on the CPU, no loss scaling)."""
    from mmengine.logging import print_log
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper in ('AmpOptimWrapper', 'BF16AmpOptimWrapper'):
        print_log('AMP training is already enabled in your config.',
                  logger='current', level=logging.WARNING)
        return
    if wrapper != 'OptimWrapper':
        raise UserError('--amp needs optim_wrapper.type = OptimWrapper, got '
                        f'{wrapper}')
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'BF16AmpOptimWrapper'


def _check_hooks(cfg: Config, model) -> None:
    """Every custom hook type exists and builds; a hook with a
    ``check_model(model)`` method (GhostClusterInitHook) checks its inputs
    against the model."""
    from mmagic.registry import HOOKS
    for i, hook in enumerate(cfg.get('custom_hooks', None) or []):
        kind = hook.get('type') if isinstance(hook, dict) else None
        if isinstance(kind, str) and HOOKS.get(kind) is None:
            known = sorted(set(HOOKS.module_dict) |
                           set(HOOKS.parent.module_dict
                               if HOOKS.parent else {}))
            close = difflib.get_close_matches(kind, known, n=3)
            hint = f'; did you mean {", ".join(close)}?' if close else ''
            raise UserError(f'custom_hooks[{i}]: unknown hook type '
                            f'{kind!r}{hint}')
        try:
            built = HOOKS.build(hook)
        except Exception as err:  # the hook's own argument check
            raise UserError(f'custom_hooks[{i}] ({kind}): {err}') from err
        if hasattr(built, 'check_model'):
            built.check_model(model)


def check_config(cfg: Config, phases: Sequence[str]):
    """Check, before a Runner is built (it writes the work dir), that the
    model builds with the config's arguments, that the data of ``phases``
    is present and sound, and, for training, that the custom hooks build
    and accept their inputs (e.g. GhostClusterInitHook's checkpoint).

    Returns:
        nn.Module: The model the config builds, on the ``meta`` device
        (shapes and structure, no memory; the Runner builds the real one).

    Raises:
        UserError: Naming the config entry and what was expected.
    """
    from mmagic.registry import MODELS
    from mmagic.utils import register_all_modules

    from ghostsr_mm.datasets import check_config_data
    register_all_modules()
    try:
        with torch.device('meta'):
            model = MODELS.build(cfg.model)
    except Exception as err:
        raise UserError(f'model: {err}') from err
    check_config_data(cfg, phases)
    if 'train' in phases:
        _check_hooks(cfg, model)
    return model


def check_weights(model, path: str, what: str) -> None:
    """``path`` is a checkpoint of exactly ``model``'s generator (a
    training checkpoint, or the generator's weights).

    Raises:
        UserError: ``<what>: <path> ...`` naming what is wrong.
    """
    from ghostsr_mm.checkpoint import (CheckpointError, check_state_matches,
                                       load_generator_state)
    try:
        check_state_matches(getattr(model, 'generator', model),
                            load_generator_state(path), path)
    except (CheckpointError, FileNotFoundError) as err:
        raise UserError(f'{what}: {err}') from None


def refuse_to_overwrite(paths: Sequence[Optional[str]],
                        force: bool) -> None:
    """Before any work: each output path given that exists is kept unless
    ``--force``."""
    for path in paths:
        if path and osp.exists(path) and not force:
            raise FileExistsError(f'{path} exists; pass --force to '
                                  'overwrite it')


def ensure_gumbel_annealing(cfg: Config, model) -> None:
    """A model with learnable shifts trains with GumbelAnnealHook (Eq. 3's
    decaying noise): add it, with a warning, when the config has none."""
    from ghostsr_mm.models.layers import ghost_layers
    if not any(layer.cheap_op == 'learnable'
               for _, layer in ghost_layers(model)):
        return
    hooks = list(cfg.get('custom_hooks', None) or [])
    if any(isinstance(h, dict) and h.get('type') == 'GumbelAnnealHook'
           for h in hooks):
        return
    hooks.append(dict(type='GumbelAnnealHook'))
    cfg.custom_hooks = hooks
    warnings.warn(
        'The model learns ghost shifts but custom_hooks has no '
        'GumbelAnnealHook, so nothing would decay the Gumbel noise (GhostSR '
        'Eq. 3); added GumbelAnnealHook() (one Gumbel epoch = one pass '
        'over the training set). Put it in custom_hooks to choose its '
        'arguments.')


def check_resume_checkpoint(cfg: Config) -> None:
    """For ``--resume``: the checkpoint training would resume from must be
    readable; a bad one is named, with the earlier ones to choose from."""
    from mmengine.runner.checkpoint import find_latest_checkpoint

    from ghostsr_mm.checkpoint import CheckpointError, read_checkpoint
    path = cfg.get('load_from') or find_latest_checkpoint(cfg.work_dir)
    if not path:
        return  # nothing to resume: mmengine starts afresh and says so
    try:
        read_checkpoint(path)
    except (CheckpointError, FileNotFoundError) as err:
        others = sorted(
            (p for p in glob.glob(osp.join(osp.dirname(path), '*.pth'))
             if osp.abspath(p) != osp.abspath(path)),
            key=lambda p: [int(n) for n in re.findall(r'\d+', p)] or [0])
        hint = (f'; to resume from an earlier one: --resume --cfg-options '
                f'load_from={others[-1]}' if others else '')
        raise UserError(f'cannot resume: {err}{hint}') from err
