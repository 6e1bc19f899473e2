"""Two-party protocols over TCP on 127.0.0.1: time, bytes and rounds per call."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import pytest
from _tcp_pair import TcpPair

import syft_mpc as sy


@pytest.fixture(scope="module")
def pair() -> Iterator[TcpPair]:
    p = TcpPair()
    yield p
    p.close()


def record(benchmark: Any, pair: TcpPair, op: Callable[[sy.Party], Any], elements: int, unit: str = "Melem/s") -> None:
    """Per-call rounds and bytes of each party (one extra call), and throughput."""
    before = pair.run_both(lambda p: p.stats())
    pair.run(op)
    after = pair.run_both(lambda p: p.stats())
    for i in range(2):
        for k in after[i]:
            benchmark.extra_info[f"party{i}_{k}"] = after[i][k] - before[i][k]
    benchmark.extra_info["elements"] = elements
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.min:
        scale = 1e9 if unit.startswith("G") else 1e6
        benchmark.extra_info[unit] = elements / stats.stats.min / scale


def test_beaver_mul_1e6(benchmark: Any, pair: TcpPair) -> None:
    n = 10**6
    x = sy.share(np.arange(n, dtype=np.uint64), 2)

    def op(p: sy.Party) -> np.ndarray:
        return p.mul(x[p.id], x[p.id])

    benchmark.pedantic(pair.run, args=(op,), rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, pair, op, n)


def test_beaver_matmul_256(benchmark: Any, pair: TcpPair) -> None:
    n = 256
    rng = np.random.default_rng(0)
    a = sy.share(rng.integers(0, 2**64, (n, n), dtype=np.uint64), 2)
    b = sy.share(rng.integers(0, 2**64, (n, n), dtype=np.uint64), 2)

    def op(p: sy.Party) -> np.ndarray:
        return p.matmul(a[p.id], b[p.id])

    out = benchmark.pedantic(pair.run, args=(op,), rounds=5, iterations=1, warmup_rounds=1)
    assert out.shape == (n, n)
    record(benchmark, pair, op, n**3, unit="GMAC/s")


def test_truncate_1e6(benchmark: Any, pair: TcpPair) -> None:
    n = 10**6
    x = sy.share(sy.encode(np.linspace(-100, 100, n)), 2)

    def op(p: sy.Party) -> np.ndarray:
        return p.truncate(x[p.id], 1 << 16)

    benchmark.pedantic(pair.run, args=(op,), rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, pair, op, n)


def test_relu_1e5(benchmark: Any, pair: TcpPair) -> None:
    n = 10**5
    x = sy.share(sy.encode(np.linspace(-100, 100, n)), 2)

    def op(p: sy.Party) -> np.ndarray:
        return p.relu(x[p.id])

    benchmark.pedantic(pair.run, args=(op,), rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, pair, op, n)
