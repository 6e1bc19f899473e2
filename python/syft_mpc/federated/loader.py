"""``sy.FederatedDataLoader``: mini-batches of a :class:`FederatedDataset`, as pointers (PySyft 0.2 API).

Each batch is cut where its data lives: one remote indexing operation on the inputs and
one on the targets (a slice, or a list of indices when shuffling), so no sample ever
travels to the driver. The driver only picks indices, which it can because it knows
every worker's number of samples from the pointers' shapes.

* ``iter_per_worker=False`` (default): all batches of the first worker, then all of
  the next, ... (PySyft's single iterator); each item is ``(data_ptr, target_ptr)``.
* ``iter_per_worker=True``: each item is ``{worker: (data_ptr, target_ptr)}`` with one
  batch per worker, until the worker with the fewest batches runs out (as in PySyft).

``len(loader)`` is the exact number of items one pass yields (PySyft divided the total
sample count by the batch size, which is off when worker sizes are not multiples of it).

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob, alice = sy.VirtualWorker(hook, id="bob"), sy.VirtualWorker(hook, id="alice")
    >>> fed = sy.BaseDataset(torch.zeros(10, 3), torch.zeros(10)).federate((bob, alice))
    >>> loader = sy.FederatedDataLoader(fed, batch_size=2, drop_last=True)
    >>> [(x.location.id, tuple(x.shape)) for x, y in loader][:3], len(loader)
    ([('bob', (2, 3)), ('bob', (2, 3)), ('alice', (2, 3))], 4)
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from syft_mpc.federated.dataset import FederatedDataset
from syft_mpc.federated.progress import progress as progress_bar

__all__ = ["FederatedDataLoader", "PROGRESS_DELAY_S"]

PROGRESS_DELAY_S = 3.0
"""A pass shows a progress bar once it has run this many seconds."""

_IGNORED = frozenset({"num_workers", "pin_memory", "timeout", "worker_init_fn", "prefetch_factor", "persistent_workers"})
"""torch DataLoader options that scripts pass along and that mean nothing here (no loader processes)."""


def batch_index_lists(n: int, batch_size: int, shuffle: bool, drop_last: bool, generator: "torch.Generator | None") -> list[Any]:
    """One pass over ``n`` samples: a slice per batch, or a list of indices when shuffled."""
    if shuffle:
        perm = torch.randperm(n, generator=generator).tolist()
        out: list[Any] = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    else:
        out = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if drop_last and n % batch_size:
        out.pop()
    return out


class FederatedDataLoader:
    """Mini-batches of a :class:`FederatedDataset`, one worker at a time (or one per worker).

    Args:
        federated_dataset: the remote data.
        batch_size: samples per batch (>= 1; PySyft's default 8).
        shuffle: reshuffle each worker's samples at every pass.
        drop_last: drop each worker's last, incomplete batch.
        iter_per_worker: yield ``{worker: (data, target)}`` with one batch per worker.
        generator: torch generator for shuffling (reproducible passes).
        num_iterators: PySyft's option; only 1 is supported.
        progress: show a tqdm progress bar over each pass once it has taken more than
            ``PROGRESS_DELAY_S`` seconds (so quick passes print nothing); in a log file the bar
            writes a line every 30 s instead of redrawing (:mod:`syft_mpc.federated.progress`).

    ``num_workers``, ``pin_memory`` and other torch DataLoader process options are
    accepted and ignored (batches are cut on the workers); anything else is a TypeError.
    """

    def __init__(
        self,
        federated_dataset: FederatedDataset,
        batch_size: int = 8,
        shuffle: bool = False,
        num_iterators: int = 1,
        drop_last: bool = False,
        collate_fn: Any = None,
        iter_per_worker: bool = False,
        generator: "torch.Generator | None" = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(federated_dataset, FederatedDataset):
            raise TypeError(
                f"FederatedDataLoader takes a FederatedDataset, got {type(federated_dataset).__name__}; "
                "for local data use torch.utils.data.DataLoader, or federate it first (dataset.federate((bob, alice)))"
            )
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if num_iterators != 1:
            raise ValueError("num_iterators > 1 is not supported; use iter_per_worker=True for one batch per worker")
        if collate_fn is not None:
            raise TypeError("collate_fn is not supported: batches are cut on the workers by indexing, not collated here")
        unknown = set(kwargs) - _IGNORED
        if unknown:
            raise TypeError(f"FederatedDataLoader got unexpected keyword arguments {sorted(unknown)}")
        self.federated_dataset = federated_dataset
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.iter_per_worker = bool(iter_per_worker)
        self._current: "Iterator[Any] | None" = None  # the pass next(loader) continues
        self.generator = generator
        self.progress = bool(progress)
        if drop_last:
            short = [w for w in self.workers if len(federated_dataset[w]) < batch_size]
            if len(short) == len(self.workers) or (short and self.iter_per_worker):
                raise ValueError(
                    f"with drop_last=True and batch_size={batch_size}, worker(s) {short} have no full batch "
                    f"(sizes {[len(federated_dataset[w]) for w in self.workers]}); lower batch_size"
                )

    @property
    def workers(self) -> list[str]:
        """The worker ids, in the order batches are drawn."""
        return self.federated_dataset.workers

    def _batches_of(self, worker_id: str) -> int:
        n = len(self.federated_dataset[worker_id])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        counts = [self._batches_of(w) for w in self.workers]
        return min(counts) if self.iter_per_worker else sum(counts)

    def _worker_batches(self, worker_id: str) -> Iterator[tuple[Any, Any]]:
        ds = self.federated_dataset[worker_id]
        for idx in batch_index_lists(len(ds), self.batch_size, self.shuffle, self.drop_last, self.generator):
            yield ds.data[idx], ds.targets[idx]

    def __iter__(self) -> Iterator[Any]:
        # PySyft's loaders also served next(loader) after iter(loader): keep the pass just begun.
        self._current = self._iterate()
        return self._current

    def __next__(self) -> Any:
        if self._current is None:
            self._current = self._iterate()
        return next(self._current)

    def _iterate(self) -> Iterator[Any]:
        with progress_bar(total=len(self), unit="batch", leave=False, delay=PROGRESS_DELAY_S, enabled=self.progress) as bar:
            for item in self._items():
                yield item
                bar.update(1)

    def _items(self) -> Iterator[Any]:
        if not self.iter_per_worker:
            for w in self.workers:
                yield from self._worker_batches(w)
            return
        iters = {self.federated_dataset.worker(w): self._worker_batches(w) for w in self.workers}
        for _ in range(len(self)):
            yield {loc: next(it) for loc, it in iters.items()}

    def __repr__(self) -> str:
        mode = "one batch per worker" if self.iter_per_worker else "one worker at a time"
        return f"<FederatedDataLoader {len(self)} items of batch_size {self.batch_size} over {', '.join(self.workers)} ({mode})>"
