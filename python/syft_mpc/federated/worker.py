"""The worker side of federated learning: local training (:class:`~syft_mpc.remote.messages.LocalTrain`),
noise added to a share (:class:`~syft_mpc.remote.messages.AddNoiseShare`), and PySyft 0.2's
train configurations (``TrainConfigStore``, ``Fit``, ``Evaluate``: plans run over a dataset the
worker holds by key). :data:`HANDLERS` maps them to their handlers; the composition root
(:mod:`syft_mpc.hook`) registers them."""

from __future__ import annotations

import dataclasses
import secrets
import threading
from typing import TYPE_CHECKING, Any, Callable

import torch

from syft_mpc.dp import clip_update, dp_sgd_fit
from syft_mpc.errors import ObjectNotFoundError, PlanError
from syft_mpc.federated.local import batch_schedule, build_model, local_sgd
from syft_mpc.plans import graph
from syft_mpc.remote.messages import AddNoiseShare, Evaluate, Fit, LocalTrain, TrainConfigStore

if TYPE_CHECKING:
    from syft_mpc.remote.workers import BaseWorker

__all__ = ["HANDLERS"]



def _plain_tensor(worker: "BaseWorker", obj_id: int, what: str) -> torch.Tensor:
    obj = worker._get_obj(obj_id)
    if not isinstance(obj, torch.Tensor):
        raise TypeError(f"{what} (object {obj_id}) on worker {worker.id} is a {type(obj).__name__}, not a plain tensor")
    return obj


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


def _handle_local_train(worker: "BaseWorker", msg: LocalTrain) -> tuple[Any, None]:
    # torch's thread count is per process: VirtualWorkers of one process train concurrently,
    # so the first one in sets it and the last one out restores it.
    global _threads_users, _threads_saved
    if msg.threads:
        with _threads_lock:
            if _threads_users == 0:
                _threads_saved = torch.get_num_threads()
                torch.set_num_threads(msg.threads)
            _threads_users += 1
    try:
        return _local_train(worker, msg)
    finally:
        if msg.threads:
            with _threads_lock:
                _threads_users -= 1
                if _threads_users == 0:
                    torch.set_num_threads(_threads_saved)


def _local_train(worker: "BaseWorker", msg: LocalTrain) -> tuple[Any, None]:
    model = build_model(msg.spec, list(msg.params))  # the spec is checked before anything else
    data = _plain_tensor(worker, msg.data_id, "the training data").detach()
    targets = _plain_tensor(worker, msg.targets_id, "the training targets").detach()
    n = int(data.shape[0]) if data.dim() else 0
    if n == 0 or targets.dim() == 0 or int(targets.shape[0]) != n:
        raise ValueError(f"worker {worker.id}: data has {n} samples and targets {tuple(targets.shape)}; they must match and be non-empty")
    start = [p.detach().clone() for p in model.parameters()]
    epsilon: "float | None" = None
    if msg.dp_noise_multiplier > 0:
        res = dp_sgd_fit(
            model, data, targets, steps=msg.steps, lr=msg.lr, batch_size=msg.batch_size,
            noise_multiplier=msg.dp_noise_multiplier, max_grad_norm=msg.dp_max_grad_norm, delta=msg.dp_delta,
            seed=msg.seed,
        )
        loss, epsilon = float(res["loss"]), float(res["epsilon"])
    else:
        schedule = batch_schedule(n, msg.batch_size, msg.steps, msg.seed)
        loss = local_sgd(model, data, targets, schedule, msg.lr, msg.momentum, msg.loss)
    with torch.no_grad():
        delta = [p.detach() - s for p, s in zip(model.parameters(), start)]
        if msg.clip_norm > 0:
            delta, _ = clip_update(delta, msg.clip_norm)
        c = float(n) if msg.weighted else 1.0
        parts = [d.reshape(-1) * c for d in delta]
        if msg.report_loss:
            parts.append(torch.tensor([c * loss], dtype=parts[0].dtype if parts else torch.float32))
        vec = torch.cat(parts) if parts else torch.zeros(0)
    if not bool(torch.isfinite(vec).all()):
        raise ValueError(f"local training on worker {worker.id} diverged (the update has inf or nan); lower the learning rate")
    worker._store(msg.return_id, vec)
    return {"epsilon": epsilon, "steps": msg.steps}, None


def _handle_add_noise(worker: "BaseWorker", msg: AddNoiseShare) -> tuple[Any, None]:
    share = _plain_tensor(worker, msg.obj_id, "the share")
    if share.dtype != torch.int64:
        raise TypeError(f"object {msg.obj_id} on worker {worker.id} is not a share (int64), it is {share.dtype}")
    g = torch.Generator().manual_seed(secrets.randbits(63))
    noise = torch.randn(share.shape, dtype=torch.float64, generator=g) * msg.std
    enc = torch.round(noise * float(msg.base**msg.precision)).to(torch.int64)
    worker._store(msg.new_id, share + enc)  # int64 addition wraps: a ring addition
    return list(share.shape), None


