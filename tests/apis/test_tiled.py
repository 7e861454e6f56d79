"""Tiled inference: the receptive-field radius against an impulse response,
tiled output against a whole-image pass, and the tile layout."""
import copy

import pytest
import torch
from mmagic.registry import MODELS

from ghostsr_mm.apis import receptive_radius, tile_layout, tiled_inference
from ghostsr_mm.models.layers import convert_to_inference, ghost_layers

MODELS_SMALL = {
    'EDSR': dict(type='EDSRNet', in_channels=3, out_channels=3,
                 mid_channels=8, num_blocks=2),
    'GhostEDSR': dict(type='GhostEDSRNet', in_channels=3, out_channels=3,
                      mid_channels=8, num_blocks=2),
    'RDN': dict(type='RDNNet', in_channels=3, out_channels=3, mid_channels=8,
                num_blocks=2, num_layers=2, channel_growth=4),
    'GhostRDN': dict(type='GhostRDNNet', in_channels=3, out_channels=3,
                     mid_channels=8, num_blocks=2, num_layers=2,
                     channel_growth=4),
    'CARN': dict(type='CARNNet', mid_channels=8),
    'GhostCARN-M': dict(type='GhostCARNNet', mid_channels=8, efficient=True),
}


def build(name, scale, shift=(1, -1)):
    """The model, eval mode; ghost models as inference graphs with every
    ghost moved by ``shift`` (so the shifts widen the receptive field)."""
    torch.manual_seed(0)
    model = MODELS.build(dict(MODELS_SMALL[name], upscale_factor=scale))
    if name.startswith('Ghost'):
        model = convert_to_inference(model)
        for _, layer in ghost_layers(model):
            layer.offsets[layer.ghost_channels] = torch.tensor(shift)
    return model.eval()


@torch.no_grad()
def impulse_radius(model, scale, size=121):
    """The receptive-field radius measured, independently of the structural
    count: all-ones weights, zero biases and means (so nothing cancels and no
    ReLU cuts), a single lit LR pixel, and the LR extent of the output rows
    and columns it reaches."""
    probe = copy.deepcopy(model).double()
    for name, p in probe.named_parameters():
        p.fill_(1.0 if p.dim() > 1 else 0.0)
    for name, b in probe.named_buffers():
        if b.is_floating_point():
            b.fill_(1.0 if 'std' in name else 0.0)
    if isinstance(getattr(probe, 'mean', None), torch.Tensor):  # EDSRNet's
        probe.mean, probe.std = probe.mean * 0, probe.std * 0 + 1
    x = torch.zeros(1, 3, size, size, dtype=torch.float64)
    c = size // 2
    x[0, :, c, c] = 1
    lit = probe(x)[0].abs().sum(0) > 0
    rows = torch.nonzero(lit.any(1)).flatten() // scale
    cols = torch.nonzero(lit.any(0)).flatten() // scale
    assert rows.min() > 0 and rows.max() < size - 1, 'probe too small'
    return int(max((rows - c).abs().max(), (cols - c).abs().max()))


@pytest.mark.parametrize('name', list(MODELS_SMALL))
@pytest.mark.parametrize('scale', [2, 3])
def test_receptive_radius_matches_the_impulse_response(name, scale):
    model = build(name, scale)
    assert receptive_radius(model) == impulse_radius(model, scale)


def test_ghost_shifts_widen_the_receptive_field():
    still = build('GhostEDSR', 2, shift=(0, 0))
    moved = build('GhostEDSR', 2, shift=(1, -1))
    # 5 ghost layers (2 blocks x 2 convs + conv_after_body), one pixel each.
    assert receptive_radius(moved) == receptive_radius(still) + 5


@pytest.mark.parametrize('name', ['EDSR', 'GhostEDSR', 'CARN', 'GhostRDN'])
@pytest.mark.parametrize('size, tile, batch', [
    ((37, 53), 24, 3),      # odd sizes, several rows and columns
    ((20, 19), 24, 4),      # smaller than one tile: one patch
    ((24, 24), 24, 1),      # exactly one tile
    ((41, 30), 25, 7),      # a tile count that is not a multiple of batch
])
def test_tiled_equals_whole_image(name, size, tile, batch):
    scale = 2
    model = build(name, scale)
    overlap = receptive_radius(model)
    tile = max(tile, 2 * overlap + 1)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        whole = model(x)
    calls = []
    tiled = tiled_inference(model, x, tile, overlap, batch,
                            progress=calls.append)
    assert tiled.shape == (2, 3, size[0] * scale, size[1] * scale)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)
    n_patches = len(tile_layout(*size, tile, overlap))
    assert sum(calls) == 2 * n_patches
    assert max(calls) <= batch


def test_small_overlap_differs_from_whole_image():
    """The equality above is not vacuous: with an overlap below the radius
    the seams show."""
    model = build('GhostEDSR', 2)
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        whole = model(x)
    tiled = tiled_inference(model, x, 20, overlap=1, batch_size=4)
    assert (tiled - whole).abs().max() > 1e-3


def test_layout_covers_the_image_once_and_is_flush():
    for h, w, tile, overlap in [(37, 53, 16, 3), (100, 7, 30, 5),
                                (16, 16, 16, 0), (17, 33, 16, 0)]:
        layout = tile_layout(h, w, tile, overlap)
        seen = torch.zeros(h, w, dtype=torch.int)
        for (y, x), (y0, y1, x0, x1) in layout:
            ph, pw = min(tile, h), min(tile, w)
            assert 0 <= y and y + ph <= h and 0 <= x and x + pw <= w
            assert y <= y0 < y1 <= y + ph and x <= x0 < x1 <= x + pw
            # kept parts stay `overlap` away from inner edges
            assert y0 == 0 or y0 - y >= overlap
            assert y1 == h or y + ph - y1 >= overlap
            seen[y0:y1, x0:x1] += 1
        assert (seen >= 1).all()
        assert max(y for (y, _), _ in layout) == max(0, h - tile)


def test_bad_tiles_are_refused_before_any_work():
    with pytest.raises(ValueError, match=r'`tile` \(10\) must be larger than '
                       r'twice the overlap \(5\)'):
        tile_layout(40, 40, 10, 5)
    with pytest.raises(ValueError, match='`tile` must be a positive int'):
        tile_layout(40, 40, 0, 0)
    with pytest.raises(ValueError, match='`overlap` must be an int >= 0'):
        tile_layout(40, 40, 8, -1)
    # An image no larger than the tile is one patch, whatever the overlap.
    assert tile_layout(8, 8, 10, 5) == [((0, 0), (0, 8, 0, 8))]
    model = build('EDSR', 2)
    with pytest.raises(ValueError, match='4-D tensor'):
        tiled_inference(model, torch.rand(3, 8, 8), 8)
    with pytest.raises(ValueError, match='batch_size'):
        tiled_inference(model, torch.rand(1, 3, 8, 8), 8, 0, batch_size=0)
