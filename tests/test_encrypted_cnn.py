"""CNN training on shares (conv2d / max_pool2d backward), the optimizer check and validation mode (issue 5)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

from conftest import mpc_workers

import syft_mpc as sy
from syft_mpc.encrypted import arithmetic
from syft_mpc.encrypted import tensor as shared
from syft_mpc.encrypted import validation as validation_mode

hook = sy.TorchHook(torch)


def _workers(n: int) -> tuple[list[sy.VirtualWorker], sy.VirtualWorker]:
    return mpc_workers(hook, f"cnn{n}", n)


class CNN(nn.Module):
    def __init__(self, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=stride, padding=padding)
        self.fc = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("n,stride,padding,private_input", [(2, 1, 1, True), (3, 2, 2, False)])
def test_cnn_gradients_match_plaintext(n: int, stride: int, padding: int, private_input: bool) -> None:
    ps, james = _workers(n)
    torch.manual_seed(1)
    model = CNN(stride, padding)
    plain = copy.deepcopy(model)
    x = torch.randn(4, 2, 6 if stride == 1 else 10, 6 if stride == 1 else 10)
    y = torch.tensor([0, 1, 2, 3])
    F.cross_entropy(plain(x), y).backward()
    model.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    sx = x.fix_prec().share(*ps, crypto_provider=james, requires_grad=True) if private_input else x
    target = F.one_hot(y, 4).float().fix_prec().share(*ps, crypto_provider=james)
    loss = F.cross_entropy(model(sx), target)
    loss.backward()
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        assert isinstance(p.grad, sy.SharedTensor), name
        torch.testing.assert_close(p.grad.decrypt(), q.grad, atol=3e-3, rtol=0, msg=name)
    if private_input:
        xg = x.clone().requires_grad_(True)
        F.cross_entropy(plain(xg), y).backward()
        torch.testing.assert_close(sx.grad.decrypt(), xg.grad, atol=3e-3, rtol=0)


def test_small_cnn_trains_like_plaintext() -> None:
    ps, james = _workers(2)
    torch.manual_seed(2)
    model = CNN()
    plain = copy.deepcopy(model)
    x = torch.randn(8, 2, 6, 6)
    y = torch.randint(0, 4, (8,))
    popt = optim.SGD(plain.parameters(), lr=0.2, momentum=0.5)
    model.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    opt = optim.SGD(model.parameters(), lr=0.2, momentum=0.5).fix_precision()
    sx = x.fix_prec().share(*ps, crypto_provider=james)
    target = F.one_hot(y, 4).float().fix_prec().share(*ps, crypto_provider=james)
    losses, plosses = [], []
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(sx), target)
        loss.backward()
        opt.step()
        losses.append(loss.decrypt().item())
        popt.zero_grad()
        pl = F.cross_entropy(plain(x), y)
        pl.backward()
        popt.step()
        plosses.append(pl.item())
    assert plosses[-1] < plosses[0]
    assert max(abs(a - b) for a, b in zip(losses, plosses)) < 0.02, (losses, plosses)


def test_lerp_and_sqrt_on_shares() -> None:
    ps, james = _workers(2)
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([3.0, 0.0, 1.0])
    sa = a.fix_prec().share(*ps, crypto_provider=james)
    sb = b.fix_prec().share(*ps, crypto_provider=james)
    torch.testing.assert_close(torch.lerp(sa, sb, 0.25).decrypt(), torch.lerp(a, b, 0.25), atol=1e-3, rtol=0)
    sa.sqrt_()
    torch.testing.assert_close(sa.decrypt(), a.sqrt(), atol=1e-2, rtol=0)


def test_validation_mode_checks_every_op_and_names_the_culprit(monkeypatch: pytest.MonkeyPatch) -> None:
    ps, james = _workers(2)
    torch.manual_seed(3)
    model = CNN().fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    x = torch.randn(2, 2, 6, 6).fix_prec().share(*ps, crypto_provider=james)
    calls = []
    real = validation_mode.checked
    monkeypatch.setattr(validation_mode, "checked", lambda f, *a: (calls.append(f), real(f, *a))[1])
    with sy.validation():
        assert sy.validation_enabled()
        F.softmax(model(x), 1).sum().backward()  # forward and backward pass all checks
    assert not sy.validation_enabled()
    assert torch.ops.aten.convolution_backward.default in calls and torch.ops.aten._softmax.default in calls
    real_addmm = shared.OP_TABLE[torch.ops.aten.addmm.default]  # a planted bug in the linear layer
    monkeypatch.setitem(shared.OP_TABLE, torch.ops.aten.addmm.default, lambda *a, **k: arithmetic.add(real_addmm(*a, **k), 0.01))
    model(x)  # validation off: the bug goes unnoticed
    sy.set_validation(True)
    try:
        with pytest.raises(sy.ValidationError, match=r"validation: addmm result differs from plaintext torch"):
            model(x)
    finally:
        sy.set_validation(False)
