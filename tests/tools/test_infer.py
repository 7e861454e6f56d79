"""tools/infer.py as a user runs it: a folder of real-world image kinds
(8/16-bit, grey, RGBA, JPEG, one corrupt file), every checkpoint graph,
outputs against a whole-image pass, and never overwriting without --force."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmagic.registry import MODELS

from ghostsr_mm.apis import load_sr_model
from ghostsr_mm.checkpoint import save_generator
from ghostsr_mm.cli import run_tool
from ghostsr_mm.models.layers import convert_to_inference, ghost_layers
from helpers import load_tool

GHOST = dict(type='GhostEDSRNet', in_channels=3, out_channels=3,
             mid_channels=8, num_blocks=2, upscale_factor=2)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('infer')
    cfg = root / 'ghost.py'
    cfg.write_text(f'model = dict(generator={GHOST!r})\n')
    torch.manual_seed(0)
    model = MODELS.build(GHOST)
    for _, layer in ghost_layers(model):
        with torch.no_grad():
            layer.shift_logits.normal_()
    save_generator(model, str(root / 'train.pth'))
    save_generator(convert_to_inference(model), str(root / 'deployed.pth'))
    images = root / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    rgb = (rng.random((37, 53, 3)) * 255).astype(np.uint8)
    mmcv.imwrite(rgb, str(images / 'rgb.png'))
    mmcv.imwrite(rgb, str(images / 'photo.jpg'))
    mmcv.imwrite(rgb[..., 0], str(images / 'grey.png'))
    rgba = np.concatenate([rgb, (rng.random((37, 53, 1)) * 255).astype(
        np.uint8)], 2)
    mmcv.imwrite(rgba, str(images / 'rgba.png'))
    mmcv.imwrite((rng.random((21, 30, 3)) * 65535).astype(np.uint16),
                 str(images / 'deep.png'))
    data = open(images / 'rgb.png', 'rb').read()
    (images / 'broken.png').write_bytes(data[:len(data) // 3])
    return root


def infer(*argv, capsys):
    status = run_tool(load_tool('tools/infer.py').main,
                      [str(a) for a in argv])
    return status, capsys.readouterr()


def whole_image(root, img):
    """The model on the whole image, in 0-1 RGB, as float64 numpy."""
    model = load_sr_model(str(root / 'ghost.py'), str(root / 'train.pth'))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return model(x)[0].clamp(0, 1).permute(1, 2, 0).double().numpy()


def test_folder_with_every_kind_and_a_corrupt_file(setup, capsys):
    root, out = setup, setup / 'out'
    status, cap = infer(root / 'ghost.py', root / 'train.pth',
                        root / 'images', out, '--tile', '28',
                        '--batch-size', '3', capsys=capsys)
    assert status == 1
    assert 'broken.png: cannot be decoded' in cap.err
    assert '5 of 6 images written' in cap.out
    assert not (out / 'broken.png').exists()
    src = mmcv.imread(str(root / 'images/rgb.png'), channel_order='rgb')
    expected = whole_image(root, src.astype(np.float32) / 255)
    got = mmcv.imread(str(out / 'rgb.png'), channel_order='rgb')
    assert got.shape == (74, 106, 3)
    # Tiles of 28 with the default overlap equal the whole-image pass.
    assert np.abs(got - expected * 255).max() <= 0.5 + 1e-3
    grey = mmcv.imread(str(out / 'grey.png'), flag='unchanged')
    g = mmcv.imread(str(root / 'images/grey.png'), flag='unchanged')
    g3 = np.repeat(g[..., None].astype(np.float32) / 255, 3, 2)
    assert grey.shape == (74, 106)
    assert np.abs(grey - whole_image(root, g3).mean(2) * 255).max() <= 0.5 + 1e-3
    rgba = mmcv.imread(str(out / 'rgba.png'), flag='unchanged')
    a = mmcv.imread(str(root / 'images/rgba.png'), flag='unchanged')[..., 3]
    assert rgba.shape == (74, 106, 4)
    alpha = np.clip(np.round(mmcv.imresize(
        a.astype(np.float32) / 255, (106, 74), interpolation='bicubic').clip(
            0, 1) * 255), 0, 255)
    assert np.array_equal(rgba[..., 3], alpha)
    deep = mmcv.imread(str(out / 'deep.png'), flag='unchanged')
    assert deep.dtype == np.uint16 and deep.shape == (42, 60, 3)
    assert mmcv.imread(str(out / 'photo.jpg')).shape == (74, 106, 3)


def test_refuses_to_overwrite_without_force(setup, capsys):
    root, out = setup, setup / 'single.png'
    args = (root / 'ghost.py', root / 'deployed.pth', root / 'images/rgb.png',
            out)
    assert infer(*args, capsys=capsys)[0] == 0
    first = out.read_bytes()
    out.write_bytes(b'user data')
    status, cap = infer(*args, capsys=capsys)
    assert status == 1 and 'exist; pass --force' in cap.err
    assert out.read_bytes() == b'user data'
    assert infer(*args, '--force', capsys=capsys)[0] == 0
    # The deployed and the training checkpoint give the same image.
    assert out.read_bytes() == first
    train_out = setup / 'from_train.png'
    assert infer(root / 'ghost.py', root / 'train.pth',
                 root / 'images/rgb.png', train_out, capsys=capsys)[0] == 0
    assert np.array_equal(mmcv.imread(str(train_out)), mmcv.imread(str(out)))


def test_bad_arguments_are_refused_before_work(setup, capsys):
    root = setup
    status, cap = infer(root / 'ghost.py', root / 'train.pth',
                        root / 'images/rgb.png', root / 'x.png', '--tile',
                        '8', '--tile-overlap', '4', capsys=capsys)
    assert status == 1 and '--tile 8 must be larger than twice' in cap.err
    status, cap = infer(root / 'ghost.py', root / 'train.pth',
                        root / 'nothing', root / 'y', capsys=capsys)
    assert status == 1 and 'no images found at' in cap.err
    other = root / 'other.pth'
    save_generator(MODELS.build(dict(GHOST, type='EDSRNet')), str(other))
    status, cap = infer(root / 'ghost.py', other, root / 'images/rgb.png',
                        root / 'z.png', capsys=capsys)
    assert status == 1 and 'does not match the model GhostEDSRNet' in cap.err
    # Before: --tile 0 silently used the default; .xyz failed in cv2 after
    # the whole computation.
    for flag, value, message in [('--tile', '0', '--tile must be >= 1, '
                                  'got 0'),
                                 ('--tile-overlap', '-1',
                                  '--tile-overlap must be >= 0, got -1')]:
        status, cap = infer(root / 'ghost.py', root / 'train.pth',
                            root / 'images/rgb.png', root / 'x.png', flag,
                            value, capsys=capsys)
        assert status == 1 and message in cap.err, cap.err
    status, cap = infer(root / 'ghost.py', root / 'train.pth',
                        root / 'images/rgb.png', root / 'out.xyz',
                        capsys=capsys)
    assert status == 1
    assert 'out.xyz: no image encoder for ".xyz"' in cap.err, cap.err
    assert not (root / 'x.png').exists() and not (root / 'z.png').exists()
    assert not (root / 'out.xyz').exists()


@pytest.mark.slow
def test_mmagic_inferencer_gives_the_cli_output(tmp_path, setup, capsys):
    """MMagic's own inferencer, imported from the lock with no stub of
    ours in the test, runs a ghost config and checkpoint and writes the
    image tools/infer.py writes (one whole-image pass each)."""
    from mmagic.apis import MMagicInferencer

    from ghostsr_mm.apis import write_data_config
    from helpers import make_sr_data
    root = setup
    data = make_sr_data(str(tmp_path / 'data'), num=1, size=32)
    cfg = write_data_config(
        str(tmp_path / 'full.py'),
        osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(
            __file__)))), 'configs/ghostsr/_base_/sisr_paper_x2.py'),
        data, 2, overrides=dict(model=dict(generator=GHOST)))
    ckpt = str(root / 'deployed.pth')
    fixed_cfg = write_data_config(
        str(tmp_path / 'fixed.py'), cfg, data, 2,
        overrides=dict(model=dict(generator=dict(cheap_op='fixed'))))
    image = str(root / 'images/rgb.png')
    inferencer = MMagicInferencer(model_name='edsr', model_config=fixed_cfg,
                                  model_ckpt=ckpt)
    ours = tmp_path / 'ours.png'
    theirs = tmp_path / 'theirs.png'
    inferencer.infer(img=image, result_out_dir=str(theirs))
    assert infer(cfg, ckpt, image, ours, '--tile', '64',
                 capsys=capsys)[0] == 0
    a = mmcv.imread(str(ours)).astype(int)
    b = mmcv.imread(str(theirs)).astype(int)
    assert a.shape == b.shape == (74, 106, 3)
    assert np.abs(a - b).max() <= 1


def test_onnxruntime_backend_matches_pytorch(setup, tmp_path, capsys):
    root = setup
    onnx_path = tmp_path / 'model.onnx'
    assert run_tool(load_tool('tools/deploy.py').main, [
        str(root / 'ghost.py'), str(root / 'train.pth'),
        str(tmp_path / 'deployed.pth'), '--onnx', str(onnx_path)
    ]) == 0
    image = root / 'images/rgb.png'
    ours, theirs = tmp_path / 'torch.png', tmp_path / 'ort.png'
    assert infer(root / 'ghost.py', root / 'train.pth', image, ours,
                 capsys=capsys)[0] == 0
    status, cap = infer(root / 'ghost.py', onnx_path, image, theirs,
                        '--backend', 'onnxruntime', '--tile', '64',
                        capsys=capsys)
    assert status == 0, cap.err
    a = mmcv.imread(str(ours)).astype(int)
    b = mmcv.imread(str(theirs)).astype(int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1


CLASSSR = dict(
    type='ClassSRNet',
    branches=[
        dict(type='CARNNet', mid_channels=c, num_blocks=1, efficient=True,
             upscale_factor=2) for c in (8, 12, 16)
    ])


def test_classsr_checkpoint_runs_routed_with_its_report(tmp_path, setup,
                                                        capsys):
    from ghostsr_mm.apis import (branch_flops, routed_inference,
                                 routing_flops, routing_map)
    cfg = tmp_path / 'classsr.py'
    cfg.write_text(f'model = dict(type="ClassSR", generator={CLASSSR!r})\n')
    torch.manual_seed(0)
    model = MODELS.build(CLASSSR)
    with torch.no_grad():  # spread the sub-images over the branches
        model.classifier.fc.weight.normal_(0, 3)
    save_generator(model, str(tmp_path / 'classsr.pth'))
    src = setup / 'images/rgb.png'  # 37x53: 2x2 sub-images of 32, overlap 2
    out = tmp_path / 'out.png'
    status, cap = infer(cfg, tmp_path / 'classsr.pth', src, out,
                        '--save-routing', capsys=capsys)
    assert status == 0, cap.err
    rgb = mmcv.imread(str(src), channel_order='rgb').astype(np.float32) / 255
    lr = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    sr, classes = routed_inference(model.eval(), lr, 32, 2, 64)
    got = mmcv.imread(str(out), channel_order='rgb').astype(np.float64)
    expected = sr[0].clamp(0, 1).permute(1, 2, 0).double().numpy() * 255
    assert np.abs(got - expected).max() <= 0.5 + 1e-3
    counts = torch.bincount(classes[0], minlength=3).tolist()
    cost = routing_flops(counts, branch_flops(model))
    shares = ', '.join(f'{s:.0%}' for s in cost['shares'])
    assert (f'out.png: 4 sub-images, simple to hard {shares}; FLOPs '
            f'{cost["ratio"]:.1%} of the hard branch alone') in cap.out
    picture = mmcv.imread(str(tmp_path / 'out_routing.png'),
                          channel_order='rgb').astype(np.float64)
    assert picture.shape == got.shape
    # Each pixel is 0.55 * output + 0.45 * its class colour.
    cmap = routing_map(classes[0], 37, 53, 32, 2)
    colour = np.array([(0, 0.75, 0), (1, 0.8, 0), (0.9, 0, 0)])[cmap[0, 0]]
    np.testing.assert_allclose(
        picture[0, 0], np.round(0.55 * expected[0, 0] + 0.45 * 255 * colour),
        atol=1.0)
    # --save-routing keeps an existing picture and needs ClassSR.
    status, cap = infer(cfg, tmp_path / 'classsr.pth', src, out,
                        '--save-routing', capsys=capsys)
    assert status == 1 and 'out_routing.png' in cap.err
    status, cap = infer(setup / 'ghost.py', setup / 'train.pth', src,
                        tmp_path / 'o2.png', '--save-routing', capsys=capsys)
    assert status == 1 and '--save-routing needs a ClassSR model' in cap.err


def test_classsr_flops_budget_and_cost_penalty(tmp_path, setup, capsys):
    """--flops-budget finds a penalty whose routing stays within the
    budget (the tool's own report), prints it, and --cost-penalty with
    that value routes the same; both need a ClassSR model, and a budget
    below the cheapest routing is refused before anything is written."""
    import re

    from ghostsr_mm.apis import branch_flops
    cfg = tmp_path / 'classsr.py'
    cfg.write_text(f'model = dict(type="ClassSR", generator={CLASSSR!r})\n')
    torch.manual_seed(0)
    model = MODELS.build(CLASSSR)
    with torch.no_grad():
        model.classifier.fc.weight.normal_(0, 3)
    ckpt = tmp_path / 'classsr.pth'
    save_generator(model, str(ckpt))
    src = setup / 'images/rgb.png'
    flops = branch_flops(model)
    cheapest, costliest = [(flops['branches'][k] + flops['classifier']) /
                           flops['branches'][2] for k in (0, 2)]
    reports = []
    for budget in (cheapest, (cheapest + costliest) / 2):
        status, cap = infer(cfg, ckpt, src, tmp_path / f'{budget}.png',
                            '--flops-budget', str(budget), capsys=capsys)
        assert status == 0, cap.err
        penalty = re.search(r'cost penalty (\S+)', cap.out).group(1)
        ratio = float(re.search(r'FLOPs ([0-9.]+)%', cap.out).group(1))
        assert ratio / 100 <= budget + 5e-4  # the report rounds to 0.1%
        status, again = infer(cfg, ckpt, src, tmp_path / f'p{budget}.png',
                              '--cost-penalty', penalty, capsys=capsys)
        assert status == 0, again.err
        reports.append(re.search(r'simple to hard .*', cap.out).group(0))
        assert reports[-1] in again.out
    assert reports[0].startswith('simple to hard 100%, 0%, 0%')
    assert reports[0] != reports[1]
    status, cap = infer(cfg, ckpt, src, tmp_path / 'low.png',
                        '--flops-budget', str(cheapest - 0.01),
                        capsys=capsys)
    assert status == 1 and 'below the cheapest routing' in cap.err
    assert not (tmp_path / 'low.png').exists()
    for flag in ('--cost-penalty', '--flops-budget'):
        status, cap = infer(setup / 'ghost.py', setup / 'train.pth', src,
                            tmp_path / 'o3.png', flag, '0.5', capsys=capsys)
        assert status == 1 and f'{flag} needs a ClassSR model' in cap.err
