"""Additive sharing: correctness, and shares that reveal nothing about the secret."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rand_u64, run_parties
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import syft_mpc as sy


@given(
    hnp.arrays(np.uint64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6), elements=st.integers(0, 2**64 - 1)),
    st.integers(1, 4),
)
def test_share_reconstruct(x: np.ndarray, n: int) -> None:
    shares = sy.share(x, n)
    assert len(shares) == n
    assert all(s.shape == x.shape and s.dtype == np.uint64 for s in shares)
    np.testing.assert_array_equal(sy.reconstruct(shares), x)


@pytest.mark.parametrize("n", [2, 3])
def test_any_n_minus_1_shares_are_not_the_secret(n: int, rng: np.random.Generator) -> None:
    x = rand_u64(rng, (1000,))
    shares = sy.share(x, n)
    for i in range(n):
        others = [s for j, s in enumerate(shares) if j != i]
        assert np.mean(sy.reconstruct(others) == x) < 0.01


def test_reconstruct_rejects_mismatched_shapes() -> None:
    with pytest.raises(sy.ShapeError):
        sy.reconstruct([np.zeros(3, np.uint64), np.zeros(4, np.uint64)])
    with pytest.raises(sy.ShapeError):
        sy.reconstruct([])


# --- statistics: a share's distribution does not depend on the secret ------------------

N = 1 << 16
# chi-square with 255 degrees of freedom: P(X > 400) ≈ 1e-8, so false alarms are negligible.
CHI2_255_LIMIT = 400.0


def chi2_top_byte(v: np.ndarray) -> float:
    counts = np.bincount((v >> np.uint64(56)).astype(np.int64), minlength=256)
    expected = v.size / 256
    return float(((counts - expected) ** 2 / expected).sum())


def check_uniform_and_independent(share: np.ndarray, secret: np.ndarray) -> None:
    assert chi2_top_byte(share) < CHI2_255_LIMIT
    # Each bit is set half the time.
    bits = np.unpackbits(share.view(np.uint8)).mean()
    assert abs(bits - 0.5) < 0.002
    # Mean of the share as a fraction of the ring: 1/2 ± 5 sigma (sigma = 1/sqrt(12 N)).
    mean = float((share >> np.uint64(11)).astype(np.float64).mean() / 2.0**53)
    assert abs(mean - 0.5) < 5 / np.sqrt(12 * N)
    # No linear correlation with the secret (when the secret varies).
    if np.unique(secret).size > 1:
        r = np.corrcoef((share >> np.uint64(32)).astype(np.float64), secret.astype(np.float64))[0, 1]
        assert abs(r) < 5 / np.sqrt(N)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("secret_kind", ["zeros", "constant", "random", "small-ints"])
def test_shares_are_uniform_whatever_the_secret(n: int, secret_kind: str, rng: np.random.Generator) -> None:
    secret = {
        "zeros": np.zeros(N, np.uint64),
        "constant": np.full(N, 0xDEADBEEF, np.uint64),
        "random": rand_u64(rng, (N,)),
        "small-ints": rng.integers(0, 4, N).astype(np.uint64),
    }[secret_kind]
    for s in sy.share(secret, n):  # every single share (the last one too) is uniform
        check_uniform_and_independent(s, secret)


@pytest.mark.parametrize("secret_kind", ["constant", "random"])
def test_session_input_shares_are_uniform(n_parties: int, secret_kind: str, rng: np.random.Generator) -> None:
    secret = np.full(N, 3 << 16, np.uint64) if secret_kind == "constant" else rand_u64(rng, (N,))
    shares = run_parties(n_parties, lambda p: p.input(0, secret if p.id == 0 else None, shape=secret.shape))
    np.testing.assert_array_equal(sy.reconstruct(shares), secret)
    for s in shares:
        check_uniform_and_independent(s, secret)


def test_fresh_randomness_every_time() -> None:
    x = np.zeros(64, np.uint64)
    a, b = sy.share(x, 2)[0], sy.share(x, 2)[0]
    assert not np.array_equal(a, b)