def _handle_config_store(worker: "BaseWorker", msg: TrainConfigStore) -> tuple[Any, None]:
    plans = [*msg.forward, *msg.loss, *([msg.step] if msg.step is not None else [])]
    for p in plans:
        graph.check_ops(p, f"worker {worker.id}")
    for i in (msg.config_id, *msg.param_ids):
        if i in worker._objects:
            raise ValueError(f"object id {i} is already in use on worker {worker.id}")
    for pid, t in zip(msg.param_ids, msg.params):
        worker._store(pid, t)
    worker._store(msg.config_id, dataclasses.replace(msg, params=[]))  # the parameters live under their ids
    return None, None


def _config(worker: "BaseWorker", config_id: int) -> TrainConfigStore:
    obj = worker._get_obj(config_id)
    if not isinstance(obj, TrainConfigStore):
        raise TypeError(f"object {config_id} on worker {worker.id} is not a train config")
    return obj


def _dataset(worker: "BaseWorker", key: str) -> tuple[torch.Tensor, torch.Tensor]:
    ds = worker.datasets.get(key)
    if ds is None:
        known = ", ".join(sorted(worker.datasets)) or "none"
        raise ObjectNotFoundError(f"worker {worker.id} has no dataset {key!r} (it has: {known})")
    return ds


def _params(worker: "BaseWorker", cfg: TrainConfigStore) -> list[torch.Tensor]:
    return [_plain_tensor(worker, i, "a model parameter") for i in cfg.param_ids]


def _handle_fit(worker: "BaseWorker", msg: Fit) -> tuple[Any, None]:
    cfg = _config(worker, msg.config_id)
    if cfg.step is None:
        raise PlanError("this train config cannot train: it was made with optimizer_args=None (evaluation only)")
    data, targets = _dataset(worker, msg.dataset_key)
    bs, n = cfg.batch_sizes[0], int(data.shape[0])
    if n < bs:
        raise ValueError(f"dataset {msg.dataset_key!r} on worker {worker.id} has {n} samples, fewer than one batch of {bs}")
    params = _params(worker, cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    loss: "torch.Tensor | None" = None
    done = 0
    # As PySyft's fit: full batches only (drop_last), at most max_nr_batches steps per call.
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=g) if cfg.shuffle else torch.arange(n)
        for b in range(n // bs):
            if 0 < cfg.max_nr_batches <= done:
                break
            idx = order[b * bs:(b + 1) * bs]
            out = graph.flat_outputs(graph.run(cfg.step, [data[idx], targets[idx], *params]))
            if len(out) != len(params) + 1:
                raise PlanError(f"the training step returned {len(out)} tensors, expected the loss and {len(params)} parameters")
            loss, params = out[0].detach(), [t.detach() for t in out[1:]]
            done += 1
    assert loss is not None
    if not bool(torch.isfinite(loss)):
        raise ValueError(f"training on worker {worker.id} diverged (the loss is {float(loss)}); lower the learning rate")
    for pid, t in zip(cfg.param_ids, params):  # the trained parameters replace the sent ones
        worker._forget(pid)
        worker._store(pid, t)
    return loss, None


def _handle_evaluate(worker: "BaseWorker", msg: Evaluate) -> tuple[Any, None]:
    cfg = _config(worker, msg.config_id)
    data, targets = _dataset(worker, msg.dataset_key)
    params = _params(worker, cfg)
    bs, n = cfg.batch_sizes[0], int(data.shape[0])
    preds: list[torch.Tensor] = []
    loss_sum = 0.0
    # Full batches run the batch-size graphs, the rest the one-sample graphs (a plan has one graph per shape).
    chunks = [(slice(i, i + bs), 0) for i in range(0, n - n % bs, bs)]
    chunks += [(slice(i, i + 1), 1) for i in range(n - n % bs, n)]
    for sl, which in chunks:
        x, y = data[sl], targets[sl]
        out = graph.run(cfg.forward[which], [x, *params])
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            raise PlanError("evaluate needs a model whose output is (batch, classes)")
        preds.append(out.argmax(1))
        if msg.return_loss:
            loss = graph.run(cfg.loss[which], [out, y])
            loss_sum += float(loss) * int(x.shape[0])
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    result: dict[str, Any] = {"nr_predictions": n}
    if msg.return_loss:
        result["loss"] = loss_sum / n if n else 0.0
    if msg.return_raw_accuracy:
        result["nr_correct_predictions"] = int((pred == targets.reshape(-1).to(pred.dtype)).sum())
    if msg.return_histograms:
        def hist(v: torch.Tensor) -> list[int]:
            v = v.reshape(-1).long()
            v = v[(v >= 0) & (v < msg.nr_bins)]
            return [int(c) for c in torch.bincount(v, minlength=msg.nr_bins)]

        result["histogram_predictions"] = hist(pred)
        result["histogram_target"] = hist(targets)
    return result, None


HANDLERS: dict[type, Callable[..., "tuple[Any, Callable[[], None] | None]"]] = {
    LocalTrain: _handle_local_train,
    AddNoiseShare: _handle_add_noise,
    TrainConfigStore: _handle_config_store,
    Fit: _handle_fit,
    Evaluate: _handle_evaluate,
}
"""Request type -> handler(worker, request) -> (reply value, commit or None)."""
