"""syft_mpc: secure multi-party computation for PyTorch users, on a Rust core.

The native layer works on numpy ``uint64`` arrays holding elements of the ring
Z_2^64 (additive shares, fixed-point encodings)::

    >>> import numpy as np, syft_mpc
    >>> x = syft_mpc.encode(np.array([1.5, -0.25]))          # fixed point, 16 fractional bits
    >>> shares = syft_mpc.share(x, 2)                         # two uniformly random shares
    >>> syft_mpc.decode(syft_mpc.reconstruct(shares)).tolist()
    [1.5, -0.25]

:mod:`syft_mpc.mpc` runs n-party computations (parties as threads, or as
processes over TCP). Importing syft_mpc does not modify torch.

The PySyft programming model (hook, workers, pointer tensors) is loaded on first use
of one of its names, so ``import syft_mpc`` alone does not import torch::

    >>> import torch
    >>> hook = syft_mpc.TorchHook(torch)
    >>> bob = syft_mpc.VirtualWorker(hook, id="bob")
    >>> (torch.tensor([1, 2]).send(bob) * 3).get()
    tensor([3, 6])
"""

from typing import Any

from syft_mpc import errors, mpc
from syft_mpc._native import (
    DEFAULT_FRAC_BITS,
    Dealer,
    Party,
    Request,
    __version__,
    decode,
    encode,
    fixed_point_info,
    memory_session,
    reconstruct,
    ring_add,
    ring_conv2d,
    ring_matmul,
    ring_mul,
    ring_neg,
    ring_scale,
    ring_sub,
    ring_sum,
    ring_transpose,
    share,
)
from syft_mpc.errors import (
    AuthenticationError,
    FixedPointError,
    MpcError,
    PeerDisconnected,
    PeerTimeout,
    ProtocolError,
    ShapeError,
    TlsError,
    TransportError,
)

# name -> module that defines it; imported lazily (these modules import torch).
_LAZY = {
    "TorchHook": "syft_mpc.hook",
    "BaseWorker": "syft_mpc.workers",
    "VirtualWorker": "syft_mpc.workers",
    "local_worker": "syft_mpc.workers",
    "PointerTensor": "syft_mpc.pointers",
    "RemoteParameter": "syft_mpc.pointers",
    "serde": "syft_mpc.serde",
    "cuda_ring": "syft_mpc.cuda_ring",
    "messages": "syft_mpc.messages",
    "allowlist": "syft_mpc.allowlist",
    "hook": "syft_mpc.hook",
    "workers": "syft_mpc.workers",
    "pointers": "syft_mpc.pointers",
    "SharedTensor": "syft_mpc.shared",
    "FixedPrecisionTensor": "syft_mpc.fixed_precision",
    "shared": "syft_mpc.shared",
    "fixed_precision": "syft_mpc.fixed_precision",
    "mpc_session": "syft_mpc.mpc_session",
    "approx": "syft_mpc.approx",
    "SocketWorker": "syft_mpc.socket_worker",
    "socket_worker": "syft_mpc.socket_worker",
    "workers_from_env": "syft_mpc.socket_worker",
    "validation": "syft_mpc.validation_mode",
    "set_validation": "syft_mpc.validation_mode",
    "validation_enabled": "syft_mpc.validation_mode",
    "ValidationError": "syft_mpc.validation_mode",
    "dp": "syft_mpc.dp",
    "checkpoint": "syft_mpc.checkpoint",
    "federated": "syft_mpc.federated",
    "BaseDataset": "syft_mpc.federated.dataset",
    "FederatedDataset": "syft_mpc.federated.dataset",
    "FederatedDataLoader": "syft_mpc.federated.loader",
    "federate": "syft_mpc.federated.dataset",
}


def __getattr__(name: str) -> Any:
    mod_name = _LAZY.get(name)
    if mod_name is None:
        raise AttributeError(f"module 'syft_mpc' has no attribute {name!r}")
    import importlib

    mod = importlib.import_module(mod_name)
    value = mod if mod_name == f"syft_mpc.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


__all__ = [
    "BaseWorker",
    "FixedPrecisionTensor",
    "SharedTensor",
    "PointerTensor",
    "RemoteParameter",
    "SocketWorker",
    "TorchHook",
    "VirtualWorker",
    "local_worker",
    "DEFAULT_FRAC_BITS",
    "AuthenticationError",
    "Dealer",
    "FixedPointError",
    "MpcError",
    "Party",
    "Request",
    "PeerDisconnected",
    "PeerTimeout",
    "ProtocolError",
    "ShapeError",
    "TlsError",
    "TransportError",
    "__version__",
    "decode",
    "encode",
    "errors",
    "fixed_point_info",
    "memory_session",
    "mpc",
    "reconstruct",
    "ring_add",
    "ring_conv2d",
    "ring_matmul",
    "ring_mul",
    "ring_neg",
    "ring_scale",
    "ring_sub",
    "ring_sum",
    "ring_transpose",
    "share",
    "workers_from_env",
    "set_validation",
    "validation",
    "validation_enabled",
    "ValidationError",
    "BaseDataset",
    "FederatedDataset",
    "FederatedDataLoader",
    "federate",
]
