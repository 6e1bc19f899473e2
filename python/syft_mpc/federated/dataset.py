"""Federated datasets: data that stays on the workers, addressed through pointers (PySyft 0.2 API).

:class:`BaseDataset` pairs inputs and targets (local tensors, or pointers once sent);
:meth:`BaseDataset.federate` / :func:`dataset_federate` split a dataset into one part per
worker and send each part away; :class:`FederatedDataset` indexes the remote parts by
worker id. Everything is checked when it is built (lengths, empty parts, one part per
worker), so a training loop never starts on data it cannot use.

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob, alice = sy.VirtualWorker(hook, id="bob"), sy.VirtualWorker(hook, id="alice")
    >>> fed = sy.BaseDataset(torch.arange(10.0).view(5, 2), torch.arange(5)).federate((bob, alice))
    >>> fed.workers, len(fed), len(fed.datasets["alice"])
    (['bob', 'alice'], 5, 2)
    >>> fed.datasets["bob"].data.location.id
    'bob'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch
from torch.utils.data import Dataset

from syft_mpc.remote.pointers import PointerTensor

if TYPE_CHECKING:
    from syft_mpc.remote.workers import BaseWorker

__all__ = ["BaseDataset", "FederatedDataset", "dataset_federate", "federate"]


def _length(x: Any, what: str) -> int:
    if isinstance(x, (torch.Tensor, PointerTensor)):
        if x.dim() == 0:
            raise ValueError(f"{what} must have a first (sample) dimension, got a 0-d tensor")
        return int(x.shape[0])
    raise TypeError(f"{what} must be a torch.Tensor or a pointer to one, got {type(x).__name__}")


class BaseDataset(Dataset):  # type: ignore[type-arg]
    """Inputs ``data`` and labels ``targets`` (tensors, or pointers to tensors on one worker).

    Args:
        data: tensor of shape ``(n, ...)`` (or a pointer to one).
        targets: tensor of shape ``(n, ...)`` on the same worker as ``data``.
        transform: applied to each input by ``dataset[i]`` while the data is local;
            :meth:`send` and :meth:`federate` apply it before the data leaves (a worker
            never runs code it received).

    Raises ValueError when ``data`` and ``targets`` have different lengths or live on
    different workers.
    """

    def __init__(self, data: Any, targets: Any, transform: "Callable[[Any], Any] | None" = None) -> None:
        n, m = _length(data, "data"), _length(targets, "targets")
        if n != m:
            raise ValueError(
                f"data has {n} samples but targets has {m}; every sample needs exactly one target "
                "(check that both tensors were cut the same way)"
            )
        d_remote, t_remote = isinstance(data, PointerTensor), isinstance(targets, PointerTensor)
        if d_remote != t_remote:
            raise ValueError("data and targets must both be local tensors or both be pointers to the same worker")
        if d_remote and data.location != targets.location:
            raise ValueError(
                f"data is on worker {data.location.id} but targets are on worker {targets.location.id}; "
                "send both to the same worker"
            )
        self.data = data
        self.targets = targets
        self.transform_ = transform

    # ------------------------------------------------------------------ Dataset protocol

    def __len__(self) -> int:
        return _length(self.data, "data")

    def __getitem__(self, index: Any) -> tuple[Any, Any]:
        x = self.data[index]
        if self.transform_ is not None:
            if isinstance(x, PointerTensor):
                raise TypeError("a transform cannot run on a remote dataset; it is applied before sending")
            x = self.transform_(x)
        return x, self.targets[index]

    def __repr__(self) -> str:
        where = f"on {self.location.id}" if self.location is not None else "local"
        return f"<BaseDataset {len(self)} samples, data {tuple(self.data.shape)}, targets {tuple(self.targets.shape)}, {where}>"

    # ------------------------------------------------------------------ PySyft API

    @property
    def location(self) -> "BaseWorker | None":
        """The worker holding the data (None while it is local)."""
        return self.data.location if isinstance(self.data, PointerTensor) else None

    def transform(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Applies ``transform`` to the whole local ``data`` tensor in place (PySyft's ``transform``)."""
        if not isinstance(self.data, torch.Tensor):
            raise TypeError("a transform can only be applied to local data (before it is sent)")
        self.data = transform(self.data)

    def _local_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(self.data, torch.Tensor):
            raise TypeError(f"this dataset is already on worker {self.data.location.id}; .get() it first")
        if self.transform_ is None:
            return self.data, self.targets
        return _collate(self)

    def send(self, worker: "BaseWorker") -> "BaseDataset":
        """Sends data and targets to ``worker`` (after applying the transform); returns the remote dataset."""
        data, targets = self._local_tensors()
        return BaseDataset(data.send(worker), targets.send(worker))  # type: ignore[attr-defined]

    def get(self) -> "BaseDataset":
        """Brings data and targets back (removing them from the worker); returns self."""
        if isinstance(self.data, PointerTensor):
            self.data = self.data.get()
            self.targets = self.targets.get()
        return self

    def get_data(self) -> Any:
        return self.data

    def get_targets(self) -> Any:
        return self.targets

    def federate(self, *workers: Any) -> "FederatedDataset":
        """Splits this dataset into one contiguous part per worker and sends each part away."""
        return dataset_federate(self, *workers)


