"""The tools as a user meets their errors: each refusal is one line naming
what is wrong, exit status 1, and nothing written (run in-process through
the same ``run_tool`` wrapper as the command line)."""
import os.path as osp
import warnings

import pytest
import torch
from mmagic.registry import MODELS

from ghostsr_mm.apis import write_data_config
from ghostsr_mm.checkpoint import read_checkpoint, save_generator
from ghostsr_mm.cli import run_tool
from ghostsr_mm.models.layers import convert_to_inference
from helpers import ROOT, load_tool, make_sr_data

EDSR = dict(in_channels=3, out_channels=3, mid_channels=8, num_blocks=1,
            upscale_factor=2)


def call(tool, *argv, capsys):
    """(exit status, stderr) of a tool run as from the command line."""
    status = run_tool(load_tool(tool).main, [str(a) for a in argv])
    return status, capsys.readouterr().err


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_sr_data(str(tmp_path_factory.mktemp('sr')), num=2, size=32)


def tiny_config(tmp_path, data, generator, name='cfg.py', **overrides):
    return write_data_config(
        str(tmp_path / name),
        osp.join(ROOT, 'configs/ghostsr/_base_/sisr_paper_x2.py'),
        data, 2, gt_patch=16,
        overrides=dict(model=dict(generator=generator), **overrides))


def one_error_line(err):
    lines = err.strip().splitlines()
    assert lines[0].startswith('error: ') and 'Traceback' not in err, err
    return err


@pytest.mark.parametrize('case', ['rdn', 'regular', 'deployed'])
def test_test_refuses_checkpoints_that_do_not_match(tmp_path, data, case,
                                                    capsys):
    """Wrong weights would give wrong numbers: refused before testing, and
    --out is not written."""
    ghost = dict(type='GhostEDSRNet', **EDSR)
    cfg = tiny_config(tmp_path, data, ghost)
    ckpt = tmp_path / f'{case}.pth'
    if case == 'rdn':
        model = MODELS.build(dict(type='RDNNet', in_channels=3,
                                  out_channels=3, mid_channels=8,
                                  num_blocks=1, num_layers=1,
                                  channel_growth=4))
        expected = r'none of the model.s tensors'
    elif case == 'regular':
        model = MODELS.build(dict(EDSR, type='EDSRNet'))
        expected = 'missing.*body.0.conv1.conv.weight'
    else:
        model = convert_to_inference(MODELS.build(ghost))
        expected = r"deployed \(inference-graph\) checkpoint.*cheap_op='fixed'"
    save_generator(model, str(ckpt))
    out = tmp_path / 'metrics.json'
    status, err = call('tools/test.py', cfg, ckpt, '--work-dir',
                       tmp_path / 'work', '--out', out, capsys=capsys)
    assert status == 1
    import re
    assert re.search(expected, one_error_line(err), re.S), err
    assert f'{ckpt} does not match the model GhostEDSRNet' in err
    assert not out.exists() and not (tmp_path / 'work').exists()


def test_cluster_init_refuses_and_writes_nothing(tmp_path, data, capsys):
    ghost_cfg = tiny_config(tmp_path, data, dict(type='GhostEDSRNet', **EDSR))
    regular_cfg = tiny_config(tmp_path, data, dict(type='EDSRNet', **EDSR),
                              name='regular.py')
    ghost_ckpt = tmp_path / 'ghost.pth'
    save_generator(MODELS.build(dict(type='GhostEDSRNet', **EDSR)),
                   str(ghost_ckpt))
    regular_ckpt = tmp_path / 'regular.pth'
    save_generator(MODELS.build(dict(type='EDSRNet', **EDSR)),
                   str(regular_ckpt))
    out = tmp_path / 'out.pth'
    status, err = call('tools/cluster_init.py', ghost_ckpt, ghost_cfg, out,
                       capsys=capsys)
    assert status == 1 and 'holds ghost layers already' in one_error_line(err)
    status, err = call('tools/cluster_init.py', regular_ckpt, regular_cfg,
                       out, capsys=capsys)
    assert status == 1 and 'has no ghost layer' in one_error_line(err)
    assert not out.exists()
    status, err = call('tools/cluster_init.py', regular_ckpt, ghost_cfg, out,
                       capsys=capsys)
    assert status == 0 and out.exists()


