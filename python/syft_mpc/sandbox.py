"""``sy.create_sandbox(globals())``: the hook, six workers and scikit-learn's data sets on them (PySyft's sandbox).

Creates ``hook``, the workers PySyft's sandbox created (``bob``, ``theo``, ``jason``,
``alice``, ``andy``, ``jon``), ``workers`` (the list of them) and ``grid`` (a
:class:`~syft_mpc.grid.PrivateGridNetwork` over them) in the namespace it is given, and
spreads the data sets that ship with scikit-learn over the workers in contiguous parts
(the last worker takes the remainder), each part tagged ``#data`` or ``#target`` plus the
data set's name and described by scikit-learn's description:

======================  =====================================================
data set                tags (besides ``#data`` / ``#target``)
======================  =====================================================
diabetes (regression)   ``#diabetes``
breast cancer           ``#breast_cancer``
digits (8x8 images)     ``#digits``
iris                    ``#iris``
wine                    ``#wine``
linnerud                ``#linnerud``
======================  =====================================================

PySyft's sandbox also loaded Boston housing (``#boston``, ``#housing``); scikit-learn removed
that data set in version 1.2, so it is not here (``#diabetes`` is the other regression set).
Nothing is downloaded.

With ``$SYFT_MPC_WORKERS`` set (``syft-mpc launch --workers bob,theo,jason,alice,andy,jon
notebook.py``) the six workers are those socket workers instead of ``VirtualWorker``s.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from syft_mpc.grid import PrivateGridNetwork
from syft_mpc.hook import TorchHook
from syft_mpc.net.env import ENV_WORKERS
from syft_mpc.net.socket_worker import workers_from_env
from syft_mpc.remote.workers import BaseWorker, VirtualWorker

__all__ = ["SANDBOX_WORKERS", "create_sandbox", "make_hook"]

SANDBOX_WORKERS = ("bob", "theo", "jason", "alice", "andy", "jon")

# scikit-learn loader name -> the tags of its data set
_DATASETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("load_diabetes", ("#diabetes",)),
    ("load_breast_cancer", ("#breast_cancer",)),
    ("load_digits", ("#digits",)),
    ("load_iris", ("#iris",)),
    ("load_wine", ("#wine",)),
    ("load_linnerud", ("#linnerud",)),
)


def _workers(hook: TorchHook) -> list[BaseWorker]:
    if not os.environ.get(ENV_WORKERS):
        return [VirtualWorker(hook, id=name) for name in SANDBOX_WORKERS]
    found = {w.id: w for w in workers_from_env(hook)}
    missing = [n for n in SANDBOX_WORKERS if n not in found]
    if missing:
        raise ValueError(
            f"${ENV_WORKERS} names no worker {missing}: the sandbox needs {', '.join(SANDBOX_WORKERS)} "
            f"(syft-mpc launch --workers {','.join(SANDBOX_WORKERS)} ...), or unset ${ENV_WORKERS} for virtual workers"
        )
    return [found[n] for n in SANDBOX_WORKERS]


def _spread(t: torch.Tensor, workers: list[BaseWorker]) -> None:
    """Contiguous parts of ``t`` (same size, the last one takes the remainder), one per worker,
    stored there with ``t``'s tags and description (no pointer owns them)."""
    size = t.shape[0] // len(workers)
    for i, w in enumerate(workers):
        part = t[i * size : (i + 1) * size] if i < len(workers) - 1 else t[i * size :]
        part = part.clone()
        part.tags, part.description = set(t.tags), t.description  # type: ignore[attr-defined]
        w.load_data([part])


def create_sandbox(gbs: dict[str, Any], verbose: bool = True, download_data: bool = True) -> None:
    """Fills ``gbs`` (pass ``globals()``) with ``hook``, ``bob``, ``theo``, ``jason``, ``alice``,
    ``andy``, ``jon``, ``workers`` and ``grid``; with ``download_data`` (the name is PySyft's:
    nothing is downloaded, the data sets ship with scikit-learn) also spreads scikit-learn's data
    sets over the workers, tagged as the module docstring lists."""
    say: Callable[[str], None] = print if verbose else (lambda _: None)
    print("Setting up Sandbox...")
    say("\t- Hooking PyTorch")
    hook = TorchHook(torch)
    say("\t- Creating Virtual Workers:" if not os.environ.get(ENV_WORKERS) else "\t- Connecting to the workers in $" + ENV_WORKERS + ":")
    workers = _workers(hook)
    for w in workers:
        say(f"\t\t- {w.id}")
    say("\tStoring hook and workers as global variables...")
    gbs["hook"] = hook
    for w in workers:
        gbs[w.id] = w
    gbs["workers"] = workers

    if download_data:
        try:
            import sklearn.datasets as skd  # type: ignore[import-untyped]
        except ImportError:
            raise ImportError("create_sandbox() loads scikit-learn's data sets: pip install scikit-learn") from None
        say("\tLoading datasets from SciKit Learn...")
        say("\t\t(Boston housing, which PySyft loaded here, is no longer part of scikit-learn)")
        loaded = []
        for loader, tags in _DATASETS:
            ds = getattr(skd, loader)()
            say(f"\t\t- {loader[5:].replace('_', ' ').title()} Dataset")
            words = [w for w in ds["DESCR"].split("\n")[0].lower().split(" ") if w]
            data = torch.tensor(ds["data"]).float().tag(*tags, "#data", *words).describe(ds["DESCR"])  # type: ignore[attr-defined]
            target = torch.tensor(ds["target"]).float().tag(*tags, "#target", *words).describe(ds["DESCR"])  # type: ignore[attr-defined]
            loaded.append((data, target))
        say("\tDistributing Datasets Amongst Workers...")
        for data, target in loaded:
            _spread(data, workers)
            _spread(target, workers)

    say("\tCollecting workers into a VirtualGrid...")
    gbs["grid"] = PrivateGridNetwork(*workers)
    print("Done!")


def make_hook(gbs: dict[str, Any]) -> None:
    """The sandbox without data sets, quietly (PySyft's ``sy.make_hook(globals())``)."""
    create_sandbox(gbs, verbose=False, download_data=False)
