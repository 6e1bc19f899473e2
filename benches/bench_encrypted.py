"""Encrypted-tensor ops end to end: the user API (SharedTensor, aten dispatch, workers, MPC session).

Two share holders and a crypto provider, each op timed **including the reveal of its
result** (``.get()``), as issue 5 asks. ``extra_info`` records the size and elements/s.

* ``virtual``: VirtualWorkers in this process (the parties still talk over loopback TCP).
* ``socket``: three ``syft-mpc worker`` processes started by ``syft_mpc.net.launch.LocalWorkers``
  (only when benchmarks are enabled: starting them takes seconds).

With ``--benchmark-disable`` (the default in pyproject) every case runs once at a small size,
so this file doubles as a quick smoke test. Full sizes::

    .venv/bin/python -m pytest benches/bench_encrypted.py --benchmark-enable -q \
        --benchmark-columns=min,median,rounds --benchmark-sort=name
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import syft_mpc as sy
from syft_mpc.mpc_session import close_all_sessions

hook = sy.TorchHook(torch)


def _disabled(config: Any) -> bool:
    bs = getattr(config, "_benchmarksession", None)
    return True if bs is None else bool(bs.disabled)


@pytest.fixture(scope="module", params=["virtual", "socket"])
def parties(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any, Any]]:
    if request.param == "virtual":
        ws = tuple(sy.VirtualWorker(hook, id=f"be_{n}") for n in ("bob", "alice", "james"))
        yield ws
        close_all_sessions()
        return
    if _disabled(request.config):
        pytest.skip("socket workers only in enabled benchmark runs (starting 3 processes takes seconds)")
    from syft_mpc.net.launch import LocalWorkers

    with LocalWorkers(["bob", "alice", "james"], grace_s=1.0, quiet=True) as c, c.socket_workers(hook) as ws:
        yield ws


def _run(benchmark: Any, fn: Callable[[], Any], elements: int, rounds: int, **info: Any) -> None:
    benchmark.extra_info.update(info)
    benchmark.extra_info["elements"] = elements
    if benchmark.disabled:  # runs fn once
        benchmark(fn)
        return
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["elements_per_s"] = elements / benchmark.stats.stats.min


def _share(x: torch.Tensor, p: tuple[Any, Any, Any], requires_grad: bool = False) -> Any:
    return x.fix_prec().share(p[0], p[1], crypto_provider=p[2], requires_grad=requires_grad)


def _size(benchmark: Any, full: Any, small: Any) -> Any:
    return small if benchmark.disabled else full


def test_mul(benchmark: Any, parties: Any) -> None:
    n = _size(benchmark, 1_000_000, 1000)
    x, y = _share(torch.randn(n), parties), _share(torch.randn(n), parties)
    _run(benchmark, lambda: (x * y).get(), n, 5, op="mul", n=n)


def test_matmul(benchmark: Any, parties: Any) -> None:
    d = _size(benchmark, 256, 16)
    a, b = _share(torch.randn(d, d), parties), _share(torch.randn(d, d), parties)
    _run(benchmark, lambda: (a @ b).get(), d * d * d, 5, op="matmul", shape=f"{d}x{d}@{d}x{d}")


def test_relu(benchmark: Any, parties: Any) -> None:
    n = _size(benchmark, 1_000_000, 1000)
    x = _share(torch.randn(n), parties)
    _run(benchmark, lambda: F.relu(x).get(), n, 3, op="relu", n=n)


def test_sigmoid(benchmark: Any, parties: Any) -> None:
    n = _size(benchmark, 100_000, 1000)
    x = _share(torch.randn(n) * 3, parties)
    _run(benchmark, lambda: torch.sigmoid(x).get(), n, 3, op="sigmoid", n=n)


def test_softmax(benchmark: Any, parties: Any) -> None:
    rows = _size(benchmark, 1000, 10)
    x = _share(torch.randn(rows, 100), parties)
    _run(benchmark, lambda: F.softmax(x, 1).get(), rows * 100, 3, op="softmax", shape=f"{rows}x100 dim 1")


def _mlp(p: Any) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    return m.fix_precision().share(p[0], p[1], crypto_provider=p[2], requires_grad=True)


def test_mlp_inference(benchmark: Any, parties: Any) -> None:
    batch = _size(benchmark, 64, 4)
    model = _mlp(parties)
    x = _share(torch.rand(batch, 784), parties)

    def step() -> Any:
        with torch.no_grad():
            return model(x).get()

    _run(benchmark, step, batch, 5, op="MLP 784-128-128-10 inference", batch=batch)


def test_mlp_training_step(benchmark: Any, parties: Any) -> None:
    batch = _size(benchmark, 64, 4)
    model = _mlp(parties)
    opt = torch.optim.SGD(model.parameters(), lr=0.01).fix_precision()
    x = _share(torch.rand(batch, 784), parties)
    y = _share(F.one_hot(torch.randint(0, 10, (batch,)), 10).float(), parties)

    def step() -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.get()

    _run(benchmark, step, batch, 3, op="MLP training step (forward, cross-entropy, backward, SGD)", batch=batch)
