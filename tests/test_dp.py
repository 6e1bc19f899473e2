"""Differential privacy: ε against Opacus computed independently, learning under DP-SGD,
clipping, mechanism calibration and noise, PATE against an independent reference, bad input."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from torch import nn

import syft_mpc.dp as dp

opacus = pytest.importorskip("opacus")
from opacus.accountants import PRVAccountant, RDPAccountant  # noqa: E402
from opacus.accountants.analysis import rdp as rdp_analysis  # noqa: E402

# Opacus warns when the best RDP order is at the end of the range it tries (very large
# or very small ε); that is information about tightness, not an error.
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the")


def _rdp_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """ε from Opacus's RDP analysis functions, without its accountant classes."""
    rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=RDPAccountant.DEFAULT_ALPHAS)
    eps, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(eps)


# --------------------------------------------------------------------------- optional dependency


def test_package_imports_without_opacus() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["opacus"] = None          # makes `import opacus` raise ImportError
        import torch
        import syft_mpc.dp as dp
        assert isinstance(dp.laplace_mechanism(1.0, 1.0, 1.0), float)
        assert dp.perform_analysis([[0, 1]], [0, 1], noise_eps=0.1)[1] > 0
        clipped, norm = dp.clip_update([torch.ones(4)], 1.0)
        for call in (lambda: dp.FedAvgPrivacy(1.0, 1e-5, 1.0, 0.1, 10),
                     lambda: dp.make_accountant("rdp"),
                     lambda: dp.dp_sgd_fit(torch.nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long),
                                           steps=1, lr=0.1, batch_size=2, noise_multiplier=1.0,
                                           max_grad_norm=1.0, delta=1e-5)):
            try:
                call()
            except ImportError as e:
                assert "pip install syft-mpc[dp]" in str(e), e
            else:
                raise AssertionError("expected ImportError")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_docstring_examples() -> None:
    import doctest
    import importlib

    for name in ("clipping", "fedavg", "sgd", "mechanisms", "pate"):
        mod = importlib.import_module(f"syft_mpc.dp.{name}")
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, name


# --------------------------------------------------------------------------- DP-FedAvg


@pytest.mark.parametrize(("eps", "q", "rounds"), [(2.0, 0.1, 50), (8.0, 1.0, 10), (0.5, 0.01, 300)])
def test_fedavg_epsilon_matches_opacus_accountant(eps: float, q: float, rounds: int) -> None:
    priv = dp.FedAvgPrivacy(target_epsilon=eps, target_delta=1e-5, clip_norm=0.5, sample_rate=q, rounds=rounds)
    assert priv.noise_std == pytest.approx(priv.noise_multiplier * 0.5)
    assert priv.epsilon() == 0.0 and priv.rounds_done == 0
    reference = RDPAccountant()
    for r in range(1, rounds + 1):
        priv.step()
        reference.step(noise_multiplier=priv.noise_multiplier, sample_rate=q)
        if r in (1, rounds // 2, rounds):
            assert priv.epsilon() == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-12)
    assert priv.rounds_done == rounds
    # The calibrated multiplier spends the target within Opacus's search tolerance (0.01) ...
    spent = priv.epsilon()
    assert eps - 0.011 <= spent <= eps
    assert spent == pytest.approx(_rdp_epsilon(priv.noise_multiplier, q, rounds, 1e-5), rel=1e-12)
    # ... and is not needlessly large: 3 % less noise overshoots the target.
    assert _rdp_epsilon(0.97 * priv.noise_multiplier, q, rounds, 1e-5) > eps
    with pytest.raises(RuntimeError, match="rounds planned"):
        priv.step()


def test_fedavg_prv_accountant() -> None:
    priv = dp.FedAvgPrivacy(2.0, 1e-5, 1.0, 0.1, 50, accountant="prv")
    reference = PRVAccountant()
    for _ in range(50):
        priv.step()
        reference.step(noise_multiplier=priv.noise_multiplier, sample_rate=0.1)
    assert priv.epsilon() == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-9)
    assert 1.98 <= priv.epsilon() <= 2.0
    # PRV accounting is tighter than RDP: less noise for the same target.
    assert priv.noise_multiplier < dp.FedAvgPrivacy(2.0, 1e-5, 1.0, 0.1, 50).noise_multiplier


