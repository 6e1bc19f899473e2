"""One SGD step of a small MLP on a worker: as a plan (one request) against the same step as
remote ops on pointers (PySyft's reason for plans: a request per op, and a round trip per value).

Model: Linear(64, 32) → ReLU → Linear(32, 10), cross-entropy, batch 32 (the digits data set's
shape). ``plan``: ``ptr_plan(X, y, lr, params)`` returns the loss and the new parameters; the
step ends with ``loss.get()``. ``ops``: ``model.send(bob)``, ``opt.zero_grad()``, forward,
``loss.backward()``, ``opt.step()``, ``loss.get()``. Each records the requests the driver sent
per step (``requests_per_step``). Workers: a VirtualWorker always; a ``syft-mpc worker``
process over a socket in enabled benchmark runs.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import syft_mpc as sy
from syft_mpc.remote import serde
from syft_mpc.remote.messages import Envelope

hook = sy.TorchHook(torch)


def _disabled(config: Any) -> bool:
    bs = getattr(config, "_benchmarksession", None)
    return True if bs is None else bool(bs.disabled)


class Counting(sy.VirtualWorker):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.requests = 0

    def handle_envelope(self, env: Envelope, encode: Any = serde.encode) -> Any:
        self.requests += 1
        return super().handle_envelope(env, encode)


@pytest.fixture(scope="module", params=["virtual", "socket"])
def worker(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "virtual":
        yield Counting(hook, id="bench_plan_bob")
        return
    if _disabled(request.config):
        pytest.skip("a worker process only in enabled benchmark runs")
    from syft_mpc.net.launch import LocalWorkers

    with LocalWorkers(["bench_plan_bob"], grace_s=1.0, quiet=True) as c:
        yield sy.SocketWorker(hook, id="bench_plan_bob", host="127.0.0.1", port=c.port("bench_plan_bob"), token=c.token)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(32, 64, generator=g) * 16, torch.randint(0, 10, (32,), generator=g)


def _count(worker: Any) -> int:
    if isinstance(worker, Counting):
        return worker.requests
    conn = worker._conn
    return int(conn.stats()["messages_sent"]) if conn is not None else 0


def _measure(benchmark: Any, worker: Any, step: Any) -> None:
    step()  # warm up (the plan's graph is stored by the first call)
    before = _count(worker)
    step()
    benchmark.extra_info["requests_per_step"] = _count(worker) - before
    benchmark.pedantic(step, rounds=40 if not benchmark.disabled else 1, iterations=1)


def test_sgd_step_as_plan(benchmark: Any, worker: Any) -> None:
    model = _mlp()
    names = [n for n, _ in model.named_parameters()]

    @sy.func2plan()
    def train(X: torch.Tensor, y: torch.Tensor, lr: torch.Tensor, params: list[torch.Tensor]) -> Any:
        loss = F.cross_entropy(torch.func.functional_call(model, dict(zip(names, params)), (X,)), y)
        loss.backward()
        return (loss, *[p - lr * p.grad for p in params])

    X, y = _batch()
    train.build(X, y, torch.tensor(0.1), [p.detach().requires_grad_(True) for p in model.parameters()])
    ptr_plan = train.send(worker)
    state = {"params": [p.detach().send(worker) for p in model.parameters()]}  # type: ignore[attr-defined]
    Xp, yp, lrp = X.send(worker), y.send(worker), torch.tensor(0.1).send(worker)  # type: ignore[attr-defined]

    def step() -> float:
        loss, *state["params"] = ptr_plan(Xp, yp, lrp, state["params"])  # type: ignore[operator]
        return float(loss.get())

    _measure(benchmark, worker, step)


def test_sgd_step_as_remote_ops(benchmark: Any, worker: Any) -> None:
    model = _mlp()
    X, y = _batch()
    model.send(worker)  # type: ignore[attr-defined]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Xp, yp = X.send(worker), y.send(worker)  # type: ignore[attr-defined]

    def step() -> float:
        opt.zero_grad()
        loss = F.cross_entropy(model(Xp), yp)
        loss.backward()
        opt.step()
        return float(loss.get().detach())

    _measure(benchmark, worker, step)
