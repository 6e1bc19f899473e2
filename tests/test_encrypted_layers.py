"""Activations and normalization layers on shared tensors against plaintext torch, 2 and 3
parties: forward and backward (methods and documented errors: ``encrypted/activations.py``,
``encrypted/normalization.py``, docs/ENCRYPTED_TENSORS.md)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SharingGroups, plain

import syft_mpc as sy
from syft_mpc.errors import UnsupportedOperationError

hook = sy.TorchHook(torch)
_groups = SharingGroups(hook, "layers")
_workers = _groups.workers



def _enc(n: int, t: torch.Tensor, requires_grad: bool = False) -> Any:
    return _groups.enc(n, t, requires_grad)


_plain = plain


def _q(t: torch.Tensor) -> torch.Tensor:
    """``t`` as 16-bit fixed point sees it (the plaintext reference runs on the encoded values)."""
    return torch.round(t.double() * 2**16) / 2**16


# ---------------------------------------------------------------------- activations

# name: (function, input range, forward tolerance, backward tolerance). Tolerances are absolute,
# about twice the largest error measured on a dense grid of the range (docs/ENCRYPTED_TENSORS.md).
ACTIVATIONS: dict[str, tuple[Callable[[Any], Any], float, float, float]] = {
    "gelu": (F.gelu, 10.0, 1e-3, 1e-3),
    "gelu_tanh": (lambda t: F.gelu(t, approximate="tanh"), 10.0, 1e-3, 1e-3),
    "silu": (F.silu, 16.0, 1.5e-3, 1e-3),
    "tanh": (torch.tanh, 12.0, 1.5e-3, 1.5e-3),
    "elu": (F.elu, 10.0, 8e-3, 8e-3),  # exp's error near 0 (measured up to 3.8e-3)
    "selu": (F.selu, 10.0, 1.4e-2, 1.4e-2),  # the same times scale·alpha = 1.76
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.1), 100.0, 1e-4, 1e-4),
    "softplus": (F.softplus, 20.0, 1e-3, 1e-3),
    "softplus_beta2": (lambda t: F.softplus(t, beta=2.0), 10.0, 1e-3, 1e-3),
    "hardswish": (F.hardswish, 10.0, 1e-4, 1e-4),
    "hardsigmoid": (F.hardsigmoid, 10.0, 1e-4, 1e-4),
    "hardtanh": (F.hardtanh, 5.0, 1e-4, 1e-4),
    "relu6": (F.relu6, 10.0, 1e-4, 1e-4),
    "abs": (torch.abs, 100.0, 1e-4, 1e-4),
    "clamp": (lambda t: t.clamp(-1.0, 2.0), 5.0, 1e-4, 1e-4),
    "clamp_min": (lambda t: t.clamp(min=-0.5), 5.0, 1e-4, 1e-4),
    "clamp_max": (lambda t: torch.clamp_max(t, 1.5), 5.0, 1e-4, 1e-4),
    "erf": (torch.erf, 6.0, 5e-4, 1e-2),  # backward: 2/sqrt(pi)·exp(-x²), exp's error (4.7e-3 measured)
    "rsqrt": (lambda t: torch.rsqrt(t * t + 0.0625), 30.0, 1e-3, 2e-3),  # 2^-4: encoded exactly
    "pow3": (lambda t: t**3, 4.0, 2e-3, 2e-3),
}


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@settings(max_examples=4)
@given(data=st.data())
def test_activation_matches_plaintext(name: str, n: int, data: st.DataObject) -> None:
    fn, r, ftol, btol = ACTIVATIONS[name]
    vals = data.draw(st.lists(st.floats(-r, r, allow_nan=False, width=32), min_size=1, max_size=6), "x")
    # a boundary point of each piecewise function, where torch's conventions decide the gradient
    x = torch.tensor(vals + [0.0, -1.0, 3.0, -3.0], dtype=torch.float32)
    g = torch.linspace(-1.0, 1.0, x.numel())
    xp = _q(x).requires_grad_()
    ref = fn(xp)
    (ref * g.double()).sum().backward()
    xs = _enc(n, x, requires_grad=True)
    out = fn(xs)
    assert isinstance(out, sy.SharedTensor)
    (out * _enc(n, g)).sum().backward()
    torch.testing.assert_close(out.decrypt().double(), ref.detach(), atol=ftol, rtol=0)
    assert xs.grad is not None
    torch.testing.assert_close(xs.grad.decrypt().double(), xp.grad, atol=btol, rtol=0)


def test_activation_modules_run_unchanged() -> None:
    """nn modules as they are, in a model: every activation layer of the list, forward and backward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 6), nn.SiLU(), nn.Linear(6, 6), nn.Hardswish(),
                          nn.Linear(6, 6), nn.ELU(), nn.Linear(6, 6), nn.LeakyReLU(0.2), nn.Linear(6, 6), nn.ReLU6(),
                          nn.Linear(6, 6), nn.Softplus(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))
    plain = copy.deepcopy(model)
    x = torch.randn(5, 4)
    ps, james = _workers(2)
    model.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    out = model(_enc(2, x))
    torch.testing.assert_close(out.decrypt(), plain(x).detach(), atol=5e-3, rtol=0)
    out.sum().backward()
    plain(x).sum().backward()
    for p, q in zip(model.parameters(), plain.parameters()):
        assert q.grad is not None
        torch.testing.assert_close(_plain(p.grad), q.grad, atol=1e-2, rtol=0)


