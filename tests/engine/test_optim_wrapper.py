"""BF16AmpOptimWrapper: bfloat16 autocast on the model's device, float32
parameters and gradients, no loss scaling."""
import torch
import torch.nn as nn
from mmagic.registry import OPTIM_WRAPPERS

import ghostsr_mm  # noqa: F401
from ghostsr_mm.models.layers import GhostConv2d


def test_forward_in_bfloat16_update_in_float32():
    torch.manual_seed(0)
    model = nn.Sequential(GhostConv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 3, 3, padding=1))
    wrapper = OPTIM_WRAPPERS.build(dict(
        type='BF16AmpOptimWrapper',
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    x = torch.rand(2, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)  # the same Gumbel noise in both forward passes
    with wrapper.optim_context(model):
        out = model(x)
        loss = out.float().abs().mean()
    assert out.dtype == torch.bfloat16
    torch.manual_seed(1)
    with torch.no_grad():
        expected = model(x)
    assert expected.dtype == torch.float32  # only inside the context
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    wrapper.step()
    for k, p in model.named_parameters():
        assert p.dtype == grads[k].dtype == torch.float32
        assert torch.isfinite(grads[k]).all()
        # Plain SGD: no loss scale between the gradient and the step.
        torch.testing.assert_close(p.detach(), before[k] - 0.1 * grads[k])
