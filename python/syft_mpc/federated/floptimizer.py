"""``Optims``: one optimizer per worker over the same parameters (PySyft's ``syft.federated.floptimizer``).

An optimizer's state (Adam's moments, momentum buffers) lives where the parameters were when
it was created, so a model that travels between workers keeps one optimizer per worker, each
with its state on that worker (tutorial Part 2)::

    optims = Optims(["bob", "alice"], optim=optim.Adam(params=model.parameters(), lr=0.1))
    opt = optims.get_optim(data.location.id)
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

__all__ = ["Optims"]


class Optims:
    """Copies of ``optim`` (same class, same hyperparameters, same parameters), one per worker id."""

    def __init__(self, workers: Iterable[Any], optim: torch.optim.Optimizer) -> None:
        self.optim = optim
        self.workers = [w if isinstance(w, str) else w.id for w in workers]
        params = [p for group in optim.param_groups for p in group["params"]]
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            w: type(optim)(params, **optim.defaults) for w in self.workers
        }

    def get_optim(self, worker: Any) -> torch.optim.Optimizer:
        """The optimizer of ``worker`` (an id or a worker)."""
        key = worker if isinstance(worker, str) else worker.id
        try:
            return self.optimizers[key]
        except KeyError:
            raise KeyError(f"no optimizer for worker {key!r}; Optims was made for {self.workers}") from None

    def count(self) -> int:
        """How many optimizers (workers) there are."""
        return len(self.optimizers)
