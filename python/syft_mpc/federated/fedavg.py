"""Federated averaging (McMahan et al. 2017), with secure aggregation and differential privacy.

Each round the server (this driver) picks the workers that take part (each independently
with probability ``sample_rate``), every one of them trains a copy of the global model on
its own data for ``local_steps`` SGD steps, and the server moves the global model by the
average of their updates, weighted by sample counts:

    w ← w + server_lr · Σ_k n_k (w_k − w) / Σ_k n_k

Options, composable:

* **Secure aggregation** (:class:`SecureAggregation`; Bonawitz et al. 2017): each worker
  shares its (weighted) update among the share holders itself, the holders add the
  shares, and only the sum is revealed (:func:`~syft_mpc.federated.aggregate.secure_sum`).
  No party — the server included — sees one worker's update.
* **Central DP** (:class:`CentralDP`; DP-FedAvg, McMahan et al. 2018): each update is
  clipped to L2 norm ``clip_norm`` on its worker, Gaussian noise calibrated by
  :class:`syft_mpc.dp.FedAvgPrivacy` to (ε, δ) over all rounds is added to the sum, and
  the noisy sum is divided by the expected number of participants ``sample_rate · N``
  (a data-independent denominator, with equal weights). With secure aggregation the
  noise is added by the share holders to the shared sum before the reveal, so nobody
  sees the un-noised sum; without it the server adds the noise (and sees the clean sum).
* **Local DP** (:class:`LocalDP`): every worker trains with Opacus DP-SGD
  (:func:`syft_mpc.dp.dp_sgd_fit`), an example-level guarantee for its own data; the
  ε of each worker is composed over its rounds with Opacus's RDP accountant.

Local training runs in a fixed worker-side routine (:class:`~syft_mpc.federated.local.LocalTrain`:
one request per worker and round, all workers in parallel) when the model is an
``nn.Sequential`` of the supported layers, and otherwise through pointers (the driver
sends the model and runs forward, backward and ``optimizer.step()`` remotely).
"""

from __future__ import annotations

import copy
import math
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from syft_mpc.federated.dataset import FederatedDataset, federated_shapes
from syft_mpc.federated.history import NAN, History, RoundRecord, fmt
from syft_mpc.errors import UnsupportedModelError
from syft_mpc.federated.local import LOSSES, batch_schedule, model_spec
from syft_mpc.federated.progress import progress as progress_bar
from syft_mpc.remote.messages import LocalTrain
from syft_mpc.remote.pointers import PointerTensor, RemoteParameter

if TYPE_CHECKING:
    from syft_mpc.remote.workers import BaseWorker

__all__ = ["CentralDP", "FedAvg", "LocalDP", "SecureAggregation"]


@dataclass(frozen=True)
class SecureAggregation:
    """Who holds the shares of the updates.

    Args:
        holders: at least two distinct workers (default: every worker of the federation).
            They must all be up for every round (no drop-out recovery).
        crypto_provider: a worker that is not a holder (default: the driver,
            ``sy.local_worker``; a sum needs no correlated randomness from it).
        precision_fractional: fixed-point bits (base 2) of the shared updates.
    """

    holders: "Sequence[BaseWorker] | None" = None
    crypto_provider: "BaseWorker | None" = None
    precision_fractional: int = 16


@dataclass(frozen=True)
class CentralDP:
    """Client-level (ε, δ)-DP for the whole training (DP-FedAvg). ``clip_norm`` bounds each update's L2 norm."""

    target_epsilon: float
    target_delta: float
    clip_norm: float
    accountant: str = "rdp"