def test_fedavg_noise_has_the_calibrated_std() -> None:
    priv = dp.FedAvgPrivacy(1.0, 1e-5, clip_norm=2.0, sample_rate=1.0, rounds=5)
    g = torch.Generator().manual_seed(7)
    summed = [torch.full((200, 100), 3.0), torch.zeros(20_000, dtype=torch.float64)]
    noisy = priv.add_noise(summed, generator=g)
    assert [t.dtype for t in noisy] == [torch.float32, torch.float64]
    noise = np.concatenate([(noisy[0] - 3.0).numpy().ravel(), noisy[1].numpy()])
    # 40 000 draws: KS against N(0, noise_std²) rejects a 5 % error in the scale.
    assert stats.kstest(noise, stats.norm(scale=priv.noise_std).cdf).pvalue > 1e-3
    assert stats.kstest(noise, stats.norm(scale=1.05 * priv.noise_std).cdf).pvalue < 1e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"target_epsilon": -1.0}, "target_epsilon"),
        ({"target_epsilon": math.inf}, "target_epsilon"),
        ({"target_epsilon": math.nan}, "target_epsilon"),
        ({"target_delta": 0.0}, "target_delta"),
        ({"target_delta": 1.0}, "target_delta"),
        ({"target_delta": 1e5}, "target_delta"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"rounds": 0}, "rounds"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"clip_norm": -1.0}, "clip_norm"),
        ({"accountant": "gdp"}, "accountant"),
        ({"target_epsilon": 1e-7}, "cannot reach epsilon"),
    ],
)
def test_fedavg_bad_parameters(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = dict(target_epsilon=1.0, target_delta=1e-5, clip_norm=1.0, sample_rate=0.1, rounds=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        dp.FedAvgPrivacy(**args)


def test_fedavg_parameter_types() -> None:
    with pytest.raises(TypeError, match="rounds"):
        dp.FedAvgPrivacy(1.0, 1e-5, 1.0, 0.1, rounds=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="target_epsilon"):
        dp.FedAvgPrivacy("1", 1e-5, 1.0, 0.1, rounds=2)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- clipping


_shapes = st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3), min_size=1, max_size=4)