def _collate(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All of ``dataset`` as two tensors (inputs, targets), through its ``__getitem__``."""
    from torch.utils.data import default_collate

    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty: there is nothing to federate")
    items = [dataset[i] for i in range(n)]
    if not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items[:1]):
        raise TypeError("federate() needs a dataset whose items are (input, target) pairs")
    data, targets = default_collate(items)
    if not isinstance(data, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError("federate() needs items whose input and target collate to tensors")
    return data, targets


def dataset_federate(dataset: Any, *workers: Any) -> "FederatedDataset":
    """Splits ``dataset`` into ``len(workers)`` contiguous parts and sends part i to ``workers[i]``.

    Works on a :class:`BaseDataset` and on any ``torch.utils.data.Dataset`` of
    ``(input, target)`` pairs (attached as ``Dataset.federate`` by ``sy.TorchHook``).
    ``federate((bob, alice))`` and ``federate(bob, alice)`` are the same. The parts are
    ``torch.tensor_split``'s: sizes differ by at most one, the first parts take the extra
    samples (PySyft cuts ceil-sized chunks, which can leave a worker with nothing; here
    every worker gets data). Transforms run here, once, before sending. Raises ValueError
    when there are fewer samples than workers.
    """
    from syft_mpc.remote.workers import BaseWorker

    if len(workers) == 1 and isinstance(workers[0], (list, tuple)):
        workers = tuple(workers[0])
    if not workers:
        raise ValueError("federate() needs at least one worker")
    for w in workers:
        if not isinstance(w, BaseWorker):
            raise TypeError(f"federate() takes workers, got {type(w).__name__}")
    ids = [w.id for w in workers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"federate() got the same worker twice: {ids}")
    if isinstance(dataset, BaseDataset):
        data, targets = dataset._local_tensors()
    else:
        data, targets = _collate(dataset)
    n = int(data.shape[0])
    if n < len(workers):
        raise ValueError(
            f"cannot federate {n} samples over {len(workers)} workers: some worker would get no data "
            "(use fewer workers or more data)"
        )
    parts: list[BaseDataset] = []
    for w, xs, ts in zip(workers, torch.tensor_split(data, len(workers)), torch.tensor_split(targets, len(workers))):
        parts.append(BaseDataset(xs.send(w), ts.send(w)))  # type: ignore[attr-defined]
    return FederatedDataset(parts)


class FederatedDataset:
    """Remote datasets, one per worker, indexed by worker id (the input of
    :class:`~syft_mpc.federated.FederatedDataLoader` and :class:`~syft_mpc.federated.FedAvg`).

    Attributes: ``datasets`` (worker id -> :class:`BaseDataset` of pointers), ``workers``
    (the ids, in the order given). ``len()`` is the total number of samples.

    Raises ValueError for a local dataset (send it first), two datasets on one worker,
    a worker with no data, or inputs/targets of different lengths.
    """

    def __init__(self, datasets: Iterable[BaseDataset]) -> None:
        self.datasets: dict[str, BaseDataset] = {}
        self._workers: dict[str, "BaseWorker"] = {}
        for ds in datasets:
            if not isinstance(ds, BaseDataset):
                raise TypeError(f"FederatedDataset takes BaseDatasets, got {type(ds).__name__}")
            loc = ds.location
            if loc is None:
                raise ValueError("a FederatedDataset holds remote datasets: send each BaseDataset to its worker first")
            if loc.id in self.datasets:
                raise ValueError(f"two datasets are on worker {loc.id}; concatenate them before federating")
            if len(ds) == 0:
                raise ValueError(
                    f"worker {loc.id} has no data (0 samples); drop it from the federation or give it data"
                )
            self.datasets[loc.id] = ds
            self._workers[loc.id] = loc
        if not self.datasets:
            raise ValueError("a FederatedDataset needs at least one worker's dataset")

    @property
    def workers(self) -> list[str]:
        """The worker ids, in order."""
        return list(self.datasets)

    locations = workers

    def worker(self, worker_id: str) -> "BaseWorker":
        """The worker object holding ``worker_id``'s data."""
        return self._workers[worker_id]

    def __getitem__(self, worker_id: str) -> BaseDataset:
        return self.datasets[worker_id]

    def __len__(self) -> int:
        return sum(len(ds) for ds in self.datasets.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.datasets)

    def get_dataset(self, worker_id: str) -> BaseDataset:
        """Brings ``worker_id``'s dataset back here and removes it from the federation."""
        ds = self.datasets.pop(worker_id).get()
        del self._workers[worker_id]
        return ds

    def __repr__(self) -> str:
        return (
            "FederatedDataset\n"
            f"    Distributed across: {', '.join(self.workers)}\n"
            f"    Number of datapoints: {len(self)}\n"
        )


def federated_shapes(fed: FederatedDataset) -> tuple[tuple[int, ...], tuple[int, ...], torch.dtype, torch.dtype]:
    """The per-sample input/target shapes and dtypes shared by every worker's data.

    Raises ValueError naming two workers whose samples disagree (a model could not take both)."""
    ref: "tuple[str, tuple[int, ...], tuple[int, ...], torch.dtype, torch.dtype] | None" = None
    for wid, ds in fed.datasets.items():
        d, t = ds.data, ds.targets
        cur = (wid, tuple(d.shape[1:]), tuple(t.shape[1:]), d.dtype, t.dtype)
        if ref is None:
            ref = cur
            continue
        for i, what in ((1, "input shape"), (2, "target shape"), (3, "input dtype"), (4, "target dtype")):
            if cur[i] != ref[i]:
                raise ValueError(
                    f"worker {ref[0]}'s samples have {what} {ref[i]} but worker {wid}'s have {cur[i]}; "
                    "every worker's data must have the same per-sample shape and dtype"
                )
    assert ref is not None
    return ref[1], ref[2], ref[3], ref[4]



federate = dataset_federate
"""``sy.federate(dataset, (bob, alice))``: :func:`dataset_federate` as a function."""
