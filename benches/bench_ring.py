"""Ring matmul (Z_2^64) against numpy float64 matmul, one thread each."""

from __future__ import annotations

import contextlib
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


def gmacs(benchmark: Any, macs: int) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.min:  # absent when benchmarks are disabled
        benchmark.extra_info["GMAC/s"] = macs / stats.stats.min / 1e9


def test_ring_matmul_1024_one_thread(benchmark: Any) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**64, (N, N), dtype=np.uint64)
    b = rng.integers(0, 2**64, (N, N), dtype=np.uint64)
    out = benchmark(sy.ring_matmul, a, b, threads=1)
    assert out.shape == (N, N)
    np.testing.assert_array_equal(out[:2], a[:2] @ b)  # spot check, numpy wraps mod 2^64
    benchmark.extra_info.update(macs=N**3, threads=1)
    gmacs(benchmark, N**3)


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


@pytest.mark.parametrize("n_elems", [10**6])
def test_ring_mul_elementwise(benchmark: Any, n_elems: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**64, n_elems, dtype=np.uint64)
    benchmark(sy.ring_mul, a, a)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.min:
        benchmark.extra_info["Melem/s"] = n_elems / stats.stats.min / 1e6
