"""``sy.PrivateGridNetwork(*workers)``: search many workers at once (PySyft's private grid).

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob = sy.VirtualWorker(hook, id="gbob", data=(torch.ones(2).tag("#ones"),))
    >>> alice = sy.VirtualWorker(hook, id="galice")
    >>> grid = sy.PrivateGridNetwork(bob, alice)
    >>> {k: len(v) for k, v in grid.search("#ones").items()}
    {'gbob': 1}
"""

from __future__ import annotations

from typing import Any

from syft_mpc.remote.pointers import PointerTensor
from syft_mpc.remote.workers import BaseWorker, local_worker

__all__ = ["PrivateGridNetwork"]


class PrivateGridNetwork:
    """A collection of workers (virtual or socket) searched together."""

    def __init__(self, *workers: BaseWorker) -> None:
        if len(workers) == 1 and isinstance(workers[0], (list, tuple)):
            workers = tuple(workers[0])
        for w in workers:
            if not isinstance(w, BaseWorker):
                raise TypeError(f"PrivateGridNetwork takes workers, got {type(w).__name__}")
        self.workers = list(workers)

    def search(self, *query: Any) -> dict[str, list[PointerTensor]]:
        """Pointers to the tensors matching every item of ``query`` (tags, words of a
        description), grouped by worker id; workers with no match are left out.
        ``grid.search("#diabetes", "#data")`` and ``grid.search(["#diabetes", "#data"])`` are the same."""
        items = list(query[0]) if len(query) == 1 and isinstance(query[0], (list, tuple)) else list(query)
        results: dict[str, list[PointerTensor]] = {}
        for worker in self.workers:
            found = local_worker.request_search(items, location=worker)
            if found:
                results[worker.id] = found
        return results

    def __repr__(self) -> str:
        return f"<PrivateGridNetwork workers:{[w.id for w in self.workers]}>"