def test_erf_error_on_its_range() -> None:
    """erf: the series on [−3, 3], ±1 beyond: within 3e−4 on a dense grid of [−8, 8]."""
    x = torch.linspace(-8, 8, 1601)
    got = torch.erf(_enc(2, x)).decrypt().double()
    assert (got - torch.erf(_q(x))).abs().max() < 3e-4


# ---------------------------------------------------------------------- normalization

NORMS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "batchnorm1d": (lambda: nn.BatchNorm1d(3), (8, 3)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), (4, 3, 3, 3)),
    "layernorm": (lambda: nn.LayerNorm(6), (4, 6)),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), (3, 4, 2, 2)),
}


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(NORMS))
def test_norm_layer_matches_plaintext(name: str, train: bool, n: int) -> None:
    """Forward, input and parameter gradients, and (batch norm, train) the running statistics
    updated in shares: within 1e-3 of torch (measured ≤ 1.5e-4)."""
    make, shape = NORMS[name]
    torch.manual_seed(1)
    m = make()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    m.train(train)
    plain = copy.deepcopy(m)
    x = torch.randn(*shape) * 2 + 1
    g = torch.randn(*shape)
    ps, james = _workers(n)
    m.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    xs, xp = _enc(n, x, requires_grad=True), x.clone().requires_grad_()
    out, ref = m(xs), plain(xp)
    torch.testing.assert_close(out.decrypt(), ref.detach(), atol=1e-3, rtol=0)
    (out * _enc(n, g)).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(xs.grad.decrypt(), xp.grad, atol=1e-3, rtol=0)
    for p, q in zip(m.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad.decrypt(), q.grad, atol=1e-3, rtol=0)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        assert isinstance(plain.running_mean, torch.Tensor) and isinstance(plain.running_var, torch.Tensor)
        torch.testing.assert_close(m.running_mean.decrypt(), plain.running_mean, atol=1e-3, rtol=0)
        torch.testing.assert_close(m.running_var.decrypt(), plain.running_var, atol=1e-3, rtol=0)
        assert int(m.num_batches_tracked) == int(plain.num_batches_tracked)


def test_batchnorm_eval_with_public_running_stats() -> None:
    """Public running statistics (F.batch_norm with plain buffers) serve eval mode; training with
    them is refused (the update would have to write shares into a plain tensor)."""
    x = torch.randn(6, 3)
    rm, rv, w, b = torch.randn(3), torch.rand(3) + 0.5, torch.randn(3), torch.randn(3)
    got = F.batch_norm(_enc(2, x), rm, rv, _enc(2, w), _enc(2, b), training=False)
    torch.testing.assert_close(got.decrypt(), F.batch_norm(x, rm, rv, w, b, training=False), atol=1e-3, rtol=0)
    with pytest.raises(UnsupportedOperationError, match="running statistics"):
        F.batch_norm(_enc(2, x), rm.clone(), rv.clone(), training=True)