@given(
    shapes=_shapes,
    scale=st.floats(1e-6, 1e6),
    max_norm=st.floats(1e-3, 1e3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31),
)
def test_clip_update_bounds_the_joint_norm(
    shapes: list[list[int]], scale: float, max_norm: float, dtype: torch.dtype, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    update = [(torch.randn(s, generator=g, dtype=torch.float64) * scale).to(dtype) for s in shapes]
    before = [t.clone() for t in update]
    flat = np.concatenate([t.numpy().astype(np.float64).ravel() for t in update])
    clipped, norm = dp.clip_update(update, max_norm)
    assert norm == pytest.approx(float(np.linalg.norm(flat)), rel=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(update, before)), "inputs must not be modified"
    assert [t.shape for t in clipped] == [t.shape for t in update]
    assert [t.dtype for t in clipped] == [t.dtype for t in update]
    out = np.concatenate([t.numpy().astype(np.float64).ravel() for t in clipped])
    assert float(np.linalg.norm(out)) <= max_norm  # exactly, not approximately
    if norm <= max_norm:
        assert np.array_equal(out, flat)
    else:
        # One common factor for all tensors: the direction of the update is kept.
        assert float(np.linalg.norm(out)) == pytest.approx(max_norm, rel=1e-5)
        np.testing.assert_allclose(out, flat * (max_norm / norm), rtol=1e-5, atol=1e-30)


def test_clip_update_bad_input() -> None:
    with pytest.raises(ValueError, match="max_norm"):
        dp.clip_update([torch.ones(2)], 0.0)
    with pytest.raises(ValueError, match="floating-point"):
        dp.clip_update([torch.ones(2, dtype=torch.long)], 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        dp.clip_update([torch.tensor([1.0, math.nan])], 1.0)
    with pytest.raises(TypeError):
        dp.clip_update(torch.ones(2), 1.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- DP-SGD


def _is_plain(model: nn.Module) -> None:
    """No Opacus hook, attribute or leftover gradient on the module or its parameters."""
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
        assert not hasattr(m, "autograd_grad_sample_hooks") and not hasattr(m, "ft_compute_sample_grad")
    for p in model.parameters():
        assert p.grad is None
        extra = {k for k in vars(p) if not k.startswith("__")}
        assert not extra, extra


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


def test_dp_sgd_learns_digits_and_leaves_a_plain_module() -> None:
    x, y = _digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 10))
    out = dp.dp_sgd_fit(
        model, x[:1400], y[:1400], steps=60, lr=2.0, batch_size=128,
        noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, seed=0,
    )  # fmt: skip
    assert type(model) is nn.Sequential and model.training
    _is_plain(model)
    with torch.no_grad():
        accuracy = float((model(x[1400:]).argmax(1) == y[1400:]).float().mean())
    assert accuracy > 0.6, accuracy  # chance is 0.1
    assert out["n_samples"] == 1400 and out["steps"] == 60
    assert 0 < out["loss"] < math.log(10) + 0.5
    assert out["epsilon"] == pytest.approx(_rdp_epsilon(1.0, 128 / 1400, 60, 1e-5), rel=1e-12)


@pytest.mark.filterwarnings("ignore:Secure RNG turned off", "ignore:Full backward hook is firing")
def test_dp_sgd_epsilon_matches_privacy_engine() -> None:
    """Opacus's own PrivacyEngine, on the same data, steps, sample rate and noise."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    n, bs, steps, sigma = 240, 24, 25, 0.8
    x, y = torch.randn(n, 5), torch.randint(0, 3, (n,))
    out = dp.dp_sgd_fit(nn.Linear(5, 3), x, y, steps=steps, lr=0.1, batch_size=bs,
                        noise_multiplier=sigma, max_grad_norm=1.0, delta=1e-6, seed=1)  # fmt: skip

    model = nn.Linear(5, 3)
    engine = PrivacyEngine(accountant="rdp")
    model, opt, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=bs),
        noise_multiplier=sigma, max_grad_norm=1.0, poisson_sampling=True,
    )  # fmt: skip
    done = 0
    while done < steps:
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    assert out["sample_rate"] == pytest.approx(1 / len(loader))
    assert out["epsilon"] == pytest.approx(engine.get_epsilon(delta=1e-6), rel=1e-12)


def test_dp_sgd_accountant_accumulates_across_calls() -> None:
    x, y = torch.randn(100, 4), torch.randint(0, 2, (100,))
    acct = dp.make_accountant("rdp")
    model = nn.Linear(4, 2)
    kw: dict[str, Any] = dict(lr=0.1, batch_size=10, noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-5)
    first = dp.dp_sgd_fit(model, x, y, steps=8, accountant=acct, seed=0, **kw)["epsilon"]
    second = dp.dp_sgd_fit(model, x, y, steps=12, accountant=acct, seed=1, **kw)["epsilon"]
    alone = dp.dp_sgd_fit(model, x, y, steps=12, seed=2, **kw)["epsilon"]
    assert first == pytest.approx(_rdp_epsilon(1.1, 0.1, 8, 1e-5), rel=1e-12)
    assert second == pytest.approx(_rdp_epsilon(1.1, 0.1, 20, 1e-5), rel=1e-12)
    assert first < alone < second
    _is_plain(model)


class _Scale(nn.Module):
    """A layer without an Opacus grad sampler (per-sample gradients through functorch)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def test_dp_sgd_is_seeded_and_plain_with_custom_layers() -> None:
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))

    def run(seed: int) -> tuple[nn.Module, dict[str, Any]]:
        torch.manual_seed(5)
        model = nn.Sequential(_Scale(6), nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 3)).eval()
        out = dp.dp_sgd_fit(model, x, y, steps=6, lr=0.5, batch_size=16, noise_multiplier=1.0,
                            max_grad_norm=1.0, delta=1e-5, seed=seed)  # fmt: skip
        assert not model.training, "the module's train/eval mode is restored"
        _is_plain(model)
        return model, out

    (a, _), (b, _), (c, _) = run(3), run(3), run(4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert not torch.equal(a[0].w, torch.ones(6)), "the functorch-handled layer is trained too"
    # A second, ordinary training run on the returned module works (no hooks left behind).
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    nn.functional.cross_entropy(a(x), y).backward()
    opt.step()


def test_dp_sgd_noise_and_clipping_scale() -> None:
    """The update is (Σ clipped per-sample grads + N(0, σ²C²)) / expected batch size."""
    n, bs, lr, sigma, clip = 400, 50, 1.0, 3.0, 0.5
    # Zero inputs: the weight's per-sample gradients vanish, so its 10 000 updates are pure noise.
    model = nn.Linear(200, 50)
    w0 = model.weight.detach().clone()
    dp.dp_sgd_fit(model, torch.zeros(n, 200), torch.randint(0, 50, (n,)), steps=1, lr=lr, batch_size=bs,
                  noise_multiplier=sigma, max_grad_norm=clip, delta=1e-5, seed=11)  # fmt: skip
    delta_w = (model.weight.detach() - w0).numpy().ravel() / lr
    expected = sigma * clip / bs
    assert stats.kstest(delta_w, stats.norm(scale=expected).cdf).pvalue > 1e-3
    # The sample std of 10 000 draws has a relative standard error of 0.7 %.
    assert abs(float(delta_w.std()) / expected - 1) < 0.03

    # All examples in the batch, almost no noise, n copies of one example with a huge
    # gradient: each is clipped to norm C, so the step (their mean) has norm lr·C.
    model = nn.Linear(8, 4)
    before = [p.detach().clone() for p in model.parameters()]
    x = 100 * torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    worst = int(model(x).argmin())  # the least likely class: a large, unsaturated gradient
    dp.dp_sgd_fit(model, x.repeat(n, 1), torch.full((n,), worst), steps=1, lr=lr,
                  batch_size=n, noise_multiplier=1e-9, max_grad_norm=clip, delta=1e-5, seed=0)  # fmt: skip
    step = math.sqrt(sum(float((p.detach() - b).square().sum()) for p, b in zip(model.parameters(), before)))
    assert lr * clip * (1 - 1e-3) < step <= lr * clip * (1 + 1e-4)


def _good_fit_args() -> dict[str, Any]:
    return dict(
        model=nn.Linear(3, 2), data=torch.randn(20, 3), targets=torch.randint(0, 2, (20,)),
        steps=2, lr=0.1, batch_size=5, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"targets": torch.randint(0, 2, (19,))}, ValueError, "len"),
        ({"targets": torch.randint(0, 2, (20, 1))}, ValueError, "targets shape"),
        ({"targets": torch.rand(20)}, ValueError, "integer"),
        ({"targets": torch.full((20,), 2)}, ValueError, "classes"),
        ({"targets": torch.full((20,), -1)}, ValueError, ">= 0"),
        ({"data": torch.randn(0, 3), "targets": torch.zeros(0, dtype=torch.long)}, ValueError, "empty"),
        ({"data": torch.ones(20, 3, dtype=torch.long)}, ValueError, "floating"),
        ({"data": torch.full((20, 3), math.nan)}, ValueError, "nan"),
        ({"batch_size": 21}, ValueError, "batch_size"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"steps": 0}, ValueError, "steps"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"noise_multiplier": 0.0}, ValueError, "noise_multiplier"),
        ({"max_grad_norm": -1.0}, ValueError, "max_grad_norm"),
        ({"delta": 0.0}, ValueError, "delta"),
        ({"delta": 1.0}, ValueError, "delta"),
        ({"model": nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))}, ValueError, "GroupNorm"),
        ({"model": nn.Linear(3, 2).requires_grad_(False)}, ValueError, "trainable"),
        ({"model": nn.Sequential(nn.Linear(3, 2), nn.Flatten(0))}, ValueError, "class scores"),
        ({"model": lambda x: x}, TypeError, "nn.Module"),
        ({"accountant": "gdp"}, ValueError, "accountant"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_dp_sgd_bad_input_fails_before_training(change: dict[str, Any], error: type[Exception], match: str) -> None:
    args = _good_fit_args()
    args.update(change)
    model = args["model"]
    state = {k: v.clone() for k, v in model.state_dict().items()} if isinstance(model, nn.Module) else {}
    with pytest.raises(error, match=match):
        dp.dp_sgd_fit(**args)
    if isinstance(model, nn.Module):
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "model changed"
        _is_plain(model)


def test_dp_sgd_cleans_up_when_training_fails() -> None:
    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 2:  # the trial forward and one step succeed
                raise RuntimeError("boom")
            return self.lin(x)

    model = Fails()
    with pytest.raises(RuntimeError, match="boom"):
        dp.dp_sgd_fit(model, torch.randn(10, 3), torch.zeros(10, dtype=torch.long), steps=5, lr=0.1,
                      batch_size=5, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)  # fmt: skip
    _is_plain(model)


# --------------------------------------------------------------------------- mechanisms


def _gaussian_delta_reference(sigma: float, sensitivity: float, eps: float) -> float:
    """δ(ε) of the Gaussian mechanism as μ-GDP with μ = Δ/σ (Dong, Roth & Su 2019, Cor. 2.13)."""
    mu = sensitivity / sigma
    return float(stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2))


