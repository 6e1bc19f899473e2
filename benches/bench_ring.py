"""Ring matmul (Z_2^64) against numpy float64 matmul, one thread each.

The one-thread ring benchmark then times ring and numpy float64 (OpenBLAS)
matmul alternately, one thread each, and records the ratio of their median
GMAC/s in extra_info (ratio_vs_numpy_f64). torch's int64 matmul (what CrypTen
uses on CPU) is timed at 512^3 for reference, being ~50x slower.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Iterator

import numpy as np
import pytest

import syft_mpc as sy

N = 1024


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1):
        yield


def gmacs(benchmark: Any, macs: int) -> float:
    """Records GMAC/s from the median time; 0 when benchmarks are disabled."""
    stats = getattr(benchmark, "stats", None)
    if stats is None or not stats.stats.median:
        return 0.0
    benchmark.extra_info["GMAC/s"] = macs / stats.stats.median / 1e9
    return float(benchmark.extra_info["GMAC/s"])


def side_by_side(n: int, repeat: int = 5) -> tuple[float, float]:
    """GMAC/s of ring matmul and numpy float64 matmul, one thread each, timed
    alternately (medians of repeat) so that both see the same machine load."""
    rng = np.random.default_rng(1)
    ra, rb = (rng.integers(0, 2**64, (n, n), dtype=np.uint64) for _ in range(2))
    fa, fb = rng.normal(size=(n, n)), rng.normal(size=(n, n))

    def once(f: Any, *args: Any, **kw: Any) -> float:
        t = time.perf_counter()
        f(*args, **kw)
        return time.perf_counter() - t

    ring, flt = [], []
    with one_blas_thread():
        for _ in range(repeat + 1):
            ring.append(once(sy.ring_matmul, ra, rb, threads=1))
            flt.append(once(np.matmul, fa, fb))
    return n**3 / statistics.median(ring[1:]) / 1e9, n**3 / statistics.median(flt[1:]) / 1e9


def test_ring_matmul_1024_one_thread(benchmark: Any) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**64, (N, N), dtype=np.uint64)
    b = rng.integers(0, 2**64, (N, N), dtype=np.uint64)
    out = benchmark(sy.ring_matmul, a, b, threads=1)
    assert out.shape == (N, N)
    np.testing.assert_array_equal(out[:2], a[:2] @ b)  # spot check, numpy wraps mod 2^64
    benchmark.extra_info.update(macs=N**3, threads=1)
    if gmacs(benchmark, N**3):
        ring, ref = side_by_side(N)
        benchmark.extra_info.update(side_by_side_ring_GMACs=ring, side_by_side_numpy_f64_GMACs=ref, ratio_vs_numpy_f64=ring / ref)


def test_ring_matmul_1024_all_threads(benchmark: Any) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**64, (N, N), dtype=np.uint64)
    b = rng.integers(0, 2**64, (N, N), dtype=np.uint64)
    benchmark(sy.ring_matmul, a, b)
    benchmark.extra_info.update(macs=N**3, threads="all")
    gmacs(benchmark, N**3)


def test_numpy_float64_matmul_1024_one_thread(benchmark: Any) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(N, N)), rng.normal(size=(N, N))
    with one_blas_thread():
        benchmark(np.matmul, a, b)
    benchmark.extra_info.update(macs=N**3, threads=1)
    gmacs(benchmark, N**3)


def test_torch_int64_matmul_512_one_thread(benchmark: Any) -> None:
    torch = pytest.importorskip("torch")
    n = 512
    a = torch.randint(-(2**62), 2**62, (n, n), dtype=torch.int64)
    b = torch.randint(-(2**62), 2**62, (n, n), dtype=torch.int64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark.pedantic(torch.matmul, args=(a, b), rounds=3, warmup_rounds=1)
    finally:
        torch.set_num_threads(threads)
    benchmark.extra_info.update(macs=n**3, threads=1)
    t = gmacs(benchmark, n**3)
    if t:
        ref = side_by_side(N, repeat=3)[1]
        benchmark.extra_info.update(side_by_side_numpy_f64_GMACs=ref, ratio_vs_numpy_f64=t / ref)


@pytest.mark.parametrize("n_elems", [10**6])
def test_ring_mul_elementwise(benchmark: Any, n_elems: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**64, n_elems, dtype=np.uint64)
    benchmark(sy.ring_mul, a, a)
    benchmark.extra_info["elements"] = n_elems
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median:
        benchmark.extra_info["elements_per_s"] = n_elems / stats.stats.median
