"""Datasets a worker process loads by name at start (``syft-mpc worker --dataset KEY=SPEC``), as
PySyft's ``run_websocket_server.py`` loaded MNIST and kept it under a key (``"mnist"``,
``"mnist_testing"``). Here the data set is scikit-learn's digits (1797 8x8 images, shipped with
scikit-learn: nothing is downloaded).

``SPEC`` is ``digits:train``, ``digits:test``, ``digits:train:I/N`` (shard ``I`` of ``N``, 0-based,
of the training part) or ``digits:train:A-B`` (the samples of digits A to B, as PySyft's
asynchronous tutorial gave Alice 0-3, Bob 4-6 and Charlie 7-9). The split is fixed: the first 1437 samples (80 %) train, the rest test.
Images are ``float32`` of shape ``(1, 8, 8)`` scaled to ``[0, 1]``; targets are ``int64`` classes.
"""

from __future__ import annotations

import torch

from syft_mpc.federated.dataset import BaseDataset

__all__ = ["DIGITS_TRAIN", "load_dataset", "parse_dataset_arg"]

DIGITS_TRAIN = 1437


def load_dataset(spec: str) -> BaseDataset:
    """The dataset ``spec`` names (see the module docstring); ValueError says what is wrong."""
    parts = spec.split(":")
    if parts[0] != "digits" or len(parts) not in (2, 3) or parts[1] not in ("train", "test"):
        raise ValueError(f"unknown dataset {spec!r}: use digits:train, digits:test or digits:train:I/N")
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    sl = slice(0, DIGITS_TRAIN) if parts[1] == "train" else slice(DIGITS_TRAIN, None)
    x, y = x[sl], y[sl]
    if len(parts) == 3 and "-" in parts[2]:
        try:
            lo, hi = (int(v) for v in parts[2].split("-"))
        except ValueError:
            raise ValueError(f"dataset {spec!r}: a digit range is A-B, e.g. digits:train:0-3") from None
        keep = (y >= lo) & (y <= hi)
        if not bool(keep.any()):
            raise ValueError(f"dataset {spec!r}: no samples of digits {lo}-{hi}")
        x, y = x[keep], y[keep]
    elif len(parts) == 3:
        try:
            i, n = (int(v) for v in parts[2].split("/"))
        except ValueError:
            raise ValueError(f"dataset {spec!r}: a shard is I/N, e.g. digits:train:0/3") from None
        if not 0 <= i < n <= len(x):
            raise ValueError(f"dataset {spec!r}: shard I/N needs 0 <= I < N <= {len(x)}")
        x, y = x[i::n], y[i::n]
    return BaseDataset(x.contiguous(), y.contiguous())


def parse_dataset_arg(arg: str) -> tuple[str, BaseDataset]:
    """``KEY=SPEC`` -> (key, dataset)."""
    key, sep, spec = arg.partition("=")
    if not sep or not key:
        raise ValueError(f"--dataset takes KEY=SPEC (e.g. mnist=digits:train:0/3), got {arg!r}")
    return key, load_dataset(spec)
