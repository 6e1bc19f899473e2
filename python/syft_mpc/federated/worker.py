"""The worker side of federated learning: local training (:class:`~syft_mpc.remote.messages.LocalTrain`)
and noise added to a share (:class:`~syft_mpc.remote.messages.AddNoiseShare`). :data:`HANDLERS`
maps them to their handlers; the composition root (:mod:`syft_mpc.hook`) registers them."""

from __future__ import annotations

import secrets
import threading
from typing import TYPE_CHECKING, Any, Callable

import torch

from syft_mpc.dp import clip_update, dp_sgd_fit
from syft_mpc.federated.local import batch_schedule, build_model, local_sgd
from syft_mpc.remote.messages import AddNoiseShare, LocalTrain

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


HANDLERS: dict[type, Callable[..., "tuple[Any, Callable[[], None] | None]"]] = {
    LocalTrain: _handle_local_train,
    AddNoiseShare: _handle_add_noise,
}
"""Request type -> handler(worker, request) -> (reply value, commit or None)."""
