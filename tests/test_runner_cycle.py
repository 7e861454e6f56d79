"""A full mmengine Runner cycle through MMagic's own pieces: train, validate,
checkpoint, load into a new Runner and test, resume."""
import os
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.runner import Runner

from helpers import make_sr_data, tiny_sr_config, y_psnr
from ghostsr_mm.checkpoint import read_checkpoint  # noqa: E402

SMALL_EDSR = dict(
    type='EDSRNet',
    in_channels=3,
    out_channels=3,
    mid_channels=8,
    num_blocks=1,
    upscale_factor=2)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_sr_data(str(tmp_path_factory.mktemp('sr')), num=3, size=48)


def independent_psnr(runner, data_root):
    """Mean Y-PSNR of the runner's model on the data, computed here."""
    model = runner.model.generator.eval()
    values = []
    for name in sorted(os.listdir(osp.join(data_root, 'HR'))):
        gt = mmcv.imread(osp.join(data_root, 'HR', name), channel_order='rgb')
        lr = mmcv.imread(
            osp.join(data_root, 'LR_bicubic/X2', name), channel_order='rgb')
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            sr = model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
        values.append(y_psnr(np.round(sr * 255).astype(np.uint8), gt, 2))
    return float(np.mean(values))


def last_metrics(runner, mode):
    """Metrics of the last val/test epoch (MMagic's multi-loops log them to
    the message hub rather than returning them)."""
    scalars = runner.message_hub.log_scalars
    return {
        k.split('/', 1)[1]: v.current()
        for k, v in scalars.items() if k.startswith(mode + '/')
    }


@pytest.mark.slow
def test_train_validate_checkpoint_test_resume(tmp_path, data_root):
    cfg = tiny_sr_config(str(tmp_path), data_root, generator=SMALL_EDSR)
    runner = Runner.from_cfg(cfg)
    runner.train()
    ckpt = osp.join(cfg.work_dir, 'iter_4.pth')
    assert osp.isfile(ckpt)
    runner.val_loop.run()
    val = last_metrics(runner, 'val')
    assert {'PSNR', 'SSIM'} <= set(val)
    assert 0 < val['SSIM'] <= 1
    assert val['PSNR'] == pytest.approx(
        independent_psnr(runner, data_root), abs=0.02)

    # Load the checkpoint into a new Runner and test: same metrics.
    cfg2 = tiny_sr_config(
        str(tmp_path / 'load'), data_root, generator=SMALL_EDSR)
    cfg2.load_from = ckpt
    tester = Runner.from_cfg(cfg2)
    tester.test()
    test = last_metrics(tester, 'test')
    assert test['PSNR'] == pytest.approx(val['PSNR'], abs=1e-6)
    assert test['SSIM'] == pytest.approx(val['SSIM'], abs=1e-6)

    # Resume from iteration 4 and train on to 6.
    cfg3 = tiny_sr_config(
        str(tmp_path), data_root, generator=SMALL_EDSR, iters=6)
    cfg3.resume = True
    cfg3.load_from = ckpt
    resumed = Runner.from_cfg(cfg3)
    resumed.train()
    assert resumed.iter == 6
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_6.pth'))
    before = read_checkpoint(ckpt)['state_dict']
    after = read_checkpoint(osp.join(cfg.work_dir, 'iter_6.pth'))
    assert after['meta']['iter'] == 6
    key = 'generator.conv_first.weight'
    assert not torch.equal(before[key], after['state_dict'][key])