def test_train_refuses_a_cluster_checkpoint_of_another_model(tmp_path, data,
                                                            capsys):
    """GhostClusterInitHook's checkpoint is checked before the Runner
    writes its work dir (it would otherwise fail after, or leave a random
    model)."""
    rdn = tmp_path / 'rdn.pth'
    save_generator(
        MODELS.build(dict(type='RDNNet', in_channels=3, out_channels=3,
                          mid_channels=8, num_blocks=1, num_layers=1,
                          channel_growth=4)), str(rdn))
    cfg = tiny_config(
        tmp_path, data, dict(type='GhostEDSRNet', **EDSR),
        custom_hooks=[dict(type='GhostClusterInitHook', pretrained=str(rdn))])
    work = tmp_path / 'work'
    status, err = call('tools/train.py', cfg, '--work-dir', work,
                       capsys=capsys)
    assert status == 1
    assert (f'GhostClusterInitHook: {rdn}: cluster_init: none of the' in
            one_error_line(err))
    assert not work.exists()


@pytest.mark.parametrize('case', ['carn', 'text', 'truncated', 'missing'])
def test_train_checks_load_from_before_writing(tmp_path, data, case, capsys):
    """A load_from that is not this model's weights (another model, a text
    file, a truncated file, no file) is refused before the work dir is
    written; before, a CARN checkpoint trained a random model with status
    0."""
    ckpt = tmp_path / f'{case}.pth'
    if case == 'carn':
        save_generator(MODELS.build(dict(type='CARNNet', in_channels=3,
                                         out_channels=3, mid_channels=8,
                                         upscale_factor=2)), str(ckpt))
        expected = "none of the model's tensors is in it"
    elif case == 'text':
        ckpt.write_text('https://example.com/edsr.pth\n')
        expected = 'is not a PyTorch checkpoint'
    elif case == 'truncated':
        save_generator(MODELS.build(dict(type='GhostEDSRNet', **EDSR)),
                       str(ckpt))
        ckpt.write_bytes(ckpt.read_bytes()[:300])
        expected = 'is not a PyTorch checkpoint: truncated or corrupt'
    else:
        expected = f'checkpoint {ckpt} not found'
    cfg = tiny_config(tmp_path, data, dict(type='GhostEDSRNet', **EDSR),
                      load_from=str(ckpt))
    work = tmp_path / 'work'
    status, err = call('tools/train.py', cfg, '--work-dir', work,
                       capsys=capsys)
    assert status == 1
    assert one_error_line(err).startswith(f'error: load_from: ')
    assert expected in err, err
    assert not work.exists()


CONFIG_ERRORS = [
    (dict(type='GhostEDSRNet', cheap_op='lernable', **EDSR), {},
     r"unknown `cheap_op` 'lernable'"),
    (dict(type='GhostEDSRNet', ratio=1.5, **EDSR), {},
     r'`ratio` \(λ\) must lie in \(0, 1\), got 1.5'),
    (dict(type='CARNNet', mid_channels=8, res_scale=0.1), {},
     "unexpected keyword argument 'res_scale'"),
    (dict(type='GhostEDSRNet', **EDSR),
     dict(custom_hooks=[dict(type='GumbelAnealHook')]),
     r"custom_hooks\[0\]: unknown hook type 'GumbelAnealHook'; did you mean "
     'GumbelAnnealHook'),
]


@pytest.mark.parametrize('generator, overrides, message', CONFIG_ERRORS)
def test_config_errors_are_one_line_and_write_nothing(tmp_path, data,
                                                      generator, overrides,
                                                      message, capsys):
    cfg = tiny_config(tmp_path, data, generator, **overrides)
    work = tmp_path / 'work'
    status, err = call('tools/train.py', cfg, '--work-dir', work,
                       capsys=capsys)
    assert status == 1
    import re
    assert re.search(message, one_error_line(err)), err
    assert not work.exists()
    # --debug shows the traceback.
    with pytest.raises(Exception, match=message):
        run_tool(load_tool('tools/train.py').main,
                 [cfg, '--work-dir', str(work), '--debug'])


