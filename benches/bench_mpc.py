"""MPC protocols between separate processes over TCP on 127.0.0.1.

Party 0 runs here and is what pytest-benchmark times; the other parties and the
dealer are processes (benches/_procs.py), so every timing covers the whole
protocol: both parties' computation, the wire, and (unless preprocessed) the
dealer generating the material on demand. "online" benchmarks preprocess the
op's material on all parties in the (untimed) setup of each round.

extra_info holds, per party i, the bytes and rounds of one call
(party{i}_bytes_sent, party{i}_rounds, ...), their maximum over parties
(bytes_per_party, rounds), and throughput from the median time (elements_per_s,
or GMAC/s for matmul). With benchmarks disabled (plain pytest) each runs once,
at a smaller size where the full size would be slow.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from _procs import Session, SessionPool


@pytest.fixture(scope="module")
def sessions() -> Iterator[SessionPool]:
    with SessionPool() as pool:
        yield pool


def record(benchmark: Any, s: Session, op: str, online: bool, elements: int, macs: int = 0) -> None:
    """Per-party bytes and rounds of one more call of op, and throughput."""
    if online:
        s.run("pre " + op)
    before = s.stats()
    s.run(op)
    after = s.stats()
    info = benchmark.extra_info
    info.update(op=op, parties=s.n_parties, phase="online" if online else "dealer on demand", elements=elements)
    for i, (b, a) in enumerate(zip(before, after)):
        for k in a:
            info[f"party{i}_{k}"] = a[k] - b[k]
    info["bytes_per_party"] = max(a["bytes_sent"] - b["bytes_sent"] for b, a in zip(before, after))
    info["rounds"] = max(a["rounds"] - b["rounds"] for b, a in zip(before, after))
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median:
        info["elements_per_s"] = elements / stats.stats.median
        if macs:
            info["macs"] = macs
            info["GMAC/s"] = macs / stats.stats.median / 1e9


def bench(benchmark: Any, s: Session, op: str, online: bool, rounds: int, elements: int, macs: int = 0) -> None:
    s.run("inputs " + op)  # every party draws its random inputs before the clock starts

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        if online:
            s.run("pre " + op)  # the dealer's material for exactly one call, outside the clock
        return (op,), {}

    benchmark.pedantic(s.run, setup=setup, rounds=rounds, warmup_rounds=1)
    record(benchmark, s, op, online, elements, macs)


@pytest.mark.parametrize("phase", ["online", "dealer"])
def test_mul_1e6(benchmark: Any, sessions: SessionPool, phase: str) -> None:
    n = 10**6
    bench(benchmark, sessions.get(2), f"mul {n}", phase == "online", rounds=10, elements=n)


def test_mul_1e6_3party_dealer(benchmark: Any, sessions: SessionPool) -> None:
    n = 10**6
    bench(benchmark, sessions.get(3), f"mul {n}", False, rounds=10, elements=n)


@pytest.mark.parametrize("phase", ["online", "dealer"])
def test_matmul_1024(benchmark: Any, sessions: SessionPool, phase: str) -> None:
    m = 256 if benchmark.disabled else 1024
    bench(benchmark, sessions.get(2), f"matmul {m} {m} {m}", phase == "online", rounds=5, elements=m * m, macs=m**3)


def test_fixed_point_matmul_1024_dealer(benchmark: Any, sessions: SessionPool) -> None:
    """matmul then truncation, as a fixed-point product (CrypTen's matmul) needs."""
    m = 256 if benchmark.disabled else 1024
    bench(benchmark, sessions.get(2), f"fxmatmul {m} {m} {m}", False, rounds=5, elements=m * m, macs=m**3)


def test_matmul_256_dealer(benchmark: Any, sessions: SessionPool) -> None:
    m = 256
    bench(benchmark, sessions.get(2), f"matmul {m} {m} {m}", False, rounds=10, elements=m * m, macs=m**3)


def test_truncate_1e6_dealer(benchmark: Any, sessions: SessionPool) -> None:
    n = 10**6
    bench(benchmark, sessions.get(2), f"truncate {n}", False, rounds=10, elements=n)


@pytest.mark.parametrize("n", [10**5, 10**6])
def test_relu_dealer(benchmark: Any, sessions: SessionPool, n: int) -> None:
    if benchmark.disabled and n > 10**5:
        n = 2 * 10**5
    bench(benchmark, sessions.get(2), f"relu {n}", False, rounds=5 if n > 10**5 else 10, elements=n)


def test_ltz_1e6_dealer(benchmark: Any, sessions: SessionPool) -> None:
    n = 2 * 10**5 if benchmark.disabled else 10**6
    bench(benchmark, sessions.get(2), f"ltz {n}", False, rounds=5, elements=n)
