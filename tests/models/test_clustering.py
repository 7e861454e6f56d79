"""Clustering initialisation (GhostSR Eq. 7-9)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmagic.registry import MODELS

from ghostsr_mm.models.clustering import cluster_filters, cluster_init
from helpers import synthetic_images

EDSR = dict(
    in_channels=3,
    out_channels=3,
    mid_channels=16,
    num_blocks=2,
    upscale_factor=2)


def duplicate_pairs(state, names, seed=0):
    """Make the filters of each named layer come in identical pairs at
    random positions; returns the pairs."""
    gen = torch.Generator().manual_seed(seed)
    pairs = {}
    for name in names:
        w, b = state[f'{name}.weight'], state[f'{name}.bias']
        perm = torch.randperm(w.shape[0], generator=gen)
        half = w.shape[0] // 2
        first, second = perm[:half], perm[half:]
        w[second] = w[first]
        b[second] = b[first]
        pairs[name] = {
            frozenset((int(i), int(j)))
            for i, j in zip(first, second)
        }
    return pairs


def test_cluster_filters_hand_example():
    # Four filters: two near (1, 0), two near (0, 1); two clusters.
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.0, 1.2]])
    c = cluster_filters(w.view(4, 2, 1, 1), 2)
    # Centroids (0.95, 0.05) and (0, 1.1): filter 0 (distance 0.0707) beats
    # filter 2, and filter 1 (0.1) ties filter 3 (0.1) -> the first.
    assert c.keep.tolist() == [0, 1]
    assert c.src.tolist() == [0, 1, 0, 1]
    assert c.ghost.tolist() == [2, 3]
    assert c.cluster_sizes == [2, 2]
    np.testing.assert_allclose(c.distance, [0, 0, np.sqrt(0.02), 0.2],
                               rtol=1e-6)


def test_identical_filters_and_singletons():
    # Fewer distinct filters than clusters: 6 filters, 2 distinct, 3
    # clusters. Every cluster still gets an intrinsic filter.
    w = torch.tensor([[1.0], [1.0], [1.0], [5.0], [5.0], [5.0]])
    c = cluster_filters(w.view(6, 1, 1, 1), 3)
    assert len(c.keep) == 3 and len(set(c.keep.tolist())) == 3
    assert sorted(c.cluster_sizes) == [1, 2, 3]
    assert c.distance.max() == 0  # every ghost is an exact copy
    # As many clusters as filters: all singletons.
    c = cluster_filters(torch.randn(4, 2, 3, 3), 4)
    assert c.keep.tolist() == [0, 1, 2, 3] and len(c.ghost) == 0


def test_grouped_clusters_stay_in_their_group():
    w = torch.randn(8, 2, 3, 3)
    c = cluster_filters(w, 4, groups=2)
    # Group 0 owns outputs 0-3 and intrinsic 0-1; group 1 the rest.
    assert all(k < 4 for k in c.keep[:2]) and all(k >= 4 for k in c.keep[2:])
    assert all(c.src[o] < 2 for o in range(4))
    assert all(c.src[o] >= 2 for o in range(4, 8))


def test_duplicate_pairs_are_found_and_output_reproduced():
    torch.manual_seed(0)
    regular = MODELS.build(dict(type='EDSRNet', **EDSR))
    state = regular.state_dict()
    ghost = MODELS.build(dict(type='GhostEDSRNet', **EDSR))
    names = [n for n, _ in ghost.ghost_layers()]
    pairs = duplicate_pairs(state, names)
    regular.load_state_dict(state)
    report = cluster_init(ghost, state)
    for name in names:
        c = report.layers[name]
        found = {
            frozenset((int(c.keep[c.src[g]]), int(g)))
            for g in c.ghost
        }
        assert found == pairs[name], name
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        ref = regular.eval()(x)
        out = ghost.eval()(x)  # untrained shifts: offset 0 in eval
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def train_redundant_edsr(iters=300, noise=0.1):
    """A small EDSR trained on generated images (x2, bicubic LR) whose
    ghost-layer filters are redundant, as the paper observes in trained SR
    models (Fig. 1): a few hundred iterations from a random start give a
    network without such redundancy, so the filters start in pairs (one a
    slightly perturbed copy of the other, at random positions) and are
    trained with the gradients of each pair tied."""
    torch.manual_seed(0)
    model = MODELS.build(dict(type='EDSRNet', **EDSR))
    names = [
        n for n, _ in MODELS.build(dict(type='GhostEDSRNet',
                                        **EDSR)).ghost_layers()
    ]
    state = model.state_dict()
    pairs = duplicate_pairs(state, names)
    for name in names:
        w = state[f'{name}.weight']
        w += noise * w.std() * torch.randn_like(w)
    model.load_state_dict(state)
    tied = [(model.get_submodule(n), [tuple(p) for p in pairs[n]])
            for n in names]
    hr = torch.stack([
        torch.from_numpy(img).permute(2, 0, 1).float() / 255
        for _, img in synthetic_images(8, size=48, seed=1)
    ])
    lr = F.interpolate(hr, scale_factor=0.5, mode='bicubic',
                       antialias=True).clamp(0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(iters):
        idx = torch.randint(0, 8, (4, ))
        loss = F.l1_loss(model(lr[idx]), hr[idx])
        opt.zero_grad()
        loss.backward()
        for conv, conv_pairs in tied:
            for p in (conv.weight, conv.bias):
                for i, j in conv_pairs:
                    p.grad[i] = p.grad[j] = (p.grad[i] + p.grad[j]) / 2
        opt.step()
    return model, lr


def psnr(a, b):
    return float(10 * torch.log10(1 / F.mse_loss(a, b)))


@pytest.mark.slow
def test_clustering_beats_order_initialisation():
    parent, lr = train_redundant_edsr()
    state = parent.state_dict()
    outputs = {}
    for method in ('kmeans', 'order'):
        ghost = MODELS.build(dict(type='GhostEDSRNet', **EDSR))
        cluster_init(ghost, state, method=method)
        with torch.no_grad():
            outputs[method] = ghost.eval()(lr)
    with torch.no_grad():
        ref = parent.eval()(lr)
    clustered, ordered = psnr(outputs['kmeans'], ref), psnr(
        outputs['order'], ref)
    assert clustered > ordered + 6.0, (clustered, ordered)


def test_missing_layers_and_shape_mismatch():
    regular = MODELS.build(dict(type='EDSRNet', **EDSR)).state_dict()
    ghost = MODELS.build(dict(type='GhostEDSRNet', **EDSR))
    partial = {
        k: v
        for k, v in regular.items() if not k.startswith('conv_after_body')
    }
    with pytest.warns(UserWarning, match='conv_after_body'):
        report = cluster_init(ghost, partial)
    assert report.missing == ['conv_after_body']
    assert 'body.0.conv1' in report.layers

    bad = dict(regular)
    bad['body.1.conv2.weight'] = torch.zeros(16, 8, 3, 3)
    with pytest.raises(ValueError,
                       match=r"'body.1.conv2'.*\(16, 8, 3, 3\).*"
                       r'\(16, 16, 3, 3\)'):
        cluster_init(ghost, bad)
    bad = dict(regular)
    bad['conv_first.weight'] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(ValueError, match=r'conv_first.weight.*\(8, 3, 3, 3\)'):
        cluster_init(ghost, bad)


def test_carn_m_grouped_and_shared_layers(tmp_path):
    cfg = dict(mid_channels=16, efficient=True)
    regular = MODELS.build(dict(type='CARNNet', **cfg))
    ghost = MODELS.build(dict(type='GhostCARNNet', **cfg))
    report = cluster_init(ghost, regular.state_dict())
    # One entry per shared layer, grouped convs clustered within groups.
    assert 'blocks.0.blocks.0.conv1' in report.layers
    assert not any('blocks.0.blocks.1' in n for n in report.layers)
    c = report.layers['blocks.0.blocks.0.conv1']
    per_out, per_in = 16 // 4, 8 // 4
    for o in range(16):
        assert c.src[o] // per_in == o // per_out


def test_refuses_checkpoints_that_initialise_nothing():
    """Another architecture's or an already-ghost checkpoint would leave a
    random model: refused, saying why; unused tensors are reported."""
    ghost = MODELS.build(dict(type='GhostEDSRNet', **EDSR))
    rdn = MODELS.build(
        dict(type='RDNNet', in_channels=3, out_channels=3, mid_channels=8,
             num_blocks=1, num_layers=1, channel_growth=4)).state_dict()
    with pytest.raises(ValueError, match=r'none of the \d+ ghost layers.*'
                       r'body.0.conv1.weight.*regular version'):
        cluster_init(ghost, rdn)
    already = MODELS.build(dict(type='GhostEDSRNet', **EDSR)).state_dict()
    with pytest.raises(ValueError, match='holds ghost layers already'):
        cluster_init(ghost, already)
    # Ghost layers found but most regular tensors not: another model.
    regular = MODELS.build(dict(type='EDSRNet', **EDSR)).state_dict()
    ghost_only = {k: v for k, v in regular.items() if k.startswith('body.')}
    with pytest.raises(ValueError, match=r'only 0 of the \d+ regular '
                       'tensors'):
        cluster_init(ghost, ghost_only)
    # A regular model has no ghost layer to initialise.
    with pytest.raises(ValueError, match='EDSRNet has no ghost layer'):
        cluster_init(MODELS.build(dict(type='EDSRNet', **EDSR)), regular)
    extra = dict(regular, **{'head.extra.weight': torch.zeros(2)})
    report = cluster_init(ghost, extra)
    assert report.unused == ['head.extra.weight']
    assert any('head.extra.weight' in line for line in report.lines())


@pytest.mark.parametrize('kind, cfg, screened', [
    # EDSR: conv2 reads relu(conv1); conv1 of the next block and
    # conv_after_body read the residual stream (a sum): not screened.
    ('EDSRNet', EDSR, {'body.0.conv2', 'body.1.conv2'}),
    # CARN: conv2 after conv1 in each residual block; conv1 after a block
    # input or a 1x1 fusion, and the x2 upsampler after the body: not.
    ('CARNNet', dict(mid_channels=16, multi_scale=False, upscale_factor=2),
     {f'blocks.{b}.blocks.{r}.conv2' for b in range(3) for r in range(3)}),
    # CARN-M: its residual blocks are group convs, left unscreened.
    ('CARNNet', dict(mid_channels=16, efficient=True), set()),
])
def test_eq9_screens_by_the_real_data_flow(monkeypatch, kind, cfg,
                                           screened):
    """Eq. 9 drops a layer's input channels that the layer feeding it made
    ghosts, only where that layer's output is its whole input. Before, any
    layer whose in_channels equalled the previous ghost layer's
    out_channels was screened, across residual sums and 1x1 fusions."""
    from ghostsr_mm.models import clustering
    seen = {}
    original = clustering.cluster_filters

    def recording(weight, num_intrinsic, groups, seed):
        seen[len(seen)] = weight.shape[1]
        return original(weight, num_intrinsic, groups, seed)

    monkeypatch.setattr(clustering, 'cluster_filters', recording)
    regular = MODELS.build(dict(type=kind, **cfg))
    ghost = MODELS.build(dict(type=f'Ghost{kind}', **cfg))
    report = cluster_init(ghost, regular.state_dict())
    names = list(report.layers)
    layers = dict(ghost.ghost_layers())
    assert len(seen) == len(names)
    for i, name in enumerate(names):
        full = layers[name].conv.weight.shape[1]
        feeding = ghost.screened_inputs().get(name)
        expected = (layers[feeding].num_intrinsic if name in screened else
                    full)
        assert seen[i] == expected, name
    assert {n for i, n in enumerate(names) if seen[i] < layers[n].conv.weight
            .shape[1]} == screened
