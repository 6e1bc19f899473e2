"""Federated learning: federated datasets and loaders, FedAvg, secure aggregation, DP (syft_mpc.federated)."""

from __future__ import annotations

import copy
import gc
import math
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syft_mpc as sy
from syft_mpc.remote import serde
from syft_mpc.federated import CentralDP, FedAvg, LocalDP, SecureAggregation, plain_sum, secure_sum
from syft_mpc.federated.local import UnsupportedModelError, batch_schedule, model_spec
from syft_mpc.remote.messages import LocalTrain
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.remote.messages import Envelope, Ok
from syft_mpc.mpc_session import close_all_sessions

hook = sy.TorchHook(torch)


def _workers(prefix: str, n: int) -> list[Any]:
    return [sy.VirtualWorker(hook, id=f"{prefix}{i}") for i in range(n)]


def _toy(n: int = 60, d: int = 6, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, classes, generator=g)
    return x, (x @ w).argmax(1)


def _mlp(d: int = 6, classes: int = 3, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, classes))


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.fixture(autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    close_all_sessions()
    gc.collect()
    sy.local_worker.flush_gc()


# ============================================================================ datasets


def test_base_dataset_federate_and_errors() -> None:
    bob, alice, carol = _workers("fl_ds_", 3)
    x, y = torch.arange(14.0).view(7, 2), torch.arange(7)
    ds = sy.BaseDataset(x, y, transform=lambda t: t * 10)
    assert len(ds) == 7 and torch.equal(ds[2][0], x[2] * 10) and ds.location is None
    fed = ds.federate((bob, alice, carol))
    assert isinstance(fed, sy.FederatedDataset) and fed.workers == [bob.id, alice.id, carol.id]
    assert [len(fed.datasets[w]) for w in fed.workers] == [3, 2, 2] and len(fed) == 7  # sizes differ by <= 1
    assert fed.datasets[alice.id].data.location == alice and fed.datasets[alice.id].targets.location == alice
    assert torch.equal(fed[alice.id].data.copy().get(), x[3:5] * 10)  # the transform ran before sending
    assert "Number of datapoints: 7" in repr(fed)
    back = fed.get_dataset(carol.id)
    assert torch.equal(back.targets, y[5:]) and fed.workers == [bob.id, alice.id] and carol._objects == {}
    # any torch Dataset of pairs (TorchHook attaches .federate), and the function form
    from torch.utils.data import TensorDataset

    f2 = TensorDataset(x, y).federate(bob, alice)
    assert [len(f2[w]) for w in f2.workers] == [4, 3]
    assert len(sy.federate(sy.BaseDataset(x, y), (carol,))) == 7

    with pytest.raises(ValueError, match="7 samples but targets has 6"):
        sy.BaseDataset(x, y[:6])
    with pytest.raises(ValueError, match="some worker would get no data"):
        sy.BaseDataset(x[:2], y[:2]).federate((bob, alice, carol))
    with pytest.raises(ValueError, match="same worker twice"):
        sy.BaseDataset(x, y).federate((bob, bob))
    with pytest.raises(ValueError, match="send each BaseDataset"):
        sy.FederatedDataset([sy.BaseDataset(x, y)])
    with pytest.raises(ValueError, match=f"worker {bob.id} has no data"):
        sy.FederatedDataset([sy.BaseDataset(x[:0], y[:0]).send(bob)])
    with pytest.raises(ValueError, match=f"two datasets are on worker {alice.id}"):
        sy.FederatedDataset([sy.BaseDataset(x, y).send(alice), sy.BaseDataset(x, y).send(alice)])
    with pytest.raises(ValueError, match="same worker"):
        sy.BaseDataset(x.send(bob), y.send(alice))


# ============================================================================ loader

_LW = _workers("fl_ld_", 4)


def _fed_of(sizes: list[int], features: int = 2) -> tuple[Any, list[torch.Tensor]]:
    """Worker i holds samples whose first feature is their global index (to identify them in batches)."""
    parts, ids, start = [], [], 0
    for w, n in zip(_LW, sizes):
        w.clear_objects()
        idx = torch.arange(start, start + n)
        x = torch.stack([idx.float()] + [torch.zeros(n)] * (features - 1), 1)
        parts.append(sy.BaseDataset(x.send(w), idx.send(w)))
        ids.append(idx)
        start += n
    return sy.FederatedDataset(parts), ids


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 13), min_size=1, max_size=4),
    batch_size=st.integers(1, 6),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
)
def test_loader_one_worker_at_a_time(sizes: list[int], batch_size: int, shuffle: bool, drop_last: bool) -> None:
    if drop_last and all(n < batch_size for n in sizes):
        return  # refused (tested below)
    fed, ids = _fed_of(sizes)
    loader = sy.FederatedDataLoader(fed, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
    seen: dict[str, list[int]] = {w.id: [] for w in _LW[: len(sizes)]}
    order: list[str] = []
    count = 0
    for data, target in loader:
        count += 1
        assert data.location == target.location and data.shape[1:] == (2,) and target.shape == data.shape[:1]
        assert data.shape[0] == batch_size or (not drop_last and data.shape[0] < batch_size)
        d, t = data.get(), target.get()
        assert torch.equal(d[:, 0].long(), t)  # inputs and targets stay aligned
        seen[data.location.id] += t.tolist()
        if not order or order[-1] != data.location.id:
            order.append(data.location.id)
    assert count == len(loader)
    assert len(order) == len(set(order))  # all batches of one worker, then the next
    for got, idx, n in zip(seen.values(), ids, sizes):
        full = idx.tolist()
        expect = full[: n - n % batch_size] if drop_last else full
        if not shuffle:
            assert got == expect  # in order
        elif not drop_last:
            assert sorted(got) == full  # every sample exactly once
        else:
            assert len(got) == len(expect) == len(set(got)) and set(got) <= set(full)


def test_loader_iter_per_worker_shuffle_and_errors() -> None:
    fed, ids = _fed_of([5, 9, 7])
    loader = sy.FederatedDataLoader(fed, batch_size=2, iter_per_worker=True, shuffle=True, generator=torch.Generator().manual_seed(3))
    assert len(loader) == 3  # the worker with fewest batches (5 samples -> 3 batches) sets the pace
    items = list(loader)
    assert len(items) == 3 and all(set(b) == set(_LW[:3]) for b in items)
    for b in items:
        for w, (data, target) in b.items():
            assert data.location == w and target.location == w
    got = [t for b in items for t in b[_LW[0]][1].get().tolist()]
    assert sorted(got) == ids[0].tolist() and got != ids[0].tolist()  # every sample once, shuffled
    again = [b[_LW[0]][1].get().tolist() for b in sy.FederatedDataLoader(fed, batch_size=2, iter_per_worker=True, shuffle=True, generator=torch.Generator().manual_seed(3))]
    assert sum(again, []) == got  # a seeded generator gives the same order
    assert len(sy.FederatedDataLoader(fed, batch_size=4, drop_last=True)) == 1 + 2 + 1
    # PySyft's torch DataLoader options are accepted and ignored
    sy.FederatedDataLoader(fed, batch_size=4, num_workers=1, pin_memory=True)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        sy.FederatedDataLoader(fed, batch_size=0)
    with pytest.raises(TypeError, match="takes a FederatedDataset"):
        sy.FederatedDataLoader(sy.BaseDataset(torch.zeros(3, 1), torch.zeros(3)), batch_size=1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        sy.FederatedDataLoader(fed, batch_size=1, sampler=None)
    with pytest.raises(ValueError, match="no full batch"):
        sy.FederatedDataLoader(fed, batch_size=6, drop_last=True, iter_per_worker=True)


def test_pysyft_part6_style_training_loop() -> None:
    """A PySyft tutorial Part 6 loop (federate, FederatedDataLoader, model.send/get per batch) learns."""
    bob, alice = _workers("fl_p6_", 2)
    x, y = _toy(80)
    federated_train_loader = sy.FederatedDataLoader(sy.BaseDataset(x, y).federate((bob, alice)), batch_size=16, shuffle=True)
    model = _mlp()
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    first = last = None
    for epoch in range(2):
        for batch_idx, (data, target) in enumerate(federated_train_loader):
            model.send(data.location)
            optimizer.zero_grad()
            output = model(data)
            loss = F.cross_entropy(output, target)
            loss.backward()
            optimizer.step()
            model.get()
            loss = loss.get()
            first = loss.item() if first is None else first
            last = loss.item()
    assert last is not None and first is not None and last < first
    del data, target, output
    gc.collect()
    sy.local_worker.flush_gc()
    assert len(bob._objects) == 2 and len(alice._objects) == 2  # only the data remains


# ============================================================================ secure aggregation


@pytest.mark.parametrize("n", [2, 3])
def test_secure_sum_equals_plain_sum(n: int) -> None:
    ws = _workers(f"fl_ss{n}_", n)
    cp = sy.VirtualWorker(hook, id=f"fl_ss{n}_cp")
    vals = [torch.randn(5, 7) * (i + 1) for i in range(n)]
    got = secure_sum([v.send(w) for v, w in zip(vals, ws)], ws, cp)
    exact = sum(v.double() for v in vals)
    assert float((got.double() - exact).abs().max()) <= n * 2.0**-17 + 1e-5  # fixed-point rounding only
    assert torch.allclose(plain_sum([v.send(w) for v, w in zip(vals, ws)]), exact)
    assert all(not w._objects for w in ws) and not cp._objects  # inputs stay, shares are freed
    with pytest.raises(ValueError, match="at least 2 inputs"):
        secure_sum([vals[0].send(ws[0])], ws, cp)
    with pytest.raises(ValueError, match="shape"):
        secure_sum([torch.zeros(2).send(ws[0]), torch.zeros(3).send(ws[1])], ws, cp)


@pytest.mark.parametrize("n", [2, 3])
def test_fedavg_secure_aggregation_equals_plain_average(n: int) -> None:
    ws = _workers(f"fl_fa{n}_", n)
    x, y = _toy(30 * n)
    fed = sy.BaseDataset(x, y).federate(ws)
    kw: dict[str, Any] = dict(rounds=2, local_steps=4, batch_size=8, lr=0.3, momentum=0.5, seed=7, progress=False)
    plain, secure, ptr = _mlp(), _mlp(), _mlp()
    threads = torch.get_num_threads()
    FedAvg(plain, fed, **kw).fit()
    assert torch.get_num_threads() == threads  # workers trained on 1 thread each, concurrently, then restored
    h = FedAvg(secure, fed, secure_aggregation=True, **kw).fit()
    FedAvg(ptr, fed, secure_aggregation=SecureAggregation(crypto_provider=sy.VirtualWorker(hook, id=f"fl_fa{n}_cp")), local_training="pointers", **kw).fit()
    assert _max_diff(plain, secure) < 1e-5 and _max_diff(plain, ptr) < 1e-5
    assert _max_diff(plain, _mlp()) > 1e-3  # it did train
    assert [r.participants for r in h] == [n, n] and all(math.isfinite(r.train_loss) for r in h)
    # hand-computed FedAvg round: weighted average of each worker's local SGD result
    model = _mlp()
    tr = FedAvg(copy.deepcopy(model), fed, **kw)
    ptrs = tr._local_updates(1, fed.workers)
    sizes = torch.tensor([len(fed[w]) for w in fed.workers], dtype=torch.float64)
    vecs = [p.get() for p in ptrs]
    avg = sum(v.double() for v in vecs)[:-1] / sizes.sum()
    for i, w in enumerate(fed.workers):
        ref = copy.deepcopy(model)
        opt = optim.SGD(ref.parameters(), lr=0.3, momentum=0.5)
        xs, ys = fed[w].data.copy().get(), fed[w].targets.copy().get()
        for idx in batch_schedule(len(xs), 8, 4, tr._worker_seed(1, i)):
            opt.zero_grad()
            F.cross_entropy(ref(xs[idx]), ys[idx]).backward()
            opt.step()
        delta = torch.cat([(a - b).detach().reshape(-1) for a, b in zip(ref.parameters(), model.parameters())])
        assert torch.allclose(vecs[i][:-1], delta * len(xs), atol=1e-5)
    tr2 = FedAvg(model, fed, **kw)
    tr2.train_round()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    flat0 = torch.cat([p.detach().reshape(-1) for p in _mlp().parameters()])
    assert torch.allclose(flat - flat0, avg.float(), atol=1e-6)


def _spy_workers(workers: list[Any]) -> tuple[list[tuple[str, list[Any]]], list[Any]]:
    """Snapshots every worker's object store after each request it handles, and every value replied to the driver."""
    snaps: list[tuple[str, list[Any]]] = []
    to_driver: list[Any] = []
    for w in workers:
        orig = w.handle

        def handle(data: Any, w: Any = w, orig: Callable[[Any], bytes] = orig) -> bytes:
            reply = orig(data)
            snaps.append((w.id, [v.clone() for v in w._objects.values() if isinstance(v, torch.Tensor)]))
            if serde.decode(data).sender == "me":
                rep = serde.decode(reply)
                if isinstance(rep, Ok):
                    to_driver.append(rep.value)
            return reply

        w.handle = handle
    return snaps, to_driver


def _tensors_in(v: Any) -> Iterator[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        yield v
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _tensors_in(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _tensors_in(x)


def _reveals(t: torch.Tensor, update: torch.Tensor) -> bool:
    """Whether tensor t is that update in the clear (as floats or fixed-point encoded)."""
    if t.shape != update.shape:
        return False
    if t.dtype == torch.int64:
        return bool((t - torch.round(update.double() * 2**16).long()).abs().max() <= 1)
    return t.is_floating_point() and torch.allclose(t.double(), update.double(), atol=1e-6)


@pytest.mark.parametrize("aggregators", [False, True], ids=["workers-hold-shares", "separate-aggregators"])
def test_no_party_sees_another_workers_update(aggregators: bool) -> None:
    ws = _workers(f"fl_spy{int(aggregators)}_", 3)
    aggs = _workers(f"fl_agg{int(aggregators)}_", 2) if aggregators else []
    x, y = _toy(90)
    fed = sy.BaseDataset(x, y).federate(ws)
    kw: dict[str, Any] = dict(rounds=1, local_steps=3, batch_size=8, lr=0.3, seed=11, progress=False)
    model = _mlp()
    clear_ptrs = FedAvg(copy.deepcopy(model), fed, **kw)._local_updates(1, fed.workers)
    clear = {p.location.id: p.get() for p in clear_ptrs}
    assert all(v.abs().max() > 1e-3 for v in clear.values())
    sa = SecureAggregation(holders=aggs or None)
    tr = FedAvg(model, fed, secure_aggregation=sa, **kw)
    snaps, to_driver = _spy_workers(ws + aggs)
    tr.train_round()
    assert len(snaps) > 10 and to_driver
    for holder, objs in snaps:
        for t in objs:
            for owner, update in clear.items():
                if owner != holder:
                    assert not _reveals(t, update), f"{holder} held {owner}'s update in the clear"
    for v in to_driver:  # the driver (aggregator and crypto provider here) never gets one update
        for t in _tensors_in(v):
            assert not any(_reveals(t, u) for u in clear.values())
    assert not sy.local_worker._objects
    # and the round did what plain FedAvg does
    ref = copy.deepcopy(_mlp())
    FedAvg(ref, fed, **kw).fit()
    assert _max_diff(ref, model) < 1e-5


def test_pysyft_tutorial_part10_encrypted_aggregation() -> None:
    """PySyft tutorial Part 10, section 2, as written but for the import and a synthetic data set
    (the tutorial unpickles Boston Housing; nothing is unpickled here)."""
    from torch.utils.data import DataLoader, TensorDataset

    class Parser:
        """Parameters for training"""

        def __init__(self) -> None:
            self.epochs = 2
            self.lr = 0.001
            self.batch_size = 8
            self.seed = 1

    args = Parser()
    torch.manual_seed(args.seed)
    X = torch.randn(64, 13)
    y = X @ torch.randn(13) + 0.1 * torch.randn(64)
    train_loader = DataLoader(TensorDataset(X, y), batch_size=args.batch_size, shuffle=True)

    class Net(nn.Module):
        def __init__(self) -> None:
            super(Net, self).__init__()
            self.fc1 = nn.Linear(13, 32)
            self.fc2 = nn.Linear(32, 24)
            self.fc3 = nn.Linear(24, 1)

        def forward(self, x: Any) -> Any:
            x = x.view(-1, 13)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    bob = sy.VirtualWorker(hook, id="bob")
    alice = sy.VirtualWorker(hook, id="alice")
    james = sy.VirtualWorker(hook, id="james")
    compute_nodes = [bob, alice]
    remote_dataset: tuple[list[Any], list[Any]] = (list(), list())
    for batch_idx, (data, target) in enumerate(train_loader):
        data = data.send(compute_nodes[batch_idx % len(compute_nodes)])
        target = target.send(compute_nodes[batch_idx % len(compute_nodes)])
        remote_dataset[batch_idx % len(compute_nodes)].append((data, target))

    def update(data: Any, target: Any, model: Any, optimizer: Any) -> Any:
        model.send(data.location)
        optimizer.zero_grad()
        pred = model(data)
        loss = F.mse_loss(pred.view(-1), target)
        loss.backward()
        optimizer.step()
        return model

    bobs_model = Net()
    alices_model = Net()
    bobs_optimizer = optim.SGD(bobs_model.parameters(), lr=args.lr)
    alices_optimizer = optim.SGD(alices_model.parameters(), lr=args.lr)
    models = [bobs_model, alices_model]
    params = [list(bobs_model.parameters()), list(alices_model.parameters())]
    optimizers = [bobs_optimizer, alices_optimizer]

    reveals: list[Any] = []
    orig_reveal = sy.SharedTensor._reveal

    def counting_reveal(self: Any) -> Any:
        reveals.append(tuple(self.shape))
        return orig_reveal(self)

    sy.SharedTensor._reveal = counting_reveal  # type: ignore[method-assign]
    try:

        def train(epoch: int) -> None:
            for data_index in range(len(remote_dataset[0]) - 1):
                # update remote models
                for remote_index in range(len(compute_nodes)):
                    data, target = remote_dataset[remote_index][data_index]
                    models[remote_index] = update(data, target, models[remote_index], optimizers[remote_index])
                expected = [  # (test only) what the average must be
                    (params[0][i].copy().get() + params[1][i].copy().get()) / 2 for i in range(len(params[0]))
                ]
                # encrypted aggregation
                new_params = list()
                for param_i in range(len(params[0])):
                    spdz_params = list()
                    for remote_index in range(len(compute_nodes)):
                        spdz_params.append(params[remote_index][param_i].copy().fix_precision().share(bob, alice, crypto_provider=james).get())
                    new_param = (spdz_params[0] + spdz_params[1]).get().float_precision() / 2
                    new_params.append(new_param)
                # cleanup
                with torch.no_grad():
                    for model in params:
                        for param in model:
                            param *= 0
                    for model in models:
                        model.get()
                    for remote_index in range(len(compute_nodes)):
                        for param_index in range(len(params[remote_index])):
                            params[remote_index][param_index].set_(new_params[param_index])
                for got, want in zip(new_params, expected):
                    assert torch.allclose(got, want.detach(), atol=1e-4)

        for epoch in range(args.epochs):
            train(epoch)
    finally:
        sy.SharedTensor._reveal = orig_reveal  # type: ignore[method-assign]
    n_params = len(params[0])
    steps = args.epochs * (len(remote_dataset[0]) - 1)
    assert len(reveals) == n_params * steps  # only the sums were ever reconstructed
    assert all(torch.equal(p, q) for p, q in zip(bobs_model.parameters(), alices_model.parameters()))
    models[0].eval()
    with torch.no_grad():
        assert math.isfinite(float(F.mse_loss(models[0](X).view(-1), y)))


# ============================================================================ bad input


def test_bad_input_is_refused_before_any_training() -> None:
    ws = _workers("fl_bad_", 3)
    x, y = _toy(30)
    fed = sy.BaseDataset(x, y).federate(ws)
    sent: list[str] = []
    for w in ws:
        orig = w.handle

        def handle(data: Any, orig: Callable[[Any], bytes] = orig) -> bytes:
            sent.append(type(serde.decode(data).body).__name__)
            return orig(data)

        w.handle = handle
    kw: dict[str, Any] = dict(rounds=2, progress=False)
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: FedAvg(nn.Sequential(nn.Linear(5, 3)), fed, **kw), r"cannot take the workers' samples \(input shape \(6,\)"),
        (lambda: FedAvg(nn.Sequential(nn.Linear(6, 1)), fed, loss="mse", **kw), "mse needs them equal"),
        (lambda: FedAvg(_mlp(), fed, batch_size=0, **kw), "batch_size must be an integer >= 1"),
        (lambda: FedAvg(_mlp(), fed, local_steps=0, **kw), "local_steps"),
        (lambda: FedAvg(_mlp(), fed, lr=float("nan"), **kw), "lr must be"),
        (lambda: FedAvg(_mlp(), fed, sample_rate=1.5, **kw), "sample_rate"),
        (lambda: FedAvg(_mlp(), fed, loss="hinge", **kw), "unknown loss"),
        (lambda: FedAvg(_mlp(), fed, dp=CentralDP(0.0, 1e-5, 1.0), **kw), "epsilon"),
        (lambda: FedAvg(_mlp(), fed, dp=CentralDP(1.0, 1.5, 1.0), **kw), "delta"),
        (lambda: FedAvg(_mlp(), fed, dp=CentralDP(1.0, 1e-5, -1.0), **kw), "clip_norm"),
        (lambda: FedAvg(_mlp(), fed, local_dp=LocalDP(0.0, 1.0, 1e-5), **kw), "noise_multiplier"),
        (lambda: FedAvg(_mlp(), fed, local_dp=LocalDP(1.0, 1.0, 1e-5), batch_size=64, **kw), "worker fl_bad_0 has only 10 samples"),
        (lambda: FedAvg(_mlp(), fed, local_dp=LocalDP(1.0, 1.0, 1e-5), momentum=0.9, **kw), "momentum=0"),
        (lambda: FedAvg(_mlp(), fed, local_dp=LocalDP(1.0, 1.0, 1e-5), local_training="pointers", **kw), "worker-side routine"),
        (lambda: FedAvg(_mlp(), fed, secure_aggregation=SecureAggregation(holders=ws[:1]), **kw), "at least 2 share holders"),
        (lambda: FedAvg(_mlp(), fed, secure_aggregation=SecureAggregation(crypto_provider=ws[0]), **kw), "must not be a share holder"),
        (lambda: FedAvg(_mlp(), fed, eval_data=(torch.zeros(4, 5), torch.zeros(4).long()), **kw), "eval_data samples"),
        (lambda: FedAvg(nn.Sequential(nn.Linear(6, 3)).send(ws[0]), fed, **kw), "must be local"),  # type: ignore[operator]
    ]
    for make, match in cases:
        with pytest.raises(ValueError, match=match):
            make()
    # mismatched shapes between workers
    other = sy.FederatedDataset([sy.BaseDataset(x[:10].send(ws[0]), y[:10].send(ws[0])), sy.BaseDataset(x[:10, :5].send(ws[1]), y[:10].send(ws[1]))])
    with pytest.raises(ValueError, match=r"worker fl_bad_0's samples have input shape \(6,\) but worker fl_bad_1's have \(5,\)"):
        FedAvg(_mlp(), other, **kw)
    # a model the worker-side routine cannot build
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: Any) -> Any:
            return self.fc(x)

    with pytest.raises(UnsupportedModelError, match="nn.Sequential"):
        FedAvg(Custom(), fed, local_training="worker", **kw)
    with pytest.raises(UnsupportedModelError):
        model_spec(nn.Sequential(nn.BatchNorm1d(6)))
    assert FedAvg(Custom(), fed, **kw).local_training == "pointers"
    assert set(sent) <= {"NoneType", "Store"}  # data was sent in this test, but nothing ran on a worker
    # a worker refuses a spec outside its layer table
    msg = LocalTrain([["Lambda", {}]], [], 1, 2, 3, 1, 1, 0.1, 0.0, "mse", 0, True, 0.0, True, 0.0, 0.0, 0.0, 0)
    with pytest.raises(sy.errors.RemoteError, match="Lambda"):
        sy.local_worker._send(ws[0], msg)


# ============================================================================ differential privacy


@pytest.mark.parametrize("n", [2, 3])
def test_noise_shares_give_the_documented_noise(n: int) -> None:
    ws = _workers(f"fl_nz{n}_", n)
    cp = sy.VirtualWorker(hook, id=f"fl_nz{n}_cp")
    out = secure_sum([torch.zeros(4000).send(w) for w in ws], ws, cp, noise_std=2.0)
    expected = 2.0 * math.sqrt(n / (n - 1))  # each of n holders adds variance 4 / (n - 1)
    assert abs(float(out.std()) / expected - 1) < 0.06 and abs(float(out.mean())) < 0.2
    sy.local_worker.flush_gc()  # the inputs' pointers died with the list
    assert not any(w._objects for w in ws)


def test_central_dp_fedavg_accounting_and_clipping() -> None:
    from syft_mpc.dp import FedAvgPrivacy

    ws = _workers("fl_cdp_", 3)
    x, y = _toy(90)
    fed = sy.BaseDataset(x, y).federate(ws)
    dp = CentralDP(target_epsilon=4.0, target_delta=1e-3, clip_norm=0.05)
    kw: dict[str, Any] = dict(rounds=3, local_steps=5, batch_size=8, lr=0.5, seed=5, progress=False, dp=dp)
    tr = FedAvg(_mlp(), fed, secure_aggregation=True, **kw)
    for mode in ("worker", "pointers"):  # each update is clipped where it lives
        probe = FedAvg(_mlp(), fed, local_training=mode, **kw)
        for p in probe._local_updates(1, fed.workers):
            assert float(p.get().norm()) <= 0.05 * (1 + 1e-6)
    h = tr.fit()
    ref = FedAvgPrivacy(4.0, 1e-3, 0.05, 1.0, 3)
    eps = []
    for _ in range(3):
        ref.step()
        eps.append(ref.epsilon())
    assert np.allclose(h.column("epsilon"), eps) and eps[-1] <= 4.0 + 1e-6
    assert np.isnan(h.column("train_loss")).all()  # a loss is not released under DP
    assert tr.noise_multiplier == pytest.approx(ref.noise_multiplier)
    with pytest.raises(RuntimeError, match="calibrated"):
        tr.train_round()
    # plain DP (no secure aggregation): the server adds the noise
    h2 = FedAvg(_mlp(), fed, **kw).fit()
    assert np.allclose(h2.column("epsilon"), eps)


def test_local_dp_sgd_on_workers() -> None:
    from opacus.accountants import RDPAccountant

    ws = _workers("fl_ldp_", 2)
    x, y = _toy(80)
    fed = sy.BaseDataset(x, y).federate(ws)
    ldp = LocalDP(noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-4)
    tr = FedAvg(_mlp(), fed, rounds=2, local_steps=4, batch_size=10, lr=0.2, seed=3, progress=False, local_dp=ldp, secure_aggregation=True)
    r1 = tr.train_round()
    per_round = dict(tr.last_local_epsilons)
    assert set(per_round) == {w.id for w in ws} and all(e > 0 for e in per_round.values())
    acc = RDPAccountant()
    for _ in range(4):
        acc.step(noise_multiplier=1.1, sample_rate=10 / 40)
    assert tr.local_epsilons()[ws[0].id] == pytest.approx(acc.get_epsilon(delta=1e-4))
    assert r1.local_epsilon == pytest.approx(per_round[ws[0].id], rel=1e-6)  # the worker's own report agrees
    r2 = tr.train_round()
    assert r2.local_epsilon > r1.local_epsilon and math.isnan(r2.train_loss)


# ============================================================================ history, checkpoints, progress


def test_history_plot_checkpoint_and_resume(tmp_path: Any, capsys: Any) -> None:
    ws = _workers("fl_ck_", 2)
    x, y = _toy(60)
    fed = sy.BaseDataset(x, y).federate(ws)
    kw: dict[str, Any] = dict(rounds=3, local_steps=3, batch_size=8, lr=0.3, seed=2, eval_data=(x, y), secure_aggregation=True)
    full = _mlp()
    h = FedAvg(full, fed, progress=True, **kw).fit()
    assert "FedAvg" in capsys.readouterr().err  # the tqdm bar
    assert len(h) == 3 and h.column("round").tolist() == [1, 2, 3] and np.isfinite(h.column("test_accuracy")).all()
    png = h.plot(str(tmp_path / "h.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    ck = str(tmp_path / "ck" / "fedavg.npz")
    part = FedAvg(_mlp(), fed, progress=False, checkpoint=ck, checkpoint_every=2, **kw)
    part.train_round()
    part.train_round()
    with np.load(ck, allow_pickle=False) as z:
        assert int(z["rounds_done"]) == 2
    resumed = _mlp(seed=99)  # other start values: everything comes from the checkpoint
    tr = FedAvg(resumed, fed, progress=False, **kw).load_checkpoint(ck)
    assert tr.rounds_done == 2 and tr.history.column("train_loss").tolist() == part.history.column("train_loss").tolist()
    tr.fit()
    assert _max_diff(resumed, full) == 0.0 and len(tr.history) == 3
    with pytest.raises(ValueError, match="parameters"):
        FedAvg(nn.Sequential(nn.Linear(6, 3)), fed, progress=False, **kw).load_checkpoint(ck)


# ============================================================================ worker processes


def _socket_rounds(ws: list[Any]) -> None:
    x, y = _toy(90)
    fed = sy.BaseDataset(x, y).federate(ws)
    base = [w.sync() for w in ws]
    assert base == [2, 2, 2]
    kw: dict[str, Any] = dict(rounds=2, local_steps=4, batch_size=8, lr=0.3, seed=4, progress=False)
    plain, secure = _mlp(), _mlp()
    FedAvg(plain, fed, **kw).fit()
    h = FedAvg(secure, fed, secure_aggregation=True, **kw).fit()
    assert _max_diff(plain, secure) < 1e-5 and [r.participants for r in h] == [3, 3]
    dp = FedAvg(_mlp(), fed, secure_aggregation=True, dp=CentralDP(8.0, 1e-3, 0.1), **kw).fit()
    assert dp[-1].epsilon <= 8.0 + 1e-6
    gc.collect()
    sy.local_worker.flush_gc()
    assert [w.sync() for w in ws] == base  # only the data is left on the workers


def test_fedavg_secure_aggregation_over_socket_workers() -> None:
    """Three worker processes: LocalTrain runs in each, shares go worker to worker, the driver deals."""
    with LocalWorkers(["fl_bob", "fl_alice", "fl_carol"], grace_s=1.0, quiet=True) as c, c.socket_workers(hook) as ws:
        _socket_rounds(list(ws))


def test_docstring_examples() -> None:
    import doctest
    import importlib

    for name in ("dataset", "loader"):
        mod = importlib.import_module(f"syft_mpc.federated.{name}")
        res = doctest.testmod(mod, verbose=False)
        assert res.failed == 0 and res.attempted > 0, name


def test_local_train_message_round_trips() -> None:
    msg = LocalTrain([["Linear", {"in_features": 2, "out_features": 1, "bias": True}]], [torch.zeros(1, 2), torch.zeros(1)], 1, 2, 3, 5, 4, 0.1, 0.0, "mse", 9, True, 0.0, True, 0.0, 0.0, 0.0, 1)
    back = serde.decode(serde.encode(Envelope("me", [], msg)))
    assert back.body.spec == msg.spec and torch.equal(back.body.params[0], msg.params[0])
    with pytest.raises(sy.errors.SerializationError):
        serde.decode(serde.encode(Envelope("me", [], LocalTrain([], [], 1, 2, 3, 0, 4, 0.1, 0.0, "mse", 9, True, 0.0, True, 0.0, 0.0, 0.0, 1))))


def test_the_wire_and_the_trainer_know_the_same_losses() -> None:
    from syft_mpc.federated.local import LOSSES
    from syft_mpc.remote.messages import LOSS_NAMES

    assert sorted(LOSSES) == sorted(LOSS_NAMES)
