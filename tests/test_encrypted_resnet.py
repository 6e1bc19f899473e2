"""torchvision's ResNet-18, unchanged, on shared tensors: ``model.fix_precision().share(...)``
and encrypted inference of a 1×3×32×32 image, 2 and 3 parties, against plaintext torch."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn as nn
import torchvision

from conftest import mpc_workers

import syft_mpc as sy

hook = sy.TorchHook(torch)


def realistic_resnet18(seed: int = 0) -> nn.Module:
    """resnet18(num_classes=10) in eval mode with random weights whose batch norms are not the
    identity: running means, variances and affine parameters as a trained network has them
    (so that the shared running statistics and the secure inverse square root are exercised)."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.7, 1.3)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("n", [2, 3])
def test_resnet18_logits_match_plaintext(n: int) -> None:
    """Encrypted logits within 1 % of the plaintext logits' scale, with the same argmax."""
    model = realistic_resnet18()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    ps, james = mpc_workers(hook, f"resnet{n}", n)
    enc: Any = copy.deepcopy(model).fix_precision().share(*ps, crypto_provider=james)
    with torch.no_grad():
        out = enc(x.fix_prec().share(*ps, crypto_provider=james))
    assert isinstance(out, sy.SharedTensor)
    logits = out.decrypt()
    scale = ref.abs().max().item()
    err = (logits - ref).abs().max().item()
    assert err <= 0.01 * scale, (err, scale)
    assert logits.argmax().item() == ref.argmax().item()
