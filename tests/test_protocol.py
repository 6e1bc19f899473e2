"""Party/Dealer over in-memory sessions, parties on threads of this process, vs plaintext."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import I64_MAX, I64_MIN, rand_u64, run_parties
from hypothesis import given
from hypothesis import strategies as st
from test_ring import conv2d_reference, conv_cases, make_conv

import syft_mpc as sy

FRAC = 16


def shared_op(n: int, op, *xs: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Shares the plaintext inputs, runs op(party, *my_shares) on every party, reconstructs."""
    shares = [sy.share(x, n) for x in xs]
    out = run_parties(n, lambda p: op(p, *(s[p.id] for s in shares)))
    return sy.reconstruct(out)


def test_memory_session_shape() -> None:
    parties, dealer = sy.memory_session(3)
    assert [p.id for p in parties] == [0, 1, 2] and all(p.n_parties == 3 for p in parties)
    assert dealer.n_parties == 3
    t = threading.Thread(target=dealer.serve)
    t.start()
    for p in reversed(parties):
        p.close()
        p.close()  # idempotent
        assert p.closed
    t.join(10)
    assert not t.is_alive()
    with pytest.raises(sy.ProtocolError, match="closed"):
        parties[0].open(np.zeros(1, np.uint64))


def test_needs_two_parties() -> None:
    with pytest.raises(sy.ShapeError):
        sy.memory_session(1)


