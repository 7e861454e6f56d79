"""GrowingConcat: parts written into one buffer without autograd, torch.cat
with it; both give torch.cat's result, and the dense/cascading models give
the same output either way."""
import pytest
import torch
from mmagic.registry import MODELS

from ghostsr_mm.models.layers import (GhostConv2d, GrowingConcat,
                                      concat_with_torch_cat, conv_epilogue)


def grow(first, convs, relu=True):
    concat = GrowingConcat(first,
                           first.shape[1] + sum(c.out_channels for c in convs))
    for conv in convs:
        concat.append(
            lambda out: conv_epilogue(conv, concat.tensor, relu=relu,
                                      out=out), conv.out_channels)
    return concat


def plain_grow(first, convs):
    out = first
    for conv in convs:
        out = torch.cat([out, torch.relu(conv(out))], 1)
    return out


def dense_convs():
    torch.manual_seed(0)
    regular = torch.nn.Conv2d(4, 3, 3, padding=1)
    ghost = GhostConv2d(7, 6, 3, padding=1, cheap_op='fixed')
    ghost.offsets.copy_(torch.tensor([[0, 0]] * 3 + [[1, 0], [0, -1], [2, 2]]))
    return [regular, ghost]


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('n', [1, 2])
def test_in_place_parts_equal_torch_cat(channels_last, n):
    convs = dense_convs()
    x = torch.randn(n, 4, 6, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        concat = grow(x, convs)
        expected = plain_grow(x, convs)
    # One buffer of all 13 channels, each part written into its slice.
    assert concat.tensor.shape == (n, 13, 6, 5)
    assert concat._buffer is not None
    assert concat.tensor.data_ptr() == concat._buffer.data_ptr()
    assert concat._buffer.is_contiguous(
        memory_format=torch.channels_last
        if channels_last else torch.contiguous_format)
    torch.testing.assert_close(concat.tensor, expected)


def test_with_autograd_it_concatenates_and_gradients_flow():
    convs = dense_convs()
    x = torch.randn(2, 4, 6, 5, requires_grad=True)
    concat = grow(x, convs)
    assert concat._buffer is None
    concat.tensor.square().sum().backward()
    grad = x.grad.clone()
    x.grad = None
    plain_grow(x, convs).square().sum().backward()
    torch.testing.assert_close(grad, x.grad)


def test_concat_with_torch_cat_switches_off_the_buffer():
    convs = dense_convs()
    x = torch.randn(1, 4, 6, 5)
    with torch.no_grad():
        with concat_with_torch_cat():
            concat = grow(x, convs)
        assert concat._buffer is None
        torch.testing.assert_close(concat.tensor, plain_grow(x, convs))
        assert grow(x, convs)._buffer is not None  # restored on exit


def test_part_too_large_or_misannounced_raises():
    x = torch.randn(1, 4, 3, 3)
    with torch.no_grad():
        concat = GrowingConcat(x, 6)
        with pytest.raises(ValueError,
                           match='3 channels after 4 exceeds the 6'):
            concat.append(lambda out: out, 3)
    concat = GrowingConcat(x, 8)
    with pytest.raises(ValueError,
                       match='announced with 2 channels but has 4'):
        concat.append(lambda out: x, 2)
    with pytest.raises(ValueError, match=r'first.*C <= channels=2'):
        GrowingConcat(x, 2)


SMALL = {
    'GhostRDNNet': dict(in_channels=3, out_channels=3, mid_channels=16,
                        num_blocks=3, num_layers=3, channel_growth=8,
                        upscale_factor=2),
    'GhostCARNNet': dict(mid_channels=16, upscale_factor=2),
    'CARNNet': dict(mid_channels=16, efficient=True, upscale_factor=2),
}


@pytest.mark.parametrize('name', list(SMALL))
def test_models_same_output_with_and_without_autograd(name):
    torch.manual_seed(0)
    model = MODELS.build(dict(type=name, **SMALL[name])).eval()
    x = torch.rand(2, 3, 9, 7)
    with torch.no_grad():
        in_place = model(x)
    torch.testing.assert_close(model(x), in_place)  # grad mode: torch.cat