def test_data_errors_name_the_file(tmp_path, capsys):
    generator = dict(type='EDSRNet', **EDSR)
    # A GT image with no LR partner (the dataset would skip it silently).
    lonely = make_sr_data(str(tmp_path / 'lonely'), num=2, size=32)
    import os
    os.remove(osp.join(lonely, 'LR_bicubic/X2/img001.png'))
    cfg = tiny_config(tmp_path, lonely, generator, name='a.py')
    status, err = call('tools/train.py', cfg, '--work-dir', tmp_path / 'w',
                       capsys=capsys)
    assert status == 1
    assert ('1 GT images without an LR partner' in one_error_line(err)
            and 'HR/img001.png' in err)
    # A truncated PNG in the training set.
    broken = make_sr_data(str(tmp_path / 'broken'), num=2, size=32)
    png = osp.join(broken, 'HR/img000.png')
    data = open(png, 'rb').read()
    open(png, 'wb').write(data[:len(data) // 2])
    cfg = tiny_config(tmp_path, broken, generator, name='b.py')
    status, err = call('tools/train.py', cfg, '--work-dir', tmp_path / 'w',
                       capsys=capsys)
    assert status == 1
    assert 'HR/img000.png: not a readable image' in one_error_line(err)
    # An LR image of the wrong size in the test set.
    mixed = make_sr_data(str(tmp_path / 'mixed'), num=2, size=32)
    import mmcv
    lr = osp.join(mixed, 'LR_bicubic/X2/img001.png')
    mmcv.imwrite(mmcv.imread(lr)[:, :15], lr)
    cfg = tiny_config(tmp_path, mixed, generator, name='c.py')
    save_generator(MODELS.build(generator), str(tmp_path / 'r.pth'))
    status, err = call('tools/test.py', cfg, tmp_path / 'r.pth',
                       '--work-dir', tmp_path / 'w', capsys=capsys)
    assert status == 1
    assert ('HR/img001.png is 32x32 but its LR partner' in
            one_error_line(err) and 'is 16x15' in err)
    assert not (tmp_path / 'w').exists()


def test_resume_from_a_truncated_checkpoint_names_it(tmp_path, data,
                                                     capsys):
    work = tmp_path / 'work'
    work.mkdir()
    model = MODELS.build(dict(type='EDSRNet', **EDSR))
    save_generator(model, str(work / 'iter_2.pth'))
    save_generator(model, str(work / 'iter_4.pth'))
    last = work / 'iter_4.pth'
    last.write_bytes(last.read_bytes()[:100])
    (work / 'last_checkpoint').write_text(str(last))
    cfg = tiny_config(tmp_path, data, dict(type='EDSRNet', **EDSR))
    status, err = call('tools/train.py', cfg, '--work-dir', work,
                       '--resume', capsys=capsys)
    assert status == 1
    one_error_line(err)
    assert f'cannot resume: {last} is not a PyTorch checkpoint' in err
    assert f'--resume --cfg-options load_from={work}/iter_2.pth' in err
    assert sorted(p.name for p in work.iterdir()) == [
        'iter_2.pth', 'iter_4.pth', 'last_checkpoint'
    ]


def test_missing_files_are_one_line(tmp_path, data, capsys):
    cfg = tiny_config(tmp_path, data, dict(type='GhostEDSRNet', **EDSR))
    status, err = call('tools/deploy.py', cfg, tmp_path / 'none.pth',
                       tmp_path / 'out.pth', capsys=capsys)
    assert status == 1 and 'none.pth not found' in one_error_line(err)
    status, err = call('tools/analysis/complexity.py', tmp_path / 'no.py',
                       '--no-latency', capsys=capsys)
    assert status == 1 and 'config file' in one_error_line(err)
    assert 'no.py not found' in err


def test_shift_oracle_tool(tmp_path, data, capsys):
    cfg = tiny_config(tmp_path, data, dict(type='GhostEDSRNet', **EDSR))
    ckpt = tmp_path / 'ghost.pth'
    save_generator(MODELS.build(dict(type='GhostEDSRNet', **EDSR)),
                   str(ckpt))
    out = tmp_path / 'oracle.json'
    status = run_tool(load_tool('tools/analysis/shift_oracle.py').main,
                      [cfg, str(ckpt), data, '--out', str(out)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    import json
    layers = json.loads(out.read_text())
    assert [r['layer'] for r in layers] == [
        'body.0.conv1', 'body.0.conv2', 'conv_after_body'
    ]
    assert all(len(r['losses']) == 9 for r in layers)
    hits = sum(r['learned'] == r['best'] for r in layers)
    assert f'{hits} of 3 layers learned their best offset (2 validation ' \
        'images)' in printed.out
    status = run_tool(load_tool('tools/analysis/shift_oracle.py').main,
                      [cfg, str(ckpt), data, '--out', str(out)])
    assert status == 1 and 'pass --force' in capsys.readouterr().err
    # --save-chosen: a deployed checkpoint holding, for every layer, the
    # best offset of the greedy pass that --out reports.
    chosen = tmp_path / 'chosen.pth'
    status = run_tool(load_tool('tools/analysis/shift_oracle.py').main,
                      [cfg, str(ckpt), data, '--out', str(out), '--force',
                       '--save-chosen', str(chosen)])
    assert status == 0, capsys.readouterr().err
    from ghostsr_mm.apis import load_sr_model
    state = read_checkpoint(chosen)['state_dict']
    assert any(k.endswith('.offsets') for k in state)
    layers = dict(load_sr_model(cfg, str(chosen)).ghost_layers())
    for r in json.loads(out.read_text()):
        layer = layers[r['layer']]
        assert (layer.offsets[layer.ghost_channels] == torch.tensor(
            r['best'])).all(), r['layer']
    # An existing --save-chosen file is kept without --force, replaced
    # with it.
    chosen.write_bytes(b'user data')
    args = [cfg, str(ckpt), data, '--save-chosen', str(chosen)]
    status = run_tool(load_tool('tools/analysis/shift_oracle.py').main, args)
    assert status == 1 and 'pass --force' in capsys.readouterr().err
    assert chosen.read_bytes() == b'user data'
    status = run_tool(load_tool('tools/analysis/shift_oracle.py').main,
                      args + ['--force'])
    assert status == 0, capsys.readouterr().err
    assert read_checkpoint(chosen)['state_dict'].keys() == \
        state.keys()


def test_train_adds_the_anneal_hook_to_a_learnable_ghost_config(
        tmp_path, data, capsys):
    """A ghost backbone swapped into a config without GumbelAnnealHook
    still gets its noise decayed (and the user is told); a regular or a
    copy-mode model gets no hook."""
    from mmengine.config import Config

    from ghostsr_mm.cli import ensure_gumbel_annealing
    cases = [(dict(type='GhostEDSRNet', **EDSR), True),
             (dict(type='GhostEDSRNet', cheap_op='copy', **EDSR), False),
             (dict(type='EDSRNet', **EDSR), False)]
    for generator, added in cases:
        cfg = Config.fromfile(tiny_config(tmp_path, data, generator))
        hooks = list(cfg.custom_hooks)
        assert all(h['type'] != 'GumbelAnnealHook' for h in hooks)
        model = MODELS.build(cfg.model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            ensure_gumbel_annealing(cfg, model)
        assert any('added GumbelAnnealHook()' in str(w.message)
                   for w in caught) == added
        expected = hooks + [dict(type='GumbelAnnealHook')] if added else hooks
        assert list(cfg.custom_hooks) == expected, generator['type']
        # A hook already there is kept as the user wrote it.
        ensure_gumbel_annealing(cfg, model)
        assert list(cfg.custom_hooks) == expected
    cfg = Config.fromfile(tiny_config(tmp_path, data,
                                      dict(type='GhostEDSRNet', **EDSR)))
    work = tmp_path / 'work'
    with pytest.warns(UserWarning, match='added GumbelAnnealHook'):
        status = run_tool(load_tool('tools/train.py').main,
                          [cfg.filename, '--work-dir', str(work)])
    assert status == 0, capsys.readouterr().err
    log = ''.join(p.read_text() for p in work.rglob('*.log'))
    assert 'GumbelAnnealHook: 2 Gumbel epochs of 1 iterations' in log
