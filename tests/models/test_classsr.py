"""ClassSR: Class-Module, losses, routing, and the tiler with a router."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ghostsr_mm  # noqa: F401
from ghostsr_mm.analysis import count_flops
from ghostsr_mm.apis import (branch_flops, calibrate_cost_penalty,
                             routed_inference, routing_flops, routing_map,
                             routing_picture, tile_layout, tiled_inference)
from ghostsr_mm.models import ClassSRClassifier, ClassSRNet
from ghostsr_mm.models.losses import AverageLoss, ClassLoss


class Nearest(nn.Module):
    """An identity-like branch: nearest upsampling, times a constant."""

    def __init__(self, scale=2, gain=1.0):
        super().__init__()
        self.scale, self.gain = scale, gain
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return F.interpolate(x, scale_factor=self.scale) * self.gain


class ByMean(nn.Module):
    """A classifier routing by mean brightness: < 1/3 -> 0, < 2/3 -> 1,
    else 2 (as logits)."""
    in_channels = 3

    def forward(self, x):
        k = (x.mean(dim=(1, 2, 3)) * 3).clamp(max=2.999).floor().long()
        return F.one_hot(k, 3).float() * 10


# Three small CARN-M x2 branches (simple to hard).
TINY_BRANCHES = [
    dict(type='CARNNet', mid_channels=c, upscale_factor=2, efficient=True,
         num_blocks=1) for c in (8, 12, 16)
]


def nearest_classsr(gains=(1.0, 1.0, 1.0), scale=2):
    net = ClassSRNet([Nearest(scale, g) for g in gains])
    net.classifier = ByMean()
    return net.eval()


def test_classifier_is_the_papers_class_module():
    clf = ClassSRClassifier()
    # conv 3->128 k4 (+bias), three 1x1 128->128, 1x1 128->32, linear 32->3.
    expected = (3 * 128 * 16 + 128) + 3 * (128 * 128 + 128) + \
        (128 * 32 + 32) + (32 * 3 + 3)
    assert expected == 60035
    assert sum(p.numel() for p in clf.parameters()) == expected
    assert clf(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert clf(torch.rand(1, 3, 7, 13)).shape == (1, 3)  # any size >= 4
    with pytest.raises(ValueError, match='at least 4x4'):
        clf(torch.rand(1, 3, 3, 8))
    with pytest.raises(ValueError, match=r'expected \(N, 3, H, W\)'):
        clf(torch.rand(1, 1, 32, 32))
    assert ClassSRClassifier(in_channels=1)(torch.rand(1, 1, 8, 8)).shape \
        == (1, 3)


def test_class_loss_on_hand_computed_tables():
    loss = ClassLoss()
    # one-hot: spread 2 = M - 1 -> 0; uniform: spread 0 -> 2;
    # (0.5, 0.5, 0): |0| + |0.5| + |0.5| = 1 -> 1.
    probs = torch.tensor([[1.0, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]])
    for row, value in zip(probs, (0.0, 2.0, 1.0)):
        assert float(loss(row[None])) == pytest.approx(value, abs=1e-6)
    assert float(loss(probs)) == pytest.approx(1.0, abs=1e-6)  # mean
    assert float(ClassLoss(0.5)(probs)) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match=r'\(N, M >= 2\)'):
        loss(torch.rand(4))


def test_average_loss_on_hand_computed_tables():
    loss = AverageLoss(loss_weight=1.0)
    # B = 3, M = 3, all to class 0: column sums (3, 0, 0), B/M = 1 ->
    # |3-1| + |0-1| + |0-1| = 4.
    all_first = torch.tensor([[1.0, 0, 0]] * 3)
    assert float(loss(all_first)) == pytest.approx(4.0)
    assert float(AverageLoss()(all_first)) == pytest.approx(24.0)  # weight 6
    balanced = torch.eye(3)
    assert float(loss(balanced)) == pytest.approx(0.0)
    # B = 4, M = 2: sums (2.5, 1.5), B/M = 2 -> 0.5 + 0.5.
    two = torch.tensor([[0.5, 0.5], [1.0, 0], [0.75, 0.25], [0.25, 0.75]])
    assert float(loss(two)) == pytest.approx(1.0)
    # The official code's form divides by 4 B / M: 4 / (4 * 3 / 3) = 1;
    # 1 / (4 * 4 / 2) = 1 / 8.
    official = AverageLoss(loss_weight=1.0, normalize=True)
    assert float(official(all_first)) == pytest.approx(1.0)
    assert float(official(two)) == pytest.approx(0.125)


def collapsed_classifier_after(steps, with_average_loss):
    """A classifier whose bias sends every sub-image to class 0, trained on
    one batch; returns its soft and hard shares of the batch."""
    torch.manual_seed(0)
    clf = ClassSRClassifier()
    with torch.no_grad():
        clf.fc.bias.copy_(torch.tensor([6.0, 0.0, 0.0]))
    x = torch.rand(48, 3, 32, 32) * torch.linspace(0.2, 1, 48).view(
        -1, 1, 1, 1)
    opt = torch.optim.Adam(clf.parameters(), lr=3e-4)
    class_loss, average_loss = ClassLoss(), AverageLoss()
    for _ in range(steps):
        probs = clf(x).softmax(1)
        loss = class_loss(probs)
        if with_average_loss:
            loss = loss + average_loss(probs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        probs = clf(x).softmax(1)
    return probs.mean(0), torch.bincount(probs.argmax(1), minlength=3) / 48


@pytest.mark.slow
def test_average_loss_pulls_a_collapsed_classifier_back_to_balance():
    soft, hard = collapsed_classifier_after(0, True)
    assert hard[0] == 1.0 and soft[0] > 0.99
    soft, hard = collapsed_classifier_after(150, True)
    torch.testing.assert_close(soft, torch.full((3, ), 1 / 3), rtol=0,
                               atol=0.05)
    assert hard[0] <= 0.5, hard
    # The Class-Loss alone keeps the collapse (one-hot is its optimum).
    soft, hard = collapsed_classifier_after(150, False)
    assert hard[0] == 1.0 and soft[0] > 0.99


def test_training_mixes_all_branches_by_the_probabilities():
    torch.manual_seed(0)
    net = ClassSRNet(TINY_BRANCHES).train()
    x = torch.rand(3, 3, 12, 12)
    out, probs = net(x, return_probs=True)
    p = net.classifier(x).softmax(1)
    expected = sum(p[:, k, None, None, None] * net.branches[k](x)
                   for k in range(3))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(probs, p)
    out.mean().backward()  # every branch and the classifier get gradients
    assert all(p.grad is not None for p in net.parameters())


def test_eval_routes_each_sub_image_to_its_branch_once_per_batch():
    torch.manual_seed(0)
    net = ClassSRNet(TINY_BRANCHES).eval()
    x = torch.rand(7, 3, 12, 12)
    classes = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    calls = []
    for k, b in enumerate(net.branches):
        b.register_forward_hook(
            lambda m, args, out, k=k: calls.append((k, args[0].shape[0])))
    out = net.route(x, classes)
    assert sorted(calls) == [(0, 2), (1, 1), (2, 4)]
    for i, k in enumerate(classes.tolist()):
        torch.testing.assert_close(out[i], net.branches[k](x[i:i + 1])[0])
    # forward() routes by the classifier's argmax.
    out, probs = net(x, return_probs=True)
    torch.testing.assert_close(out, net.route(x, probs.argmax(1)))


def test_flop_counts_leave_every_module_in_its_mode():
    """count_flops traces in eval mode and restores each module's own
    mode, so branch_flops and relative_costs change no mode, mixed ones
    included."""
    net = ClassSRNet(TINY_BRANCHES).train()
    net.branches[1].eval()
    before = [m.training for m in net.modules()]
    flops = branch_flops(net, 32)
    net.relative_costs()
    assert [m.training for m in net.modules()] == before
    assert flops['branches'] == [count_flops(b, (3, 32, 32))
                                 for b in net.branches]
    assert [m.training for m in net.modules()] == before


def test_cost_penalty_moves_eval_routing_by_the_branch_costs():
    torch.manual_seed(0)
    net = ClassSRNet(TINY_BRANCHES).eval()
    flops = torch.tensor([float(count_flops(b, (3, 32, 32)))
                          for b in net.branches])
    torch.testing.assert_close(net.relative_costs(), flops / flops[2])
    assert flops[0] < flops[1] < flops[2]
    x = torch.rand(9, 3, 12, 12)
    log_p = net.classifier(x).log_softmax(1)
    for penalty in (0.0, 0.05, -0.05, 1e3, -1e3):
        net.cost_penalty = penalty
        expected = (log_p - penalty * flops / flops[2]).argmax(1)
        torch.testing.assert_close(net(x), net.route(x, expected))
    net.cost_penalty = 1e3
    assert net.choose(log_p).tolist() == [0] * 9
    assert net.choose(log_p, -1e3).tolist() == [2] * 9
    assert torch.equal(net.choose(log_p, 0.0), log_p.argmax(1))
    with pytest.raises(ValueError, match='cost_penalty.*finite'):
        ClassSRNet(TINY_BRANCHES, cost_penalty=float('nan'))


@pytest.mark.slow
def test_calibrated_cost_penalty_meets_a_flops_budget_as_closely_as_it_can():
    """On images of other sizes than a tile: routed_inference with the
    penalty costs at most the budget (its own routing, counted by
    routing_flops), and no penalty of a sweep comes closer."""
    torch.manual_seed(0)
    net = ClassSRNet(TINY_BRANCHES).eval()
    with torch.no_grad():  # spread the sub-images' probabilities
        net.classifier.fc.weight.normal_(0, 30)
    images = [torch.rand(1, 3, 40, 50), torch.rand(2, 3, 20, 9)]
    flops = branch_flops(net, 12)

    def cost(penalty):
        net.cost_penalty = penalty
        counts = sum(torch.bincount(
            routed_inference(net, lr, 12, 2, 5)[1].flatten(), minlength=3)
            for lr in images)
        return routing_flops(counts.tolist(), flops)['ratio']

    # (the classifier costs more than the simple branch on 12x12 tiles)
    cheapest, costliest = [(flops['branches'][k] + flops['classifier']) /
                           flops['branches'][2] for k in (0, 2)]
    sweep = {q: cost(q) for q in np.linspace(-30, 30, 241).tolist()}
    assert len(set(sweep.values())) > 4  # the penalty moves the routing
    for budget in (cheapest + 0.01, cheapest + 0.2, cheapest + 0.5, 1.2,
                   costliest):
        penalty = calibrate_cost_penalty(net, images, budget, 12, 2, 5)
        spent = cost(penalty)
        assert spent <= budget
        # No penalty routes closer to the budget without passing it.
        assert not [q for q, c in sweep.items() if spent < c <= budget]
    assert cost(calibrate_cost_penalty(net, images, 5.0, 12, 2, 5)) == \
        pytest.approx(costliest)
    with pytest.raises(ValueError, match='below the cheapest routing'):
        calibrate_cost_penalty(net, images, cheapest - 0.01, 12, 2, 5)
    for bad in (0.0, float('nan'), '0.5'):
        with pytest.raises(ValueError, match='flops_ratio.*positive number'):
            calibrate_cost_penalty(net, images, bad, 12, 2, 5)
    with pytest.raises(ValueError, match='no calibration image'):
        calibrate_cost_penalty(net, [], 0.8)


def test_branches_must_agree_on_the_scale():
    with pytest.raises(ValueError, match='different factors'):
        ClassSRNet([dict(type='CARNNet', upscale_factor=2),
                    dict(type='CARNNet', upscale_factor=4)])
    with pytest.raises(ValueError, match='at least two'):
        ClassSRNet([dict(type='CARNNet')])


@pytest.mark.parametrize('h,w', [(32, 32), (70, 45), (20, 9), (97, 64),
                                 (33, 200)])
@pytest.mark.parametrize('tile,overlap', [(32, 2), (16, 0), (12, 5),
                                          (32, 8)])
def test_blended_tiles_reassemble_an_identity_like_model_exactly(
        h, w, tile, overlap):
    lr = torch.rand(2, 3, h, w)
    sr = tiled_inference(Nearest(3), lr, tile, overlap, batch_size=5,
                         blend=True)
    torch.testing.assert_close(sr, F.interpolate(lr, scale_factor=3),
                               rtol=0, atol=1e-6)


def test_blend_weights_fall_linearly_across_the_shared_band():
    # Two 8-pixel tiles sharing 4 pixels (overlap 2), a model outputting 0
    # for the first tile and 1 for the second: the blend ramps 1/8, 3/8,
    # 5/8, 7/8 across the band.
    lr = torch.zeros(1, 1, 1, 12)

    class TileIndex(nn.Module):
        def forward(self, x):
            return torch.arange(x.shape[0], dtype=torch.float32).view(
                -1, 1, 1, 1).expand_as(x).clone()

    out = tiled_inference(TileIndex(), lr, 8, 2, batch_size=2, blend=True)
    torch.testing.assert_close(
        out[0, 0, 0],
        torch.tensor([0, 0, 0, 0, 1 / 8, 3 / 8, 5 / 8, 7 / 8, 1, 1, 1, 1.]))


@pytest.mark.parametrize('h,w,tile,overlap', [(70, 45, 32, 2), (20, 9, 32, 2),
                                              (64, 64, 16, 4)])
def test_routed_inference_with_identity_like_branches_is_exact(
        h, w, tile, overlap):
    net = nearest_classsr()
    lr = torch.rand(1, 3, h, w)
    sr, classes = routed_inference(net, lr, tile, overlap, batch_size=4)
    torch.testing.assert_close(sr, F.interpolate(lr, scale_factor=2),
                               rtol=0, atol=1e-6)
    assert classes.shape == (1, len(tile_layout(h, w, tile, overlap)))


def test_routed_output_equals_the_chosen_branch_on_each_tile():
    # Branches differ (gains 1, 2, 3): every output pixel is the blend of
    # the chosen branch's output on each tile covering it.
    net = nearest_classsr(gains=(1.0, 2.0, 3.0))
    lr = torch.linspace(0, 1, 60).expand(1, 3, 60, 60) + \
        0.05 * torch.rand(1, 3, 60, 60)  # dark to bright
    tile, overlap = 16, 2
    sr, classes = routed_inference(net, lr, tile, overlap, batch_size=3)
    layout = tile_layout(60, 60, tile, overlap)
    assert set(classes.flatten().tolist()) == {0, 1, 2}
    per_tile = [net.branches[k](lr[:, :, y:y + tile, x:x + tile])
                for ((y, x), _), k in zip(layout, classes[0].tolist())]
    outputs = iter(per_tile)
    expected = tiled_inference(
        lambda p: torch.cat([next(outputs) for _ in range(p.shape[0])]),
        lr, tile, overlap, batch_size=3, blend=True)
    torch.testing.assert_close(sr, expected)


def test_routing_flops_equals_the_hand_computed_value():
    flops = dict(classifier=10, branches=[100, 200, 400])
    # (2*100 + 1*200 + 1*400) / 4 + 10 = 210; 210 / 400.
    r = routing_flops([2, 1, 1], flops)
    assert r['flops'] == pytest.approx(210)
    assert r['ratio'] == pytest.approx(0.525)
    assert r['shares'] == [0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match='no sub-image'):
        routing_flops([0, 0, 0], flops)
    with pytest.raises(ValueError, match='2 counts for 3 branches'):
        routing_flops([1, 1], flops)


def test_routing_map_and_picture():
    # A 20x12 image in 8-pixel tiles with overlap 2: rows start 0, 4, 8, 12,
    # columns 0, 4; classes in layout order.
    layout = tile_layout(20, 12, 8, 2)
    classes = torch.arange(len(layout)) % 3
    cmap = routing_map(classes, 20, 12, 8, 2)
    for (_, (y0, y1, x0, x1)), k in zip(layout, classes.tolist()):
        assert (cmap[y0:y1, x0:x1] == k).all()
    img = np.full((40, 24, 3), 0.5, np.float32)
    pic = routing_picture(img, cmap, alpha=0.5)
    # Pixel (0, 0) is class 0 (green (0, .75, 0)); HR pixel of LR (y0, x0)
    # of the last tile has its class.
    np.testing.assert_allclose(pic[0, 0], [0.25, 0.625, 0.25])
    (_, (y0, _, x0, _)), k = layout[-1], classes[-1].item()
    red = {0: [0.25, 0.625, 0.25], 1: [0.75, 0.65, 0.25],
           2: [0.7, 0.25, 0.25]}[k]
    np.testing.assert_allclose(pic[2 * y0, 2 * x0], red, rtol=1e-6)
    with pytest.raises(ValueError, match='does not divide'):
        routing_picture(np.zeros((41, 24)), cmap)
    with pytest.raises(ValueError, match='classes for the'):
        routing_map(classes[:-1], 20, 12, 8, 2)


def tiny_classsr_model(**kwargs):
    from mmagic.registry import MODELS
    return MODELS.build(dict(
        type='ClassSR',
        _scope_='mmagic',
        generator=dict(type='ClassSRNet', branches=TINY_BRANCHES),
        data_preprocessor=dict(type='DataPreprocessor', mean=[0.] * 3,
                               std=[255.] * 3), **kwargs))


def test_classsr_training_losses_are_the_papers_weighted_terms():
    from mmagic.structures import DataSample
    torch.manual_seed(0)
    model = tiny_classsr_model().train()
    x, gt = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 16, 16)
    samples = DataSample(gt_img=gt)
    losses = model(x, samples, mode='loss')
    sr, probs = model.generator(x, return_probs=True)
    assert float(losses['loss_pix']) == pytest.approx(
        2000 * float((sr - gt).abs().mean()), rel=1e-5)
    assert float(losses['loss_class']) == pytest.approx(
        float(ClassLoss()(probs)), rel=1e-5)
    # Divided by 4B/M = 16/3 (the official code's normalisation).
    assert float(losses['loss_average']) == pytest.approx(
        6 * float((probs.sum(0) - 4 / 3).abs().sum()) / (16 / 3), rel=1e-5)
    hard = torch.bincount(probs.argmax(1), minlength=3) / 4
    assert [float(losses[f'share_{n}']) for n in ('simple', 'medium',
                                                   'hard')] == hard.tolist()
    with pytest.raises(ValueError, match=r"unknown `test_cfg` keys \['tiles'\]"):
        tiny_classsr_model(test_cfg=dict(tiles=32))
    with pytest.raises(ValueError, match='larger than twice the overlap'):
        tiny_classsr_model(test_cfg=dict(tile=8, overlap=4))


def test_classsr_predictions_and_the_routing_metric():
    from mmagic.structures import DataSample
    from ghostsr_mm.evaluation import ClassSRRouting
    torch.manual_seed(0)
    model = tiny_classsr_model(test_cfg=dict(tile=16, overlap=2)).eval()
    x = torch.rand(2, 3, 40, 30)  # rows 0, 12, 24; columns 0, 12, 14
    samples = DataSample(gt_img=torch.rand(2, 3, 80, 60))
    with torch.no_grad():
        preds = model(x, samples, mode='predict')
        sr, classes = routed_inference(model.generator, x, 16, 2, 64)
    for i, pred in enumerate(preds):
        counts = pred.output.class_counts
        assert counts.tolist() == torch.bincount(
            classes[i], minlength=3).tolist()
        assert counts.sum() == 9
    flops = model.branch_flops()
    metric = ClassSRRouting(prefix='Set')
    metric.process(None, [p.to_dict() for p in preds])
    result = metric.compute_metrics(metric.results)
    total = sum(p.output.class_counts for p in preds)
    shares = (total / total.sum()).tolist()
    assert [result[f'share_{n}'] for n in ('simple', 'medium', 'hard')] == \
        pytest.approx(shares)
    expected = (sum(s * f for s, f in zip(shares, flops['branches'])) +
                flops['classifier']) / flops['branches'][2]
    assert result['flops_ratio'] == pytest.approx(expected)
    with pytest.raises(KeyError, match='needs a ClassSR model'):
        metric.process(None, [dict(output=dict(pred_img=sr[0]))])


ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLASSSR_CONFIGS = sorted(
    glob.glob(osp.join(ROOT, 'configs', 'classsr', '*.py')))


@pytest.mark.parametrize('path', CLASSSR_CONFIGS, ids=osp.basename)
def test_every_classsr_config_builds_with_ghost_branches(path):
    """Each shipped ClassSR config with its CARN-M branches made ghost (the
    widths 36 / 52 / 64, whose group convs have 4 groups): before, width 36
    failed (`groups=4 must divide ... = 18`). The intrinsic channels are
    rounded up to a multiple of the groups, and the model runs."""
    from mmengine.config import Config
    from mmagic.registry import MODELS
    cfg = Config.fromfile(path)

    def ghost(branch):
        return dict(branch, type='GhostCARNNet')

    gen = cfg.model.generator
    if gen.type == 'ClassSRNet':
        gen.branches = [ghost(b) for b in gen.branches]
    else:
        cfg.model.generator = ghost(gen)
    model = MODELS.build(cfg.model).generator
    branches = model.branches if gen.type == 'ClassSRNet' else [model]
    for branch in branches:
        layers = list(branch.ghost_layers())
        assert layers
        for name, layer in layers:
            groups = layer.conv.groups
            assert layer.num_intrinsic % groups == 0, name
            # the smallest such count at or above half the channels
            half = -(-layer.out_channels // 2)
            assert layer.num_intrinsic == -(-half // groups) * groups, name
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        out = (branches[0] if gen.type == 'ClassSRNet' else model).eval()(lr)
    assert out.shape == (1, 3, 32, 32)
