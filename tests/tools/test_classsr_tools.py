"""ClassSR's staged recipe as a user runs it: tools/classsr_prepare.py
labels sub-images, then each configs/classsr stage trains a few iterations
through tools/train.py on them, and tools/test.py reports the routing."""
import csv
import glob
import json
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from mmengine.config import Config
from mmagic.registry import MODELS

from ghostsr_mm.apis import write_data_config
from ghostsr_mm.datasets import crop_starts, label_by_psnr
from ghostsr_mm.checkpoint import read_checkpoint
from helpers import ROOT, make_sr_data, run_tool, synthetic_images

STAGE2 = ('simple', 'medium', 'hard')
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'classsr', '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_classsr_config_builds_with_the_papers_settings(path):
    cfg = Config.fromfile(path)
    with torch.device('meta'):  # shapes only
        model = MODELS.build(cfg.model)
    name = osp.basename(path)
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert cfg.train_dataloader.dataset.pipeline[3]['gt_patch_size'] == 128
    assert all(m['crop_border'] == 4 for e in cfg.test_evaluator
               for m in e['metrics'] if m['type'] != 'ClassSRRouting')
    assert cfg.optim_wrapper.optimizer.betas == (0.9, 0.99)
    if name.startswith('carn_m_branch'):
        cls = name.split('_')[3]
        assert cfg.train_dataloader.dataset.ann_file == f'meta_info_{cls}.txt'
        width = dict(simple=36, medium=52, hard=64)[cls]
        assert model.generator.entry.out_channels == width
        assert model.generator.upscale_factor == 4
        return
    widths = [b.entry.out_channels for b in model.generator.branches]
    assert widths == [36, 52, 64]
    assert sum(p.numel() for p in model.generator.classifier.parameters()) \
        == 60035
    assert (model.pixel_loss.loss_weight, model.class_loss.loss_weight,
            model.average_loss.loss_weight) == (2000.0, 1.0, 6.0)
    assert model.tiling == dict(tile=32, overlap=2, batch_size=64)
    assert cfg.train_dataloader.dataset.ann_file == 'meta_info_all.txt'
    assert cfg.train_dataloader.batch_size == 96
    assert any(m['type'] == 'ClassSRRouting'
               for m in cfg.val_evaluator['metrics'])
    inits = [b.get('init_cfg') for b in cfg.model.generator.branches]
    if 'classifier' in name:
        assert hooks[0] == 'FreezeModulesHook'
        assert [i['checkpoint'] for i in inits] == [
            f'work_dirs/carn_m_branch_{c}_x4_div2k/iter_500000.pth'
            for c in STAGE2
        ]
    else:  # joint: everything trains, from stage 3
        assert 'FreezeModulesHook' not in hooks and inits == [None] * 3
        assert cfg.load_from.endswith(
            'classsr_carn_m_classifier_x4_div2k/iter_200000.pth')


def test_crop_starts_reach_the_border():
    assert crop_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert crop_starts(64, 32, 16) == [0, 16, 32]
    assert crop_starts(32, 32, 16) == [0]
    assert crop_starts(31, 32, 16) == []


def test_label_by_psnr_splits_in_thirds_highest_first():
    psnrs = {f'p{i}': float(v) for i, v in enumerate([30, 35, 31, 40, 33,
                                                      38])}
    # Sorted: 40 38 | 35 33 | 31 30.
    assert label_by_psnr(psnrs) == dict(p3=0, p5=0, p1=1, p4=1, p2=2, p0=2)
    with pytest.raises(ValueError, match='cannot fill 3 classes'):
        label_by_psnr(dict(a=1.0, b=2.0))


def stage_config(tmp_path, name, data, val, **overrides):
    """A configs/classsr stage shrunk to 2 iterations on the tiny data."""
    base = osp.join(ROOT, 'configs', 'classsr', name)
    ann = overrides.pop('ann_file', 'meta_info_all.txt')
    overrides.update({
        'train_dataloader.dataset.ann_file': ann,
        'test_dataloader': None,
    })
    overrides.pop('test_dataloader')
    path = str(tmp_path / f'tiny_{name}')
    return write_data_config(
        path, base, data, 2, scale=4, gt_patch=64, val_root=val,
        overrides=overrides)


