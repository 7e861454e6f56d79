"""Checkpoint I/O (ghostsr_mm.checkpoint): formats, corrupt files, and
checkpoints that do not match the model."""
import numpy as np
import pytest
import torch
from mmagic.registry import MODELS

from ghostsr_mm.checkpoint import (CheckpointError, load_generator,
                                   load_generator_state, read_checkpoint,
                                   save_generator)
from ghostsr_mm.models.layers import convert_to_inference

EDSR = dict(in_channels=3, out_channels=3, mid_channels=8, num_blocks=1)


class Foreign:
    """An object weights-only loading does not unpickle."""


def test_bare_and_mmagic_formats(tmp_path):
    state = MODELS.build(dict(type='EDSRNet', **EDSR)).state_dict()
    torch.save(state, tmp_path / 'bare.pth')
    torch.save(
        dict(
            meta=dict(iter=np.int64(5)),
            state_dict=dict(
                {f'generator.{k}': v
                 for k, v in state.items()},
                **{'data_preprocessor.mean': torch.zeros(3)})),
        tmp_path / 'mm.pth')
    for name in ('bare.pth', 'mm.pth'):
        loaded = load_generator_state(str(tmp_path / name))
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(CheckpointError, match='expected a state dict'):
        load_generator_state(str(tmp_path / 'list.pth'))


def test_save_then_load_round_trip_and_no_overwrite(tmp_path):
    model = MODELS.build(dict(type='GhostEDSRNet', **EDSR))
    path = str(tmp_path / 'g.pth')
    save_generator(model, path, meta=dict(seed=3))
    assert read_checkpoint(path)['meta']['seed'] == 3
    other = MODELS.build(dict(type='GhostEDSRNet', **EDSR))
    load_generator(other, path)
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    before = open(path, 'rb').read()
    with pytest.raises(FileExistsError, match='pass --force'):
        save_generator(other, path)
    assert open(path, 'rb').read() == before


def test_corrupt_and_foreign_files_are_named(tmp_path):
    model = MODELS.build(dict(type='EDSRNet', **EDSR))
    good = tmp_path / 'good.pth'
    torch.save(model.state_dict(), good)
    data = good.read_bytes()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError,
                       match=r'truncated.pth is not a PyTorch checkpoint: '
                       'truncated or corrupt'):
        read_checkpoint(str(truncated))
    # Whatever the first bytes of a file that is not a checkpoint, one
    # message (before: an IndexError, a leaked KeyError or "Python
    # objects", depending on them).
    for name, text, detail in [
        ('notes.pth', 'not a checkpoint\n', "starts with b'not a"),
        ('page.pth', '<!DOCTYPE html><html>404</html>', "starts with b'<!DOC"),
        ('lfs.pth', 'version https://git-lfs.github.com/spec/v1\noid '
         'sha256:4d7a\nsize 1000\n', 'a Git LFS pointer'),
        ('digits.pth', '101 102\n', "starts with b'101"),
        ('empty.pth', '', "starts with b''"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(str(tmp_path / name))
        assert str(info.value).startswith(
            f'{tmp_path / name} is not a PyTorch checkpoint ('), info.value
        assert detail in str(info.value)
    # A pickle of an arbitrary object: refused, without advising to turn
    # the weights-only safety off.
    torch.save(dict(state_dict=Foreign()), tmp_path / 'obj.pth')
    with pytest.raises(CheckpointError, match='Python objects') as info:
        read_checkpoint(str(tmp_path / 'obj.pth'))
    assert 'weights_only=False' not in str(info.value)
    with pytest.raises(FileNotFoundError, match='nowhere.pth not found'):
        read_checkpoint(str(tmp_path / 'nowhere.pth'))


def test_mismatches_name_the_tensors_and_the_graph(tmp_path):
    learnable = MODELS.build(dict(type='GhostEDSRNet', **EDSR))
    deployed = convert_to_inference(learnable)
    save_generator(deployed, str(tmp_path / 'deployed.pth'))
    save_generator(learnable, str(tmp_path / 'learnable.pth'))
    with pytest.raises(CheckpointError,
                       match=r"(?s)missing.*shift_logits.*unexpected.*"
                       r"offsets.*deployed \(inference-graph\) checkpoint"):
        load_generator(MODELS.build(dict(type='GhostEDSRNet', **EDSR)),
                       str(tmp_path / 'deployed.pth'))
    fixed = MODELS.build(
        dict(type='GhostEDSRNet', cheap_op='fixed', **EDSR))
    with pytest.raises(CheckpointError, match='training-graph checkpoint'):
        load_generator(fixed, str(tmp_path / 'learnable.pth'))
    # A regular EDSR checkpoint for the ghost model: shapes differ.
    save_generator(MODELS.build(dict(type='EDSRNet', **EDSR)),
                   str(tmp_path / 'regular.pth'))
    with pytest.raises(CheckpointError,
                       match=r'(?s)missing.*body.0.conv1.conv.weight'):
        load_generator(MODELS.build(dict(type='GhostEDSRNet', **EDSR)),
                       str(tmp_path / 'regular.pth'))


def test_a_corrupt_channel_map_is_named_before_loading(tmp_path):
    """A ghost checkpoint whose channel map is no map of the layer (here a
    source outside the intrinsic channels) is refused with the layer named,
    before the model is touched."""
    model = MODELS.build(dict(type='GhostEDSRNet', **EDSR))
    state = model.state_dict()
    state['body.0.conv2.src'] = state['body.0.conv2.src'].clone()
    state['body.0.conv2.src'][-1] = 9
    path = str(tmp_path / 'corrupt.pth')
    torch.save(state, path)
    target = MODELS.build(dict(type='GhostEDSRNet', **EDSR))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError,
                       match=r'ghost channel maps that are none \(1\): '
                       r'body\.0\.conv2: src values must be intrinsic '
                       r'channels in \[0, 4\), got values in \[0, 9\]'):
        load_generator(target, path)
    assert all(torch.equal(v, before[k])
               for k, v in target.state_dict().items())