@dataclass(frozen=True)
class LocalDP:
    """Example-level DP-SGD on every worker (Opacus): noise multiplier, per-sample clipping norm, δ."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float


def _positive_int(name: str, v: Any) -> int:
    if type(v) is not int or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return v


def _positive_float(name: str, v: Any, upper: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 < v <= upper):
        raise ValueError(f"{name} must be a finite number in (0, {upper}], got {v!r}")
    return float(v)


class FedAvg:
    """Federated averaging of ``model`` over ``federated_dataset`` (see the module docstring).

    Args:
        model: the global model (local; trained in place, round after round).
        federated_dataset: the workers' data.
        rounds: number of rounds :meth:`fit` runs.
        local_steps: SGD steps per worker and round (batches drawn from seeded epochs).
        batch_size: local batch size (capped at a worker's sample count without local DP).
        lr, momentum: local SGD.
        loss: ``"cross_entropy"``, ``"nll"`` or ``"mse"``.
        server_lr: step size of the server's update (1: plain FedAvg).
        sample_rate: probability that a worker takes part in a round.
        secure_aggregation: None, True (defaults) or a :class:`SecureAggregation`.
        dp: :class:`CentralDP` (client-level DP for the whole training).
        local_dp: :class:`LocalDP` (DP-SGD on every worker; cross-entropy, no momentum).
        local_training: ``"auto"``, ``"worker"`` (fixed routine on the worker; an
            ``nn.Sequential`` of supported layers) or ``"pointers"`` (any model whose
            operations are allowlisted).
        worker_threads: torch intra-op threads a worker uses for its local training
            (``"worker"`` mode; 0 keeps the worker's setting). Default 1: federated
            models are small and several workers often share a machine, where torch's
            multi-threaded kernels oversubscribe the cores (10 local steps of the digits
            MLP: 25-50 ms with 1 thread, 0.7-4.7 s with 2 threads per process, three
            workers on a loaded 2-core machine). Use 0 for large models on dedicated workers.
        eval_data: ``(inputs, targets)`` held by the server, evaluated after every round.
        checkpoint: a ``.npz`` path rewritten every ``checkpoint_every`` rounds.
        progress: show a tqdm progress bar over the rounds.
        seed: seeds client sampling and local batch order (None: fresh OS randomness).

    Every argument is checked here, before anything is sent to a worker: shapes of every
    worker's data against each other and against the model, empty datasets, batch sizes,
    DP parameters (ValueError with what to change).
    """

    def __init__(
        self,
        model: nn.Module,
        federated_dataset: FederatedDataset,
        *,
        rounds: int = 10,
        local_steps: int = 10,
        batch_size: int = 32,
        lr: float = 0.1,
        momentum: float = 0.0,
        loss: str = "cross_entropy",
        server_lr: float = 1.0,
        sample_rate: float = 1.0,
        secure_aggregation: "SecureAggregation | bool | None" = None,
        dp: "CentralDP | None" = None,
        local_dp: "LocalDP | None" = None,
        local_training: str = "auto",
        worker_threads: int = 1,
        eval_data: "tuple[torch.Tensor, torch.Tensor] | None" = None,
        checkpoint: "str | os.PathLike[str] | None" = None,
        checkpoint_every: int = 1,
        progress: bool = True,
        seed: "int | None" = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(federated_dataset, FederatedDataset):
            raise TypeError(
                f"federated_dataset must be a FederatedDataset (dataset.federate((bob, alice))), got {type(federated_dataset).__name__}"
            )
        self.model = model
        self.fed = federated_dataset
        self.rounds = _positive_int("rounds", rounds)
        self.local_steps = _positive_int("local_steps", local_steps)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.lr = _positive_float("lr", lr)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; one of {sorted(LOSSES)}")
        self.loss = loss
        self.server_lr = _positive_float("server_lr", server_lr)
        self.sample_rate = _positive_float("sample_rate", sample_rate, 1.0)
        self.checkpoint = os.fspath(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
        self.progress = bool(progress)
        if seed is not None and (type(seed) is not int or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = secrets.randbits(62) if seed is None else seed

        params = list(model.parameters())
        if not params:
            raise ValueError("the model has no parameters to train")
        from syft_mpc.encrypted.fixed_precision import FixedPrecisionTensor
        from syft_mpc.encrypted.tensor import SharedTensor

        if any(isinstance(p, (RemoteParameter, SharedTensor, FixedPrecisionTensor)) for p in params):
            raise ValueError("the global model must be local (not sent or shared): FedAvg sends copies of it itself")
        self._numels = [p.numel() for p in params]
        self._n_params = sum(self._numels)
        self._dtype = params[0].dtype
        if any(p.dtype != self._dtype or not p.dtype.is_floating_point for p in params):
            raise ValueError("every model parameter must have the same floating-point dtype")

        # data: one owner, same per-sample shapes everywhere, and the model accepts them
        from syft_mpc.remote.workers import local_worker

        for wid in self.fed.workers:
            ds = self.fed[wid]
            for what, p in (("data", ds.data), ("targets", ds.targets)):
                p._check_alive()
                if p.owner is not local_worker:
                    raise ValueError(f"worker {wid}'s {what} pointer belongs to {p.owner.id}, not to this driver")
        self._in_shape, self._t_shape, self._in_dtype, self._t_dtype = federated_shapes(self.fed)
        self._check_model_fits()
        if eval_data is not None:
            self._check_eval_data(eval_data)
        self.eval_data = eval_data

        # how workers train
        if type(worker_threads) is not int or not 0 <= worker_threads <= 1024:
            raise ValueError(f"worker_threads must be an integer in [0, 1024], got {worker_threads!r}")
        self.worker_threads = worker_threads
        if local_training not in ("auto", "worker", "pointers"):
            raise ValueError(f"local_training must be 'auto', 'worker' or 'pointers', got {local_training!r}")
        self._spec: "list[Any] | None" = None
        if local_training != "pointers":
            try:
                self._spec = model_spec(model)
            except UnsupportedModelError:
                if local_training == "worker" or local_dp is not None:
                    raise
        self.local_training = "worker" if self._spec is not None else "pointers"

        # secure aggregation
        self._holders: "list[BaseWorker] | None" = None
        self._crypto_provider: "BaseWorker | None" = None
        self._precision = 16
        if secure_aggregation:
            sa = SecureAggregation() if secure_aggregation is True else secure_aggregation
            if not isinstance(sa, SecureAggregation):
                raise TypeError(f"secure_aggregation must be True or a SecureAggregation, got {type(sa).__name__}")
            self._setup_secure(sa)

        # central DP
        self.dp = dp
        self._privacy: Any = None
        if dp is not None:
            if not isinstance(dp, CentralDP):
                raise TypeError(f"dp must be a CentralDP, got {type(dp).__name__}")
            from syft_mpc.dp import FedAvgPrivacy

            self._privacy = FedAvgPrivacy(
                dp.target_epsilon, dp.target_delta, dp.clip_norm, self.sample_rate, self.rounds, accountant=dp.accountant
            )
            self._dp_denominator = self.sample_rate * len(self.fed.workers)

        # local DP
        self.local_dp = local_dp
        self._eps_cache: dict[tuple[float, int], float] = {}
        if local_dp is not None:
            self._check_local_dp(local_dp)

        self._report_loss = dp is None and local_dp is None
        self._vec_len = self._n_params + (1 if self._report_loss else 0)
        self.history = History()
        self.rounds_done = 0
        self.participation = {wid: 0 for wid in self.fed.workers}
        self.last_local_epsilons: dict[str, float] = {}

    # ------------------------------------------------------------------ validation

    def _check_model_fits(self) -> None:
        x = torch.zeros((2, *self._in_shape), dtype=self._in_dtype)
        y = torch.zeros((2, *self._t_shape), dtype=self._t_dtype)
        probe = copy.deepcopy(self.model)
        probe.train(False)  # eval mode
        wid = self.fed.workers[0]
        try:
            with torch.no_grad():
                out = probe(x)
        except Exception as e:
            raise ValueError(
                f"the model cannot take the workers' samples (input shape {self._in_shape}, {self._in_dtype}, "
                f"e.g. on worker {wid}): {type(e).__name__}: {e}"
            ) from None
        if self.loss == "mse" and tuple(out.shape) != tuple(y.shape):
            raise ValueError(
                f"the model outputs shape {tuple(out.shape[1:])} per sample but the targets have {self._t_shape}; "
                "mse needs them equal"
            )
        try:
            LOSSES[self.loss](out, y)
        except Exception as e:
            raise ValueError(
                f"loss {self.loss!r} cannot compare the model's output (shape {tuple(out.shape[1:])} per sample) with "
                f"the targets (shape {self._t_shape}, {self._t_dtype}): {type(e).__name__}: {e}"
            ) from None

    def _check_eval_data(self, eval_data: Any) -> None:
        if not (isinstance(eval_data, (tuple, list)) and len(eval_data) == 2 and all(isinstance(t, torch.Tensor) for t in eval_data)):
            raise TypeError("eval_data must be a pair (inputs, targets) of local tensors")
        x, y = eval_data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"eval_data has {x.shape[0]} inputs but {y.shape[0]} targets")
        if tuple(x.shape[1:]) != self._in_shape or tuple(y.shape[1:]) != self._t_shape:
            raise ValueError(
                f"eval_data samples have shapes {tuple(x.shape[1:])} / {tuple(y.shape[1:])}, the workers' "
                f"{self._in_shape} / {self._t_shape}"
            )

    def _setup_secure(self, sa: SecureAggregation) -> None:
        from syft_mpc.remote.workers import BaseWorker, local_worker

        holders = list(sa.holders) if sa.holders is not None else [self.fed.worker(w) for w in self.fed.workers]
        for h in holders:
            if not isinstance(h, BaseWorker):
                raise TypeError(f"secure aggregation holders must be workers, got {type(h).__name__}")
        ids = [h.id for h in holders]
        if len(holders) < 2:
            raise ValueError(
                f"secure aggregation needs at least 2 share holders, got {ids}; with one worker pass "
                "SecureAggregation(holders=[...]) naming other workers to hold the shares"
            )
        if len(set(ids)) != len(ids):
            raise ValueError(f"secure aggregation holders must be distinct workers, got {ids}")
        cp = sa.crypto_provider if sa.crypto_provider is not None else local_worker
        if cp.id in ids:
            raise ValueError(f"the crypto provider {cp.id} must not be a share holder ({ids}); pick another worker")
        if type(sa.precision_fractional) is not int or not 8 <= sa.precision_fractional <= 24:
            raise ValueError(f"precision_fractional must be an integer in [8, 24], got {sa.precision_fractional!r}")
        if len(self.fed.workers) < 2 and sa.holders is None:
            raise ValueError("secure aggregation needs at least 2 workers taking part in a round")
        self._holders, self._crypto_provider, self._precision = holders, cp, sa.precision_fractional

    def _check_local_dp(self, ldp: LocalDP) -> None:
        if not isinstance(ldp, LocalDP):
            raise TypeError(f"local_dp must be a LocalDP, got {type(ldp).__name__}")
        _positive_float("local_dp.noise_multiplier", ldp.noise_multiplier)
        _positive_float("local_dp.max_grad_norm", ldp.max_grad_norm)
        if isinstance(ldp.delta, bool) or not isinstance(ldp.delta, (int, float)) or not 0 < ldp.delta < 1:
            raise ValueError(f"local_dp.delta must be in (0, 1), got {ldp.delta!r}")
        if self.local_training != "worker":
            raise ValueError(
                "local DP-SGD runs in the worker-side routine (Opacus needs the module on the worker): "
                "use local_training='auto' or 'worker' with an nn.Sequential of supported layers"
            )
        if self.loss != "cross_entropy":
            raise ValueError("local DP-SGD trains with cross-entropy; use loss='cross_entropy'")
        if self.momentum != 0:
            raise ValueError("local DP-SGD uses plain SGD; set momentum=0")
        if self._t_shape != () or self._t_dtype.is_floating_point:
            raise ValueError("local DP-SGD needs integer class labels of shape (n,) as targets")
        for wid in self.fed.workers:
            n = len(self.fed[wid])
            if self.batch_size > n:
                raise ValueError(
                    f"local DP-SGD samples batches of expected size batch_size={self.batch_size} but worker {wid} "
                    f"has only {n} samples; lower batch_size"
                )
        try:
            import opacus  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            raise ImportError("local DP-SGD needs Opacus: pip install 'syft-mpc[dp]'") from None

    # ------------------------------------------------------------------ rounds

    @property
    def secure(self) -> bool:
        return self._holders is not None

    def _select(self, r: int) -> list[str]:
        workers = self.fed.workers
        if self.sample_rate >= 1.0:
            return list(workers)
        draws = np.random.default_rng([self.seed, r]).random(len(workers))
        return [w for w, d in zip(workers, draws) if d < self.sample_rate]

    def _worker_seed(self, r: int, k: int) -> int:
        return int(np.random.default_rng([self.seed, r, k]).integers(1 << 62))

    def _local_updates(self, r: int, selected: Sequence[str]) -> list[PointerTensor]:
        """Every selected worker trains; returns pointers to their update vectors (on the workers)."""
        if self.local_training == "worker":
            return self._worker_updates(r, selected)
        return [self._pointer_update(self._worker_seed(r, self.fed.workers.index(w)), w) for w in selected]

    def _worker_updates(self, r: int, selected: Sequence[str]) -> list[PointerTensor]:
        from syft_mpc.remote.messages import new_id
        from syft_mpc.mpc_session.driver import fan_out
        from syft_mpc.remote.workers import local_worker

        assert self._spec is not None
        start = [p.detach().clone() for p in self.model.parameters()]
        clip = self.dp.clip_norm if self.dp is not None else 0.0
        ldp = self.local_dp
        reqs: list[tuple[Any, Any]] = []
        ptrs: list[PointerTensor] = []
        for wid in selected:
            ds, worker = self.fed[wid], self.fed.worker(wid)
            rid = new_id()
            msg = LocalTrain(
                self._spec, start, ds.data.id_at_location, ds.targets.id_at_location, rid, self.local_steps,
                self.batch_size, self.lr, self.momentum, self.loss, self._worker_seed(r, self.fed.workers.index(wid)),
                self.dp is None, float(clip), self._report_loss,
                float(ldp.noise_multiplier) if ldp else 0.0, float(ldp.max_grad_norm) if ldp else 0.0,
                float(ldp.delta) if ldp else 0.0, self.worker_threads,
            )
            ptrs.append(PointerTensor(local_worker, worker, rid, torch.Size([self._vec_len]), self._dtype))
            reqs.append((worker, msg))
        replies = fan_out(reqs, timeout_s=3600.0)
        for wid, rep in zip(selected, replies):
            if rep.get("epsilon") is not None:
                self.last_local_epsilons[wid] = float(rep["epsilon"])
        return ptrs

    def _pointer_update(self, seed: int, wid: str) -> PointerTensor:
        """Local training driven from here through pointers (any model with allowlisted ops)."""
        ds, worker = self.fed[wid], self.fed.worker(wid)
        n = len(ds)
        local = copy.deepcopy(self.model)
        local.send(worker)  # type: ignore[operator]
        params = list(local.parameters())
        with torch.no_grad():
            start = [p.copy() for p in params]  # type: ignore[attr-defined]  # remote copies, nothing travels
        opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        loss_fn = LOSSES[self.loss]
        loss_sum: Any = None
        local.train()
        for idx in batch_schedule(n, self.batch_size, self.local_steps, seed):
            opt.zero_grad()
            out = loss_fn(local(ds.data[idx]), ds.targets[idx])
            out.backward()  # type: ignore[no-untyped-call]
            opt.step()
            loss_sum = out.detach() if loss_sum is None else loss_sum + out.detach()
        with torch.no_grad():
            flat: Any = torch.cat([(p - s).reshape(-1) for p, s in zip(params, start)])
            if self.dp is not None:  # joint L2 clipping, computed where the update lives
                bound = self.dp.clip_norm * (1 - 1e-6)
                flat = flat * (bound / flat.norm()).clamp(max=1.0)
            c = 1.0 if self.dp is not None else float(n)
            flat = flat * c
            if self._report_loss:
                flat = torch.cat([flat, (loss_sum * (c / self.local_steps)).reshape(1)])
        del local, params, start, opt
        assert isinstance(flat, PointerTensor)
        return flat

    def _aggregate(self, ptrs: Sequence[PointerTensor]) -> torch.Tensor:
        """The sum of the update vectors (plus DP noise when asked), as float64."""
        noise_std = self._privacy.noise_std if self._privacy is not None else 0.0
        if self._holders is not None:
            from syft_mpc.federated.aggregate import secure_sum

            assert self._crypto_provider is not None
            return secure_sum(
                ptrs, self._holders, self._crypto_provider, noise_std=noise_std, precision_fractional=self._precision
            ).double()
        from syft_mpc.federated.aggregate import plain_sum

        total = plain_sum(ptrs)
        if noise_std > 0:  # the server is trusted with the clean sum here
            g = torch.Generator().manual_seed(secrets.randbits(63))
            total = total + torch.randn(total.shape, dtype=torch.float64, generator=g) * noise_std
        return total

    def _apply(self, total: torch.Tensor, selected: Sequence[str]) -> float:
        if self.dp is not None:
            denom = self._dp_denominator
        else:
            denom = float(sum(len(self.fed[w]) for w in selected))
        avg = total[: self._n_params] / denom
        with torch.no_grad():
            off = 0
            for p, k in zip(self.model.parameters(), self._numels):
                p.add_(avg[off : off + k].view_as(p).to(p.dtype), alpha=self.server_lr)
                off += k
        return float(total[self._n_params] / denom) if self._report_loss else NAN

    def train_round(self) -> RoundRecord:
        """Runs one round and returns its record (also appended to :attr:`history`)."""
        if self.rounds_done >= self.rounds and self._privacy is not None:
            raise RuntimeError(f"all {self.rounds} rounds the DP noise was calibrated for are done")
        r = self.rounds_done + 1
        t0 = time.perf_counter()
        selected = self._select(r)
        train_loss = NAN
        # Secure aggregation of a single update would reveal it: such a round is skipped.
        if len(selected) >= (2 if self.secure else 1):
            ptrs = self._local_updates(r, selected)
            total = self._aggregate(ptrs)
            del ptrs
            train_loss = self._apply(total, selected)
            for w in selected:
                self.participation[w] += 1
        else:
            selected = []
        if self._privacy is not None:
            self._privacy.step()  # a skipped round is accounted too (what the calibration assumed)
        from syft_mpc.remote.workers import local_worker

        local_worker.flush_gc()
        self.rounds_done = r
        rec = RoundRecord(round=r, participants=len(selected), train_loss=train_loss)
        if self.eval_data is not None:
            rec.test_loss, rec.test_accuracy = self.evaluate(*self.eval_data)
        if self._privacy is not None:
            rec.epsilon = float(self._privacy.epsilon())
        if self.local_dp is not None and any(self.participation.values()):
            rec.local_epsilon = max(self.local_epsilons().values())
        rec.seconds = time.perf_counter() - t0
        self.history.append(rec)
        if self.checkpoint is not None and (r % self.checkpoint_every == 0 or r == self.rounds):
            self.save_checkpoint(self.checkpoint)
        return rec

    def fit(self) -> History:
        """Runs the remaining rounds (up to ``rounds``) and returns the history."""
        todo = self.rounds - self.rounds_done
        with progress_bar(total=self.rounds, initial=self.rounds_done, desc="FedAvg", unit="round", enabled=self.progress) as bar:
            for _ in range(todo):
                rec = self.train_round()
                post = {"loss": fmt(rec.train_loss), "acc": fmt(rec.test_accuracy, 3)}
                if not math.isnan(rec.epsilon):
                    post["eps"] = fmt(rec.epsilon, 3)
                if not math.isnan(rec.local_epsilon):
                    post["local_eps"] = fmt(rec.local_epsilon, 3)
                bar.set_postfix(post)
                bar.update(1)
        return self.history

    # ------------------------------------------------------------------ privacy accounting

    def local_epsilons(self) -> dict[str, float]:
        """Example-level ε spent so far by each worker's DP-SGD that took part at least once.

        A worker with ``n`` samples ran ``local_steps`` DP-SGD steps at sampling rate
        ``batch_size / n`` in every round it joined; those steps compose, over rounds, like
        one long DP-SGD run, so ε is Opacus's RDP accountant for that many steps (workers of
        one size share the figure, computed once)."""
        if self.local_dp is None:
            return {}
        from opacus.accountants import RDPAccountant  # type: ignore[import-untyped]

        out: dict[str, float] = {}
        for w, rounds in self.participation.items():
            if rounds == 0:
                continue
            q = min(1.0, self.batch_size / len(self.fed[w]))
            key = (q, rounds * self.local_steps)
            eps = self._eps_cache.get(key)
            if eps is None:
                acc = RDPAccountant()
                acc.history = [(self.local_dp.noise_multiplier, q, key[1])]
                eps = self._eps_cache[key] = float(acc.get_epsilon(delta=self.local_dp.delta))
            out[w] = eps
        return out

    @property
    def epsilon(self) -> float:
        """Client-level ε spent so far (NaN without central DP)."""
        return float(self._privacy.epsilon()) if self._privacy is not None else NAN

    @property
    def noise_multiplier(self) -> float:
        """The calibrated noise multiplier of central DP (NaN without it)."""
        return float(self._privacy.noise_multiplier) if self._privacy is not None else NAN

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        """(loss, accuracy) of the global model on local data (accuracy NaN for mse)."""
        was = self.model.training
        self.model.train(False)  # eval mode
        try:
            with torch.no_grad():
                out = self.model(inputs)
                loss = float(LOSSES[self.loss](out, targets))
                acc = NAN
                if self.loss != "mse":
                    labels = targets if targets.dim() == 1 else targets.argmax(1)
                    acc = float((out.argmax(1) == labels).double().mean())
        finally:
            self.model.train(was)
        return loss, acc

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: "str | os.PathLike[str]") -> str:
        """Writes model parameters, history, round number and participation to ``path`` (``np.savez``,
        no pickle), atomically (a temporary file, then a rename)."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        arrays: dict[str, np.ndarray] = {
            "rounds_done": np.array(self.rounds_done, dtype=np.int64),
            "seed": np.array(self.seed, dtype=np.int64),
            "participation_workers": np.array(list(self.participation), dtype=np.str_),
            "participation_counts": np.array(list(self.participation.values()), dtype=np.int64),
        }
        for name, p in self.model.named_parameters():
            arrays["param/" + name] = p.detach().cpu().numpy()
        for k, v in self.history.to_arrays().items():
            arrays["history/" + k] = v
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        tmp = f"{path[:-4]}.tmp-{os.getpid()}.npz"
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: "str | os.PathLike[str]") -> "FedAvg":
        """Restores a checkpoint written by :meth:`save_checkpoint` (same model and workers); :meth:`fit` then
        runs the remaining rounds. Privacy accountants are replayed to the saved round. Returns self."""
        with np.load(os.fspath(path), allow_pickle=False) as z:
            names = [n for n, _ in self.model.named_parameters()]
            saved = sorted(k[len("param/") :] for k in z.files if k.startswith("param/"))
            if sorted(names) != saved:
                raise ValueError(f"the checkpoint holds parameters {saved}, the model has {sorted(names)}")
            values = {n: torch.from_numpy(z["param/" + n]) for n in names}
            for n, p in self.model.named_parameters():
                if tuple(values[n].shape) != tuple(p.shape):
                    raise ValueError(f"parameter {n} has shape {tuple(p.shape)}, the checkpoint {tuple(values[n].shape)}")
            rounds_done = int(z["rounds_done"])
            if rounds_done > self.rounds:
                raise ValueError(f"the checkpoint is at round {rounds_done}, past this trainer's {self.rounds} rounds")
            workers = [str(w) for w in z["participation_workers"]]
            if sorted(workers) != sorted(self.fed.workers):
                raise ValueError(f"the checkpoint was written for workers {workers}, not {self.fed.workers}")
            counts = dict(zip(workers, (int(c) for c in z["participation_counts"])))
            hist = History.from_arrays({k[len("history/") :]: z[k] for k in z.files if k.startswith("history/")})
            seed = int(z["seed"])
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(values[n])
        self.history, self.rounds_done, self.seed = hist, rounds_done, seed
        self.participation = {w: counts[w] for w in self.fed.workers}
        if self._privacy is not None:
            from syft_mpc.dp import FedAvgPrivacy

            dp = self.dp
            assert dp is not None
            self._privacy = FedAvgPrivacy(
                dp.target_epsilon, dp.target_delta, dp.clip_norm, self.sample_rate, self.rounds, accountant=dp.accountant
            )
            for _ in range(rounds_done):
                self._privacy.step()
        return self

    def __repr__(self) -> str:
        opts = [f"local training: {self.local_training}"]
        if self.secure:
            assert self._holders is not None and self._crypto_provider is not None
            opts.append(f"secure aggregation among {', '.join(h.id for h in self._holders)} (crypto provider {self._crypto_provider.id})")
        if self.dp is not None:
            opts.append(f"central DP eps={self.dp.target_epsilon} delta={self.dp.target_delta} sigma={self.noise_multiplier:.3g}")
        if self.local_dp is not None:
            opts.append(f"local DP-SGD sigma={self.local_dp.noise_multiplier}")
        return f"<FedAvg {self.rounds_done}/{self.rounds} rounds over {', '.join(self.fed.workers)}; {'; '.join(opts)}>"