def test_rsqrt_over_its_range() -> None:
    """rsqrt (normalized by powers of 4): within 2^-16 + 5e-4 relative on [2^-14, 2^15]."""
    v = torch.logspace(-14 * 0.30103, 15 * 0.30103, 400)
    ref = torch.rsqrt(_q(v))
    got = torch.rsqrt(_enc(2, v)).decrypt().double()
    assert ((got - ref).abs() <= 2**-16 + 5e-4 * ref).all()


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_small_model_with_norm_trains_like_plaintext(norm: str) -> None:
    """Linear – norm – activation – linear, MSE, 5 SGD steps on fixed data: the encrypted loss
    within 0.05 of plaintext at every step (and the parameters close after the last)."""
    torch.manual_seed(3)
    layer: nn.Module = nn.BatchNorm1d(6) if norm == "batchnorm" else nn.LayerNorm(6)
    model = nn.Sequential(nn.Linear(4, 6), layer, nn.GELU() if norm == "batchnorm" else nn.SiLU(), nn.Linear(6, 2))
    plain = copy.deepcopy(model)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    ps, james = _workers(2)
    model.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    popt = torch.optim.SGD(plain.parameters(), lr=0.1)
    sx, sy_ = _enc(2, x), _enc(2, y)
    for step in range(5):
        opt.zero_grad()
        loss = F.mse_loss(model(sx), sy_)
        loss.backward()
        opt.step()
        popt.zero_grad()
        ploss = F.mse_loss(plain(x), y)
        ploss.backward()
        popt.step()
        assert abs(float(loss.decrypt()) - float(ploss.detach())) < 0.05, f"step {step}"
    for p, q in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(p.decrypt(), q.detach(), atol=1e-2, rtol=0)


@pytest.mark.parametrize("make_opt", ["sgd", "adam"])
def test_breast_cancer_training_through_batchnorm_and_layernorm(make_opt: str) -> None:
    """scikit-learn's breast cancer data (standardised, 64 samples): Linear – BatchNorm1d (batch
    statistics and their backward) – ReLU – Linear – LayerNorm – GELU – Linear, cross-entropy, torch
    autograd and torch.optim (SGD with momentum, or Adam) on a model shared with
    ``fix_precision().share(bob, alice, crypto_provider=carol)``: the encrypted loss within 0.05 of the
    plaintext run at every one of 5 steps, and the running statistics tracked too."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    Xt = torch.tensor(X[:64], dtype=torch.float32)
    Xt = (Xt - Xt.mean(0)) / Xt.std(0)
    yt = torch.tensor(y[:64])
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Linear(30, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 2)
    )
    plain = copy.deepcopy(model)
    (bob, alice), carol = _workers(2)
    model.fix_precision().share(bob, alice, crypto_provider=carol, requires_grad=True)

    def opt_for(ps: Any) -> torch.optim.Optimizer:
        if make_opt == "sgd":
            return torch.optim.SGD(ps, lr=0.1, momentum=0.9)
        return torch.optim.Adam(ps, lr=0.02, eps=2**-8)  # the smallest eps shared parameters take

    opt, popt = opt_for(model.parameters()), opt_for(plain.parameters())
    sx, sy_ = _enc(2, Xt), _enc(2, F.one_hot(yt, 2).float())
    losses = []
    for step in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(model(sx), sy_)
        loss.backward()
        opt.step()
        popt.zero_grad()
        ploss = F.cross_entropy(plain(Xt), yt)
        ploss.backward()
        popt.step()
        got, want = float(loss.decrypt()), float(ploss.detach())
        losses.append((got, want))
        assert abs(got - want) < 0.05, f"step {step}: {got} vs {want}"
    assert losses[-1][1] < losses[0][1]  # the plaintext run does learn, so the comparison means something
    bn = model[1]
    torch.testing.assert_close(_plain(bn.running_mean), plain[1].running_mean, atol=2e-2, rtol=0)