@pytest.mark.parametrize(
    ("sens", "eps", "delta"), [(1.0, 1.0, 1e-5), (2.0, 0.1, 1e-6), (1.0, 5.0, 1e-5), (0.3, 12.0, 1e-9), (1.0, 0.01, 0.2)]
)
def test_analytic_gaussian_calibration_is_tight(sens: float, eps: float, delta: float) -> None:
    sigma = dp.gaussian_sigma(sens, eps, delta)
    assert _gaussian_delta_reference(sigma, sens, eps) <= delta * (1 + 1e-9)
    assert _gaussian_delta_reference(sigma, sens, eps) == pytest.approx(delta, rel=1e-6)
    assert _gaussian_delta_reference(0.99 * sigma, sens, eps) > delta  # not more noise than needed
    if eps < 1:
        classic = dp.gaussian_sigma(sens, eps, delta, calibration="classic")
        assert classic == pytest.approx(sens * math.sqrt(2 * math.log(1.25 / delta)) / eps)
        assert sigma < classic


def test_mechanism_scales_and_errors() -> None:
    assert dp.laplace_scale(3.0, 0.5) == 6.0
    with pytest.raises(ValueError, match="epsilon < 1"):
        dp.gaussian_sigma(1.0, 1.0, 1e-5, calibration="classic")
    with pytest.raises(ValueError, match="calibration"):
        dp.gaussian_sigma(1.0, 1.0, 1e-5, calibration="exact")  # type: ignore[arg-type]
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="epsilon"):
            dp.laplace_mechanism(1.0, 1.0, bad)
        with pytest.raises(ValueError, match="epsilon"):
            dp.gaussian_mechanism(1.0, 1.0, bad, 1e-5)
        with pytest.raises(ValueError, match="sensitivity"):
            dp.laplace_scale(bad, 1.0)
    for bad_delta in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError, match="delta"):
            dp.gaussian_mechanism(1.0, 1.0, 1.0, bad_delta)
    with pytest.raises(TypeError, match="floating-point"):
        dp.laplace_mechanism(torch.ones(3, dtype=torch.long), 1.0, 1.0)
    with pytest.raises(TypeError):
        dp.laplace_mechanism("1.0", 1.0, 1.0)  # type: ignore[type-var]


