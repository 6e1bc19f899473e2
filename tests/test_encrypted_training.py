"""Autograd and optimizers on shared tensors; approximations; encrypted inference and training (issue 5, stages 3-4)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

from conftest import mpc_workers

import syft_mpc as sy

hook = sy.TorchHook(torch)


def _workers(n: int) -> tuple[list[sy.VirtualWorker], sy.VirtualWorker]:
    return mpc_workers(hook, f"et{n}", n)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 2)
        self.fc2 = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = F.relu(x)
        x = self.fc2(x)
        return x


@pytest.mark.parametrize("n", [2, 3])
def test_pysyft_tutorial_part_12(n: int) -> None:
    """PySyft Part 12 as written (but for the import and the worker set-up); loss within 0.05 of plaintext."""
    (bob, alice, *more), james = _workers(n)
    torch.manual_seed(0)
    model = Net()
    plain = copy.deepcopy(model)
    popt = optim.SGD(params=plain.parameters(), lr=0.1)
    pdata = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1.0]])
    ptarget = torch.tensor([[0], [0], [1], [1.0]])

    data = pdata.fix_precision().share(bob, alice, *more, crypto_provider=james, requires_grad=True)
    target = ptarget.fix_precision().share(bob, alice, *more, crypto_provider=james, requires_grad=True)
    model = model.fix_precision().share(bob, alice, *more, crypto_provider=james, requires_grad=True)
    opt = optim.SGD(params=model.parameters(), lr=0.1).fix_precision()
    for _ in range(20):
        opt.zero_grad()
        pred = model(data)
        loss = ((pred - target) ** 2).sum()
        loss.backward()
        opt.step()
        got = loss.get().float_precision()

        popt.zero_grad()
        ploss = ((plain(pdata) - ptarget) ** 2).sum()
        ploss.backward()
        popt.step()
        assert abs(float(got) - float(ploss.detach())) < 0.05
    model.get().float_precision()
    assert type(model.fc1.weight) is nn.Parameter
    assert torch.allclose(model.fc1.weight, plain.fc1.weight, atol=2e-2)


def test_gradients_match_plaintext() -> None:
    (bob, alice), james = _workers(2)
    torch.manual_seed(3)
    x, w = torch.randn(5, 4), torch.randn(3, 4)
    xs = x.fix_prec().share(bob, alice, crypto_provider=james)
    ws = w.fix_prec().share(bob, alice, crypto_provider=james, requires_grad=True)
    wp = w.clone().requires_grad_()
    (F.relu(xs @ ws.t()) * 0.5).sum().backward()
    (F.relu(x @ wp.t()) * 0.5).sum().backward()
    assert ws.grad is not None
    assert torch.allclose(ws.grad.decrypt(), wp.grad, atol=1e-3)
    # in-place updates mutate and return their input
    before = ws
    with torch.no_grad():
        assert ws.add_(ws.grad, alpha=-0.1) is before
    assert torch.allclose(ws.decrypt(), (wp - 0.1 * wp.grad).detach(), atol=1e-3)


def test_approximations_within_documented_error() -> None:
    (bob, alice), james = _workers(2)

    def enc(t: torch.Tensor) -> torch.Tensor:
        return t.fix_prec().share(bob, alice, crypto_provider=james)

    cases = [  # (name, reference, inputs, absolute tolerance, relative tolerance)
        ("exp", torch.exp, torch.linspace(-8, 2, 41), 2e-3, 1.5e-2),  # relative error ~ x^2/512 (limit approximation)
        ("reciprocal", torch.reciprocal, torch.linspace(0.5, 50, 41), 5e-3, 0.0),
        ("log", torch.log, torch.linspace(0.1, 50, 41), 5e-2, 0.0),
        ("sqrt", torch.sqrt, torch.linspace(0.1, 50, 41), 5e-2, 0.0),
        ("sigmoid", torch.sigmoid, torch.linspace(-10, 10, 41), 1e-3, 0.0),
        ("sigmoid", torch.sigmoid, torch.linspace(-500, 500, 41), 1e-3, 0.0),  # clamped: no blow-up far out
        ("tanh", torch.tanh, torch.linspace(-5, 5, 41), 2e-3, 0.0),
    ]
    for name, fn, xs, atol, rtol in cases:
        got = getattr(enc(xs), name)().decrypt()
        ref = fn(xs)
        excess = float(((got - ref).abs() - (atol + rtol * ref.abs())).max())
        assert excess <= 0, (name, excess)
    torch.manual_seed(0)
    logits = torch.randn(6, 10) * 3
    s = enc(logits)
    assert torch.allclose(F.softmax(s, 1).decrypt(), F.softmax(logits, 1), atol=5e-3)
    assert torch.allclose(F.log_softmax(s, 1).decrypt(), F.log_softmax(logits, 1), atol=2e-2)
    y = torch.randint(0, 10, (6,))
    assert abs(float(F.cross_entropy(s, y).decrypt() - F.cross_entropy(logits, y))) < 2e-2
    p = F.softmax(torch.randn(6, 10), 1)
    assert abs(float(F.cross_entropy(s, enc(p)).decrypt() - F.cross_entropy(logits, p))) < 2e-2
    assert abs(float(F.mse_loss(s, enc(p)).decrypt() - F.mse_loss(logits, p))) < 1e-2
    d = torch.rand(6, 10) + 0.5
    assert torch.allclose((s / enc(d)).decrypt(), logits / d, atol=1e-2)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("n", [2, 3])
def test_encrypted_inference_mlp_and_cnn(n: int) -> None:
    workers, james = _workers(n)
    torch.manual_seed(5)
    mlp = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 10))
    cnn = SmallCNN()
    x1, x2 = torch.randn(8, 20), torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        ref1, ref2 = mlp(x1), cnn(x2)
        for m, x, ref in ((mlp, x1, ref1), (cnn, x2, ref2)):
            m.fix_precision().share(*workers, crypto_provider=james)
            out = m(x.fix_prec().share(*workers, crypto_provider=james)).decrypt()
            assert float((out - ref).abs().max()) < 1e-2
            m.get().float_precision()
    assert torch.allclose(mlp(x1), ref1, atol=1e-3)


def test_digits_mlp_training_reaches_93_percent() -> None:
    from sklearn.datasets import load_digits

    (bob, alice), james = _workers(2)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32) / 16
    y = torch.tensor(y)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    plain = copy.deepcopy(model)

    def batches():  # type: ignore[no-untyped-def]
        for _ in range(3):
            for i in range(0, 1400, 140):
                idx = tr[i : i + 140]
                yield X[idx], F.one_hot(y[idx], 10).float()

    popt = optim.SGD(plain.parameters(), lr=0.5, momentum=0.9)
    for xb, yb in batches():
        popt.zero_grad()
        F.cross_entropy(plain(xb), yb).backward()
        popt.step()
    model.fix_precision().share(bob, alice, crypto_provider=james, requires_grad=True)
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9).fix_precision()
    for xb, yb in batches():
        xs = xb.fix_prec().share(bob, alice, crypto_provider=james)
        ys = yb.fix_prec().share(bob, alice, crypto_provider=james)
        opt.zero_grad()
        F.cross_entropy(model(xs), ys).backward()
        opt.step()
    model.get().float_precision()
    with torch.no_grad():
        acc = float((model(X[te]).argmax(1) == y[te]).float().mean())
        pacc = float((plain(X[te]).argmax(1) == y[te]).float().mean())
    assert acc >= 0.93 and abs(acc - pacc) <= 0.02, (acc, pacc)
