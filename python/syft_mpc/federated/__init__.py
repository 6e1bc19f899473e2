"""Federated learning: federated datasets and loaders (PySyft 0.2 API) and federated averaging.

* :class:`BaseDataset`, :class:`FederatedDataset`, ``dataset.federate((bob, alice))``
  (also on any ``torch.utils.data.Dataset`` once ``sy.TorchHook(torch)`` ran) and
  :class:`FederatedDataLoader`: data stays on the workers, batches are pointers.
* :class:`FedAvg`: federated averaging (McMahan et al. 2017) with optional secure
  aggregation (:class:`SecureAggregation`, Bonawitz et al. 2017), central DP
  (:class:`CentralDP`, McMahan et al. 2018) and DP-SGD on the workers (:class:`LocalDP`).
* :func:`secure_sum` / :func:`plain_sum`: summing remote tensors.

See ``docs/FEDERATED.md``. Names are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syft_mpc.federated.aggregate import plain_sum, secure_sum
    from syft_mpc.federated.dataset import BaseDataset, FederatedDataset, dataset_federate
    from syft_mpc.federated.fedavg import CentralDP, FedAvg, LocalDP, SecureAggregation
    from syft_mpc.federated.history import History, RoundRecord, plot_histories
    from syft_mpc.federated.loader import FederatedDataLoader

_LAZY = {
    "BaseDataset": "dataset",
    "FederatedDataset": "dataset",
    "dataset_federate": "dataset",
    "FederatedDataLoader": "loader",
    "FedAvg": "fedavg",
    "SecureAggregation": "fedavg",
    "CentralDP": "fedavg",
    "LocalDP": "fedavg",
    "History": "history",
    "RoundRecord": "history",
    "plot_histories": "history",
    "secure_sum": "aggregate",
    "plain_sum": "aggregate",
    "TrainConfig": "train_config",
    "federated_avg": "utils",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'syft_mpc.federated' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"syft_mpc.federated.{mod}"), name)
    globals()[name] = value
    return value