def test_mechanisms_on_floats_and_tensors() -> None:
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = dp.gaussian_mechanism(torch.zeros(5, dtype=torch.float64), 1.0, 1.0, 1e-5, generator=g1)
    b = dp.gaussian_mechanism(torch.zeros(5, dtype=torch.float64), 1.0, 1.0, 1e-5, generator=g2)
    assert torch.equal(a, b) and a.dtype == torch.float64
    v = dp.laplace_mechanism(torch.zeros(2, 3), 1.0, 1.0)
    assert v.shape == (2, 3) and v.dtype == torch.float32
    f = dp.laplace_mechanism(10, 1.0, 1.0)
    assert isinstance(f, float) and f != 10.0


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_mechanism_noise_has_the_calibrated_scale(kind: str) -> None:
    """KS tests on 50 000 draws: accept the calibrated law, reject a 5 % wrong scale."""
    g = torch.Generator().manual_seed(2024)
    sens, eps, delta = 2.0, 0.7, 1e-6
    zeros = torch.zeros(50_000, dtype=torch.float64)
    if kind == "laplace":
        noise = dp.laplace_mechanism(zeros, sens, eps, generator=g).numpy()
        law, wrong = stats.laplace(scale=sens / eps), stats.laplace(scale=1.05 * sens / eps)
    else:
        noise = dp.gaussian_mechanism(zeros, sens, eps, delta, generator=g).numpy()
        sigma = dp.gaussian_sigma(sens, eps, delta)
        law, wrong = stats.norm(scale=sigma), stats.norm(scale=1.05 * sigma)
    assert stats.kstest(noise, law.cdf).pvalue > 1e-3
    assert stats.kstest(noise, wrong.cdf).pvalue < 1e-3
    # Scalars draw from the same law.
    scalars = np.array([dp.laplace_mechanism(0.0, sens, eps, generator=g) if kind == "laplace"
                        else dp.gaussian_mechanism(0.0, sens, eps, delta, generator=g) for _ in range(2000)])  # fmt: skip
    assert stats.kstest(scalars, law.cdf).pvalue > 1e-3


