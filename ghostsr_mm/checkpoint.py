"""Reading and writing generator checkpoints: one place for every tool, hook
and API.

A generator's weights come as a bare state dict or as an MMagic checkpoint
(``state_dict`` with ``generator.`` keys beside the data preprocessor's and
the training state). Files are read with ``torch.load(weights_only=True)``
(mmengine's training-state classes allowed around the load only:
:func:`ghostsr_mm.compat.training_state_globals`) and written with
mmengine's ``save_checkpoint``.
Every failure names the file and what was expected: a missing or truncated
file, a file that is not a weights checkpoint, a checkpoint of another
architecture, or a deployed (inference-graph) checkpoint given to a
training-graph config and the other way round.
"""
import os
import os.path as osp
import pickle
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ghostsr_mm.compat import training_state_globals
from ghostsr_mm.utils import InputError

__all__ = [
    'CheckpointError', 'read_checkpoint', 'load_generator_state',
    'check_state_matches', 'load_generator', 'save_generator'
]

GENERATOR_PREFIX = 'generator.'


class CheckpointError(InputError):
    """A checkpoint file that cannot be used: unreadable, not a checkpoint,
    or not matching the model it is loaded into."""


def read_checkpoint(path: str) -> dict:
    """The object of a checkpoint file, loaded weights-only on the CPU.

    Raises:
        FileNotFoundError: No such file.
        CheckpointError: ``<path> is not a PyTorch checkpoint`` (text, an
            HTML page or a Git LFS pointer saved as .pth, a truncated or
            corrupt file), a checkpoint holding Python objects that
            weights-only loading refuses, or one that is not a dict.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} not found')
    with open(path, 'rb') as f:
        head = f.read(64)
    # torch.save writes a zip archive (legacy files: a pickle, b'\x80').
    if not (head.startswith(b'PK\x03\x04') or head.startswith(b'\x80')):
        kind = ('a Git LFS pointer: fetch the file with `git lfs pull`'
                if head.startswith(b'version https://git-lfs') else
                f'it starts with {head[:24]!r}')
        raise CheckpointError(f'{path} is not a PyTorch checkpoint ({kind})')
    try:
        with training_state_globals():
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' not in str(err):
            raise CheckpointError(f'{path} is not a PyTorch checkpoint '
                                  f'({_first_line(err)})') from None
        raise CheckpointError(
            f'{path}: holds Python objects other than weights and '
            'training state, which are not loaded (only tensors, '
            'numbers, strings and mmengine/numpy training state are); '
            'it is not a checkpoint this project wrote') from None
    except Exception as err:  # torch.load of damaged bytes raises anything
        raise CheckpointError(
            f'{path} is not a PyTorch checkpoint: truncated or corrupt '
            f'({type(err).__name__}: {_first_line(err)})') from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path}: expected a state dict or a '
                              f'checkpoint dict, got {type(ckpt).__name__}')
    return ckpt


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_generator_state(path: str) -> Dict[str, Tensor]:
    """A generator's state dict from a bare state dict or an MMagic
    checkpoint (its ``generator.`` keys, prefix removed)."""
    ckpt = read_checkpoint(path)
    state = ckpt.get('state_dict', ckpt)
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: `state_dict` is a '
                              f'{type(state).__name__}, expected a dict')
    if any(k.startswith(GENERATOR_PREFIX) for k in state):
        state = {
            k[len(GENERATOR_PREFIX):]: v
            for k, v in state.items() if k.startswith(GENERATOR_PREFIX)
        }
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f'{path}: no tensors of a generator found '
                              f'(top-level keys: {list(ckpt)[:5]})')
    return state


def _listed(keys: List[str], limit: int = 5) -> str:
    more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def _bad_channel_maps(model: nn.Module,
                      state: Dict[str, Tensor]) -> List[str]:
    """'<layer>: <problem>' for every ghost layer whose ``src`` and
    ``ghost_channels`` in ``state`` (of the layer's shapes) are no channel
    map of it (GhostConv2d.mapping_problem)."""
    bad = []
    for name, module in model.named_modules():
        if not hasattr(module, 'mapping_problem'):
            continue
        src = state.get(f'{name}.src')
        ghost = state.get(f'{name}.ghost_channels')
        if src is None or ghost is None or \
                src.shape != module.src.shape or \
                ghost.shape != module.ghost_channels.shape:
            continue  # reported as missing or mis-shaped
        problem = module.mapping_problem(src, ghost)
        if problem:
            bad.append(f'{name}: {problem}')
    return bad


def check_state_matches(model: nn.Module, state: Dict[str, Tensor],
                        source: str = 'the checkpoint') -> None:
    """Raise :class:`CheckpointError` unless ``state`` holds exactly the
    model's tensors with the model's shapes, and a channel map of each
    ghost layer.

    The message names the missing, unexpected and mis-shaped tensors, and
    says when the checkpoint is the other graph of a ghost model (deployed
    checkpoint for a learnable config, or the reverse).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f'{k} {list(state[k].shape)} (model: {list(own[k].shape)})'
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    bad_maps = _bad_channel_maps(model, state)
    if not (missing or unexpected or shapes or bad_maps):
        return
    name = type(model).__name__
    lines = [f'{source} does not match the model {name}:']
    if missing:
        lines.append(f'  missing ({len(missing)} of {len(own)} tensors): '
                     f'{_listed(missing)}')
    if unexpected:
        lines.append(f'  unexpected ({len(unexpected)}): '
                     f'{_listed(unexpected)}')
    if shapes:
        lines.append(f'  other shapes ({len(shapes)}): {_listed(shapes, 3)}')
    if bad_maps:
        lines.append(f'  ghost channel maps that are none ({len(bad_maps)}): '
                     f'{_listed(bad_maps, 3)}')
    if any(k.endswith('.shift_logits') for k in missing) and any(
            k.endswith('.offsets') for k in unexpected):
        lines.append("  it is a deployed (inference-graph) checkpoint: use "
                     "the config with the generator's cheap_op='fixed'")
    elif any(k.endswith('.offsets') for k in missing) and any(
            k.endswith('.shift_logits') for k in unexpected):
        lines.append('  it is a training-graph checkpoint: use the learnable '
                     'config, or convert it with tools/deploy.py')
    elif len(missing) == len(own):
        lines.append('  none of the model\'s tensors is in it: a checkpoint '
                     'of another architecture?')
    raise CheckpointError('\n'.join(lines))


def load_generator(model: nn.Module, path: str) -> nn.Module:
    """Load a generator's weights strictly (see :func:`check_state_matches`)
    and return the model."""
    state = load_generator_state(path)
    check_state_matches(model, state, path)
    model.load_state_dict(state)
    return model


def save_generator(model: nn.Module,
                   path: str,
                   meta: Optional[dict] = None,
                   overwrite: bool = False) -> str:
    """Write ``model``'s weights as an MMagic checkpoint (``generator.``
    keys) that a config's ``load_from`` and :func:`load_generator` accept.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from mmengine.runner.checkpoint import save_checkpoint
    if osp.exists(path) and not overwrite:
        raise FileExistsError(f'{path} exists; pass --force to overwrite it')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    state = {
        GENERATOR_PREFIX + k: v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    save_checkpoint(dict(state_dict=state, meta=dict(meta or {})), path)
    return path