@given(st.integers(0, 40), st.integers(0, 2**32))
def test_mul_is_ring_exact(n_elems: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rand_u64(rng, (n_elems,)), rand_u64(rng, (n_elems,))
    for n in (2, 3):
        np.testing.assert_array_equal(shared_op(n, lambda p, a, b: p.mul(a, b), x, y), x * y)


def test_mul_nd_and_empty(n_parties: int, rng: np.random.Generator) -> None:
    for shape in [(), (0,), (1,), (2, 3, 4), (0, 5)]:
        x, y = rand_u64(rng, shape), rand_u64(rng, shape)
        out = shared_op(n_parties, lambda p, a, b: p.mul(a, b), x, y)
        assert out.shape == shape
        np.testing.assert_array_equal(out, x * y)


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32))
def test_matmul_is_ring_exact(m: int, k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rand_u64(rng, (m, k)), rand_u64(rng, (k, n))
    for parties in (2, 3):
        np.testing.assert_array_equal(shared_op(parties, lambda p, a, b: p.matmul(a, b), x, y), x @ y)


def test_batched_matmul(n_parties: int, rng: np.random.Generator) -> None:
    x, y = rand_u64(rng, (3, 4, 5)), rand_u64(rng, (3, 5, 2))
    np.testing.assert_array_equal(shared_op(n_parties, lambda p, a, b: p.matmul(a, b), x, y), x @ y)


def test_matmul_64x64(n_parties: int, rng: np.random.Generator) -> None:
    x, y = rand_u64(rng, (64, 96)), rand_u64(rng, (96, 33))
    np.testing.assert_array_equal(shared_op(n_parties, lambda p, a, b: p.matmul(a, b), x, y), x @ y)


@given(conv_cases)
def test_conv2d_is_ring_exact(case: tuple[int, ...]) -> None:
    x, w, kw = make_conv(case)
    ref = conv2d_reference(x, w, **kw)  # type: ignore[arg-type]
    for n in (2, 3):
        np.testing.assert_array_equal(shared_op(n, lambda p, a, b: p.conv2d(a, b, **kw), x, w), ref)


def signed_values(rng: np.random.Generator, size: int, bound: int) -> np.ndarray:
    """int64 values in [-bound, bound) with the edges included."""
    v = rng.integers(-bound, bound, size=size, dtype=np.int64)
    edges = np.array([0, 1, -1, bound - 1, -bound, bound // 2, -bound // 2], dtype=np.int64)
    v[: edges.size] = edges
    return v


@pytest.mark.parametrize("divisor", [2, 3, 1 << 16, 10**3, (1 << 40) + 7])
def test_truncate_within_one_ulp(n_parties: int, divisor: int, rng: np.random.Generator) -> None:
    # The documented range is [-2^62 + d, 2^62).
    x = signed_values(rng, 20000, 2**62 - divisor)
    out = shared_op(n_parties, lambda p, a: p.truncate(a, divisor), x.view(np.uint64)).view(np.int64)
    err = out - x // divisor
    assert np.all(np.abs(err) <= 1), np.abs(err).max()


def test_fixed_point_product_and_truncation(n_parties: int, rng: np.random.Generator) -> None:
    a, b = rng.normal(0, 100, 5000), rng.normal(0, 100, 5000)
    ea, eb = sy.encode(a), sy.encode(b)
    out = shared_op(n_parties, lambda p, x, y: p.truncate(p.mul(x, y), 1 << FRAC), ea, eb)
    exact = sy.decode(ea) * sy.decode(eb)
    assert np.abs(sy.decode(out) - exact).max() <= 1.0 / 2**FRAC + 1e-9


def test_products_truncated_in_one_call(n_parties: int, rng: np.random.Generator) -> None:
    """mul/matmul/conv2d with ``divisor``: the product and the dealer-assisted truncation in
    one call, within one ulp of the truncated ring product."""
    ea, eb = sy.encode(rng.normal(0, 10, (6, 8))), sy.encode(rng.normal(0, 10, (8, 5)))
    x4, w4 = ea.reshape(1, 2, 4, 6), sy.encode(rng.normal(0, 10, (5, 2, 2, 2)))
    cases = [
        (lambda p, x, y: p.mul(x, y, divisor=1 << FRAC), ea, ea, ea * ea),
        (lambda p, x, y: p.matmul(x, y, divisor=1 << FRAC), ea, eb, ea @ eb),
        (
            lambda p, x, w: p.conv2d(x, w, padding=(1, 1), divisor=1 << FRAC),
            x4,
            w4,
            conv2d_reference(x4, w4, (1, 1), (1, 1), (1, 1), 1),
        ),
    ]
    for op, x, y, ring_product in cases:
        out = shared_op(n_parties, op, x, y).view(np.int64)
        assert out.shape == ring_product.shape
        assert np.abs(out - (ring_product.view(np.int64) >> FRAC)).max() <= 1


def test_truncated_product_bad_divisor_keeps_the_session(rng: np.random.Generator) -> None:
    x = sy.encode(rng.normal(0, 10, 50))

    def op(p, a):  # type: ignore[no-untyped-def]
        with pytest.raises(sy.ShapeError, match="divisor must be positive"):
            p.mul(a, a, divisor=0)
        return p.mul(a, a, divisor=1 << FRAC)

    out = shared_op(2, op, x)
    assert np.abs(sy.decode(out) - sy.decode(x) ** 2).max() <= 41 / 2**FRAC


def test_truncate_local_two_parties(rng: np.random.Generator) -> None:
    x = signed_values(rng, 5000, 2**40)
    out = shared_op(2, lambda p, a: p.truncate_local(a, FRAC), x.view(np.uint64)).view(np.int64)
    assert np.abs(out - (x >> FRAC)).max() <= 1


def test_truncate_local_refuses_three_parties() -> None:
    with pytest.raises(sy.ProtocolError, match="2 parties"):
        run_parties(3, lambda p: p.truncate_local(np.zeros(3, np.uint64), FRAC))


def test_ltz_and_relu_are_exact(n_parties: int, rng: np.random.Generator) -> None:
    x = np.concatenate(
        [
            np.array([0, 1, -1, I64_MAX, I64_MIN, I64_MIN + 1, I64_MAX - 1, 2**62, -(2**62), 2**47, -(2**47)], dtype=np.int64),
            rng.integers(I64_MIN, I64_MAX, size=3000, dtype=np.int64, endpoint=True),
            rng.integers(-(2**20), 2**20, size=3000, dtype=np.int64),
        ]
    )
    ltz = shared_op(n_parties, lambda p, a: p.ltz(a), x.view(np.uint64))
    np.testing.assert_array_equal(ltz, (x < 0).astype(np.uint64))
    relu = shared_op(n_parties, lambda p, a: p.relu(a), x.view(np.uint64))
    np.testing.assert_array_equal(relu.view(np.int64), np.maximum(x, 0))


def test_relu_on_fixed_point(n_parties: int, rng: np.random.Generator) -> None:
    v = rng.normal(0, 10, (30, 7))
    out = shared_op(n_parties, lambda p, a: p.relu(a), sy.encode(v))
    np.testing.assert_array_equal(sy.decode(out), np.maximum(sy.decode(sy.encode(v)), 0))


def test_fourier_series_through_the_binding(n_parties: int, rng: np.random.Generator) -> None:
    """Party.fourier on fixed-point input, preprocessed and on demand, against numpy: a sine
    of period 2^32/(2^16·m) real units, at 2^29/2^13 = 2^16 fractional bits."""
    v = rng.normal(0, 20, (4, 25))
    b = [0.5, -0.25, 0.125]
    m = 4096  # period 16
    want = sum(c * np.sin(2 * np.pi * (k + 1) * sy.decode(sy.encode(v)) / 16) for k, c in enumerate(b))

    def op(p: sy.Party, a: np.ndarray) -> np.ndarray:
        p.preprocess([sy.Request.fourier(a.size, len(b), 1 << 13)])
        first = p.fourier(a, m, [0.0] * 3, b, 1 << 13)
        return np.stack([first, p.fourier(a, m, [0.0] * 3, b, 1 << 13)])

    out = sy.decode(shared_op(n_parties, op, sy.encode(v)))
    assert out.shape == (2, 4, 25)
    np.testing.assert_allclose(out, np.stack([want, want]), atol=3e-4)
    with pytest.raises(sy.MpcError, match="must be at most 1"):
        shared_op(n_parties, lambda p, a: p.fourier(a, m, [0.6], [0.6], 1 << 13), sy.encode(v))


def test_input_from_each_owner(n_parties: int, rng: np.random.Generator) -> None:
    data = [rand_u64(rng, (4, 3)) for _ in range(n_parties)]

    def fn(p: sy.Party) -> list[np.ndarray]:
        return [p.open(p.input(o, data[o] if o == p.id else None, shape=(4, 3))) for o in range(n_parties)]

    for opened in run_parties(n_parties, fn):
        for o in range(n_parties):
            np.testing.assert_array_equal(opened[o], data[o])


def test_input_argument_errors() -> None:
    parties, dealer = sy.memory_session(2)
    try:
        with pytest.raises(sy.ShapeError, match="only the owner"):
            parties[1].input(0, np.zeros(2, np.uint64))
        with pytest.raises(sy.ShapeError):
            parties[0].input(0)
        with pytest.raises(sy.ShapeError):
            parties[0].mul(np.zeros(2, np.uint64), np.zeros(3, np.uint64))
        with pytest.raises(sy.ShapeError):
            parties[0].matmul(np.zeros((2, 3), np.uint64), np.zeros((2, 3), np.uint64))
        with pytest.raises(sy.ShapeError):
            parties[0].conv2d(np.zeros((1, 1, 2, 2), np.uint64), np.zeros((1, 1, 3, 3), np.uint64))
    finally:
        for p in parties:
            p.abort()
        dealer.close()


def test_stats_count_rounds_and_bytes(rng: np.random.Generator) -> None:
    x = rand_u64(rng, (1000,))

    def fn(p: sy.Party) -> dict[str, int]:
        before = p.stats()
        p.mul(x, x)
        after = p.stats()
        return {k: after[k] - before[k] for k in after}

    s0, s1 = run_parties(2, fn)
    assert s0["rounds"] == 1 and s1["rounds"] == 1
    assert s0["bytes_sent"] == 16 * 1000 == s1["bytes_received"]  # ε and δ, 8 bytes each
    assert s1["dealer_bytes_received"] >= 8 * 1000  # the last party gets the explicit correction


def test_parties_on_threads_do_not_hold_the_gil(rng: np.random.Generator) -> None:
    """While two parties compute a large product, a third Python thread keeps running."""
    x = rand_u64(rng, (256, 256))
    ticks = 0
    stop = threading.Event()

    def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        start = time.monotonic()
        run_parties(2, lambda p: [p.matmul(x, x) for _ in range(3)])
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        t.join()
    assert ticks >= min(5, elapsed / 0.01)


def test_mpc_run_reports_root_cause() -> None:
    def fn(p: sy.Party) -> None:
        if p.id == 0:
            raise KeyError("boom")
        p.mul(np.zeros(10, np.uint64), np.zeros(10, np.uint64))

    with pytest.raises(KeyError, match="boom"):
        sy.mpc.run(fn, n_parties=2, timeout_s=10)


def test_preprocessing_moves_dealer_traffic_offline() -> None:
    """After preprocess, the online phase gets nothing from the dealer; a mismatch raises."""
    x = np.arange(-50, 50, dtype=np.int64).astype(np.uint64)

    def party(p: sy.Party) -> tuple[np.ndarray, np.ndarray, int, str]:
        xs = p.input(0, x if p.id == 0 else None, shape=x.shape)
        p.preprocess([sy.Request.mul(100), sy.Request.relu(100)])
        before = p.stats()["dealer_bytes_received"]
        sq = p.mul(xs, xs)
        r = p.relu(xs)
        online = p.stats()["dealer_bytes_received"] - before
        opened = p.open(sq), p.open(r)
        p.preprocess([sy.Request.matmul(2, 3, 4)])
        with pytest.raises(sy.MpcError, match="same sequence") as e:
            p.mul(xs, xs)
        return opened[0], opened[1], online, str(e.value)

    for n in (2, 3):
        for sq, r, online, _ in sy.mpc.run(party, n_parties=n):
            assert np.array_equal(sq.view(np.int64), x.view(np.int64) ** 2)
            assert np.array_equal(r.view(np.int64), np.maximum(x.view(np.int64), 0))
            assert online == 0