# --------------------------------------------------------------------------- PATE


def _pate_reference(preds: np.ndarray, noise_eps: float, delta: float, moments: int, k: int) -> tuple[float, float]:
    """The PATE moments accountant written from the paper, vectorised over queries and orders.

    Uses analysis.py's own guard (data-dependent bound for q < 0.5, falling back to εl
    where the log is undefined), not the threshold of the implementation under test.
    """
    n_queries = preds.shape[1]
    votes = np.stack([np.bincount(preds[:, e], minlength=k) for e in range(n_queries)])  # (queries, k)
    top = votes.max(axis=1, keepdims=True)
    gaps = noise_eps * (top - votes)
    # Pr[j beats the winner] ≤ (2 + gap)/(4 e^gap); the winner's own term (gap 0) is 1/2.
    q = np.minimum(((2 + gaps) / (4 * np.exp(gaps))).sum(axis=1) - 0.5, 1 - 1 / k)
    e = 2 * noise_eps
    lam = np.arange(1, moments + 1, dtype=np.float64)[None, :]
    qq = q[:, None]
    with np.errstate(all="ignore"):
        t = (1 - qq) * ((1 - qq) / (1 - np.exp(e) * qq)) ** lam + qq * np.exp(e * lam)
        log_t = np.where((qq < 0.5) & (t > 0), np.log(t), e * lam)
    log_t = np.where(np.isfinite(log_t), log_t, e * lam)
    alpha = np.minimum(np.minimum(0.5 * e * e * lam * (lam + 1), e * lam), log_t).sum(axis=0)
    alpha_ind = n_queries * np.minimum(0.5 * e * e * lam * (lam + 1), e * lam)
    return float(((alpha - math.log(delta)) / lam).min()), float(((alpha_ind - math.log(delta)) / lam).min())


def test_pate_reproduces_pysyft_tutorial_values() -> None:
    """PySyft's PATE tutorial: 100 teachers, 100 queries, 10 labels, noise_eps=0.1, δ=1e-5.

    It printed data-independent ε 11.756462732485115 and data-dependent ε 1.52655213289881;
    the latter is the value for queries on which all teachers agree.
    """
    preds = np.zeros((100, 100), dtype=np.int64)
    dep, ind = dp.perform_analysis(preds, np.zeros(100, dtype=np.int64), noise_eps=0.1, delta=1e-5, num_labels=10)
    assert dep == pytest.approx(1.52655213289881, rel=1e-12)
    assert ind == pytest.approx(11.756462732485115, rel=1e-12)
    # Closed form of the data-independent bound: min over l of (n·min(½ε²l(l+1), εl) + ln(1/δ))/l, ε = 0.2.
    assert ind == pytest.approx(min((100 * min(0.02 * l * (l + 1), 0.2 * l) + math.log(1e5)) / l for l in range(1, 9)))


@pytest.mark.parametrize("seed", range(6))
def test_pate_matches_independent_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_teachers, n_queries, k = int(rng.integers(5, 250)), int(rng.integers(1, 60)), int(rng.integers(2, 12))
    # A mix of strong, weak and no consensus.
    favourite = rng.integers(0, k, n_queries)
    agree = rng.random(n_queries)[None, :] > rng.random((n_teachers, n_queries))
    preds = np.where(agree, favourite[None, :], rng.integers(0, k, (n_teachers, n_queries)))
    noise_eps = float(rng.choice([0.01, 0.05, 0.1, 0.3, 1.0]))
    delta, moments = float(rng.choice([1e-5, 1e-8])), int(rng.integers(1, 20))
    got = dp.perform_analysis(torch.tensor(preds), favourite, noise_eps, delta=delta, moments=moments, num_labels=k)
    want = _pate_reference(preds, noise_eps, delta, moments, k)
    assert got == pytest.approx(want, rel=1e-10)
    assert got[0] <= got[1] + 1e-12  # the data-dependent bound never exceeds the worst case