@pytest.mark.slow
def test_staged_recipe_through_the_tools(tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for name, img in synthetic_images(2, size=96):
        mmcv.imwrite(img[..., ::-1], str(photos / f'{name}.png'))
    data = str(tmp_path / 'subimages')
    out = run_tool('tools/classsr_prepare.py', str(photos), data, '--scale',
                   '4', '--gt-size', '64', '--rescales', '1', '0.8')
    assert out.returncode == 0, out.stderr[-3000:]
    # 96 px: crops at 0, 32 per axis; 0.8 -> 77 px: 0, 13 -> 8 per photo.
    rows = list(csv.DictReader(open(osp.join(data, 'sub_images.csv'))))
    assert len(rows) == 16
    counts = [sum(r['class'] == str(k) for r in rows) for k in range(3)]
    assert counts == [6, 5, 5]  # rank i of 16 -> class i * 3 // 16
    hard = [r for r in rows if r['class'] == '2']
    assert max(float(r['psnr']) for r in hard) <= min(
        float(r['psnr']) for r in rows if r['class'] == '0')
    listed = open(osp.join(data, 'meta_info_hard.txt')).read().split('\n')
    assert sorted(r['name'] + ' (64,64,3)' for r in hard) == sorted(
        line for line in listed if line)
    # --label-by gain needs a reference model.
    out = run_tool('tools/classsr_prepare.py', str(photos),
                   str(tmp_path / 'gain'), '--scale', '4', '--label-by',
                   'gain')
    assert out.returncode == 1 and 'needs a reference model' in out.stderr
    assert not (tmp_path / 'gain').exists()  # refused before writing
    # Refuses to overwrite the labels.
    out = run_tool('tools/classsr_prepare.py', str(photos), data, '--scale',
                   '4', '--gt-size', '64')
    assert out.returncode == 1 and 'pass --force' in out.stderr

    val = make_sr_data(str(tmp_path / 'val'), num=1, size=96, scales=(4, ))
    work = tmp_path / 'work'
    # Stage 2: each branch on its class.
    for name in STAGE2:
        cfg = stage_config(tmp_path, f'carn_m_branch_{name}_x4_div2k.py',
                           data, val, ann_file=f'meta_info_{name}.txt')
        out = run_tool('tools/train.py', cfg, '--work-dir',
                       str(work / name))
        assert out.returncode == 0, out.stderr[-3000:]
        assert f'meta_info_{name}.txt' in open(cfg).read()
    # Labelling by the gain over bicubic, with the hard branch as the
    # reference: the first labelling used bicubic, so gain = PSNR - its PSNR.
    gain_root = str(tmp_path / 'gain')
    out = run_tool('tools/classsr_prepare.py', str(photos), gain_root,
                   '--scale', '4', '--gt-size', '64', '--rescales', '1',
                   '0.8', '--label-by', 'gain', '--reference-config', cfg,
                   '--reference-checkpoint', str(work / 'hard' / 'iter_2.pth'))
    assert out.returncode == 0, out.stderr[-3000:]
    bicubic = {r['name']: float(r['psnr']) for r in rows}
    gains = list(csv.DictReader(open(osp.join(gain_root, 'sub_images.csv'))))
    for r in gains:
        assert float(r['score']) == pytest.approx(
            float(r['psnr']) - bicubic[r['name']], abs=2e-4)
    by_class = [[float(r['score']) for r in gains if r['class'] == str(k)]
                for k in range(3)]
    # The smallest gains are simple, the largest hard.
    assert max(by_class[0]) <= min(by_class[1]) and \
        max(by_class[1]) <= min(by_class[2])
    # Stage 3: the classifier, branches loaded and frozen.
    loads = {
        f'model.generator.branches.{k}.init_cfg.checkpoint':
        str(work / name / 'iter_2.pth')
        for k, name in enumerate(STAGE2)
    }
    cfg = stage_config(tmp_path, 'classsr_carn_m_classifier_x4_div2k.py',
                       data, val, **loads)
    out = run_tool('tools/train.py', cfg, '--work-dir',
                   str(work / 'classifier'))
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'FreezeModulesHook: froze generator.branches' in log
    assert 'loss_average' in log and 'share_hard' in log
    stage3 = read_checkpoint(str(work / 'classifier' / 'iter_2.pth'))['state_dict']
    for k, name in enumerate(STAGE2):
        branch = read_checkpoint(str(work / name / 'iter_2.pth'))['state_dict']
        for key, value in branch.items():
            if key.startswith('generator.'):
                mine = key.replace('generator.',
                                   f'generator.branches.{k}.', 1)
                torch.testing.assert_close(stage3[mine], value, rtol=0,
                                           atol=0)
    # Stage 4: everything trains from stage 3's model.
    cfg = stage_config(tmp_path, 'classsr_carn_m_joint_x4_div2k.py', data,
                       val, load_from=str(work / 'classifier' /
                                          'iter_2.pth'))
    out = run_tool('tools/train.py', cfg, '--work-dir', str(work / 'joint'))
    assert out.returncode == 0, out.stderr[-3000:]
    stage4 = read_checkpoint(str(work / 'joint' / 'iter_2.pth'))['state_dict']
    key = 'generator.branches.2.entry.weight'
    assert not torch.equal(stage4[key], stage3[key])  # branches train

    metrics = str(tmp_path / 'metrics.json')
    out = run_tool('tools/test.py', cfg, str(work / 'joint' / 'iter_2.pth'),
                   '--work-dir', str(tmp_path / 'test'), '--out', metrics)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.load(open(metrics))
    shares = [result[f'Test2K/share_{n}'] for n in STAGE2]
    # One 24x24 LR image = one sub-image (smaller than a tile).
    assert sorted(shares) == [0.0, 0.0, 1.0]
    assert 0 < result['Test2K/flops_ratio'] <= 1.01
    assert 10 < result['Test2K/PSNR'] < 60
