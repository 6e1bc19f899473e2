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


def test_eval_batch_norm_folds_once_and_follows_updated_statistics() -> None:
    """Eval-mode batch norm with shared running statistics computes a = γ/√(var + eps) and
    b = β − mean·a once (≈ 30 rounds) and then costs one product; a training step that updates
    the statistics in shares gives new shares, so the next eval pass recomputes them."""
    torch.manual_seed(3)
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    plain[1].running_var.uniform_(0.5, 2.0)
    ps, james = mpc_workers(hook, "bnfold", 2)
    enc: Any = copy.deepcopy(plain).fix_precision().share(*ps, crypto_provider=james)
    x = torch.randn(2, 2, 6, 6)
    sx = x.fix_prec().share(*ps, crypto_provider=james)
    plain.eval()
    enc.eval()
    rounds = []
    for _ in range(2):
        before = sx.group.stats()
        with torch.no_grad():
            out = enc(sx).decrypt()
        after = sx.group.stats()
        rounds.append(max(after[w]["rounds"] - before[w]["rounds"] for w in after))
        torch.testing.assert_close(out, plain(x).detach(), atol=2e-3, rtol=0)
    assert rounds[1] + 20 <= rounds[0], rounds
    plain.train()
    enc.train()
    with torch.no_grad():
        plain(x * 2 + 1)
        enc((x * 2 + 1).fix_prec().share(*ps, crypto_provider=james))  # updates the shared running statistics
    plain.eval()
    enc.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(sx).decrypt(), plain(x), atol=3e-3, rtol=0)