def test_pate_consensus_and_noise_monotonicity() -> None:
    rng = np.random.default_rng(0)
    unanimous = np.tile(rng.integers(0, 10, 200), (50, 1))
    dep, ind = dp.perform_analysis(unanimous, unanimous[0], noise_eps=0.2, num_labels=10)
    assert dep < 0.5 * ind
    # Random votes: no consensus, the data-dependent bound gives (almost) nothing.
    noisy = rng.integers(0, 10, (50, 200))
    dep_noisy, ind_noisy = dp.perform_analysis(noisy, noisy[0], noise_eps=0.2, num_labels=10)
    assert ind_noisy == ind and dep < dep_noisy <= ind
    # Less noise (larger noise_eps) costs more privacy.
    eps_grid = [0.01, 0.03, 0.1, 0.3, 1.0]
    inds = [dp.perform_analysis(noisy, noisy[0], noise_eps=g)[1] for g in eps_grid]
    deps = [dp.perform_analysis(noisy, noisy[0], noise_eps=g)[0] for g in eps_grid]
    assert inds == sorted(inds) and len(set(inds)) == len(inds)
    assert deps == sorted(deps) and len(set(deps)) == len(deps)
    # Smaller δ costs more.
    assert dp.perform_analysis(noisy, noisy[0], 0.1, delta=1e-8)[1] > dp.perform_analysis(noisy, noisy[0], 0.1)[1]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros((3, 4), int), np.zeros(5, int), 0.1), {}, "indices must have shape"),
        ((np.zeros((3, 4), int), np.zeros((4, 1), int), 0.1), {}, "indices must have shape"),
        ((np.zeros(4, int), np.zeros(4, int), 0.1), {}, "num_teachers, num_examples"),
        ((np.zeros((3, 4), int), np.zeros(4, int), 0.0), {}, "noise_eps"),
        ((np.zeros((3, 4), int), np.zeros(4, int), -0.1), {}, "noise_eps"),
        ((np.zeros((3, 4), int), np.zeros(4, int), 0.1), {"delta": 0.0}, "delta"),
        ((np.zeros((3, 4), int), np.zeros(4, int), 0.1), {"delta": 1.5}, "delta"),
        ((np.zeros((3, 4), int), np.zeros(4, int), 0.1), {"moments": 0}, "moments"),
        ((np.zeros((3, 4), int), np.zeros(4, int), 0.1), {"beta": 0.0}, "beta"),
        ((np.full((3, 4), -1), np.zeros(4, int), 0.1), {}, ">= 0"),
        ((np.full((3, 4), 5), np.zeros(4, int), 0.1), {"num_labels": 5}, "num_labels"),
        ((np.full((3, 4), 0.5), np.zeros(4, int), 0.1), {}, "integer"),
    ],
)
def test_pate_bad_input(args: tuple[Any, ...], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dp.perform_analysis(*args, **kwargs)


def test_pate_helpers_follow_the_paper() -> None:
    # Two labels, winner ahead by 10 votes at γ = 0.1: gap 1, q = 3/(4e).
    assert dp.compute_q_noisy_max([15, 5], 0.1) == pytest.approx(3 / (4 * math.e))
    # Ties are capped at 1 − 1/K.
    assert dp.compute_q_noisy_max([5, 5, 5], 0.1) == pytest.approx(2 / 3)
    # q = 0: the answer is deterministic, no privacy loss.
    assert dp.logmgf_exact(0.0, 0.2, 4) == 0.0
    # Above the theorem's threshold only the pure-DP bounds remain.
    assert dp.logmgf_exact(0.49, 0.2, 3) == pytest.approx(min(0.5 * 0.04 * 12, 0.6))
    assert dp.logmgf_from_counts([15, 5], 0.1, 2) == dp.logmgf_exact(3 / (4 * math.e), 0.2, 2)
