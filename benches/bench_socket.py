"""SocketWorker over loopback: a small remote op round trip, and 100 MB send + get.

One `syft-mpc worker` process (started by `LocalWorkers`, stopped on teardown) serves the
benchmarks. Issue 4's targets: a small remote op (pointer + pointer on 10 elements,
`.get()` included) <= 300 us median; 100 MB send + get back at >= 1 GB/s.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import torch

import syft_mpc as sy
from syft_mpc.net.launch import LocalWorkers

hook = sy.TorchHook(torch)


@pytest.fixture(scope="module")
def bob() -> Iterator[sy.SocketWorker]:
    with LocalWorkers(["bench_bob"], quiet=True) as c:
        w = sy.SocketWorker(hook, id="bench_bob", port=c.port("bench_bob"), token=c.token, known_workers={})
        yield w
        w.close()


def _median_us(benchmark: Any) -> "float | None":
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median:
        return float(stats.stats.median * 1e6)
    return None


def test_socket_small_op_round_trip(benchmark: Any, bob: sy.SocketWorker) -> None:
    """`(x + y).get()` on 10-element pointers: the Command is posted (shape inferred on the
    driver), then one Fetch round trip."""
    x = torch.randn(10).send(bob)
    y = torch.randn(10).send(bob)
    expected = x.copy().get() + y.copy().get()
    for _ in range(20):  # warm-up: the first op loads torch's meta kernels (shape inference)
        (x + y).get()
    result = benchmark(lambda: (x + y).get())
    assert torch.equal(result, expected)
    us = _median_us(benchmark)
    if us is not None:
        benchmark.extra_info["add10_get_us"] = us


def test_socket_100mb_send_get(benchmark: Any, bob: sy.SocketWorker) -> None:
    """`t.send(bob).get()` of a 100 MB float32 tensor; GB/s counts the bytes once each way.
    Two warm-up rounds first: a fresh worker's first large messages also pay for faulting in
    its memory."""
    t = torch.randn(25_000_000)
    nbytes = t.numel() * t.element_size()
    back = benchmark.pedantic(lambda: t.send(bob).get(), rounds=5, iterations=1, warmup_rounds=2)
    assert torch.equal(back, t)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median:
        benchmark.extra_info["bytes"] = nbytes
        benchmark.extra_info["GB_per_s_each_way"] = 2 * nbytes / stats.stats.median / 1e9
