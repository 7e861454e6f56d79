"""The shift oracle finds an offset that is clearly best."""
import pytest
import torch
from mmagic.registry import MODELS

from ghostsr_mm.models.layers import convert_to_inference, ghost_layers
from ghostsr_mm.analysis.shift_oracle import shift_oracle

GHOST = dict(type='GhostEDSRNet', in_channels=3, out_channels=3,
             mid_channels=8, num_blocks=1, upscale_factor=2)


def test_oracle_finds_the_offset_that_made_the_targets():
    """Targets made by the model with one layer moved by (1, -1): for that
    layer the oracle's best is (1, -1) with zero loss, the model's own
    offset (0, 0) has a regret; the other layers' best stays (0, 0)."""
    torch.manual_seed(0)
    model = convert_to_inference(MODELS.build(GHOST))
    layers = dict(ghost_layers(model))
    target = layers['body.0.conv2']
    lr = [torch.rand(2, 3, 12, 14), torch.rand(1, 3, 9, 11)]
    target.offsets[target.ghost_channels] = torch.tensor([1, -1])
    with torch.no_grad():
        batches = [(x, model(x)) for x in lr]
    target.offsets[target.ghost_channels] = torch.tensor([0, 0])
    results = {r.name: r for r in shift_oracle(model, batches)}
    assert set(results) == set(layers)
    moved = results['body.0.conv2']
    assert moved.learned == (0, 0) and moved.best == (1, -1)
    assert moved.losses[(1, -1)] == 0 and moved.regret > 1e-4
    assert len(moved.losses) == 9
    # Every scan holds the other layers at their own offsets, so each
    # layer's learned offset gives the same loss: the model's.
    for r in results.values():
        assert r.losses[r.learned] == pytest.approx(moved.losses[(0, 0)])
    # The model is left as it was.
    assert (target.offsets[target.ghost_channels] == 0).all()


def test_oracle_refuses_learnable_layers():
    model = MODELS.build(GHOST)
    with pytest.raises(ValueError, match='inference graph'):
        shift_oracle(model, [(torch.rand(1, 3, 8, 8),
                              torch.rand(1, 3, 16, 16))])


def test_oracle_choose_keeps_each_layers_best_offset():
    """choose=True: the moved layer ends at (1, -1), which reproduces the
    targets exactly; layers whose best is their own offset keep it."""
    torch.manual_seed(0)
    model = convert_to_inference(MODELS.build(GHOST))
    target = dict(ghost_layers(model))['body.0.conv2']
    x = torch.rand(2, 3, 12, 14)
    target.offsets[target.ghost_channels] = torch.tensor([1, -1])
    with torch.no_grad():
        batches = [(x, model(x))]
    target.offsets[target.ghost_channels] = torch.tensor([0, 0])
    results = shift_oracle(model, batches, choose=True)
    assert [r.learned for r in results] == [(0, 0)] * 3
    chosen = {name: tuple(layer.offsets[layer.ghost_channels][0].tolist())
              for name, layer in ghost_layers(model)}
    assert chosen == {r.name: r.best for r in results}
    assert chosen['body.0.conv2'] == (1, -1)
    with torch.no_grad():
        assert torch.equal(model(x), batches[0][1])
