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

from syft_mpc import deprecated, errors, mpc
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
    IntegrityError,
    MpcError,
    PeerDisconnected,
    PeerTimeout,
    PlanError,
    ProtocolError,
    ResourceLimitError,
    ShapeError,
    TlsError,
    TransportError,
    WorkerBusy,
    UnsupportedModelError,
    ValidationError,
)

# name -> module that defines it; imported lazily (these modules import torch). The PySyft
# layer is assembled by its composition root, syft_mpc.hook, which is imported first.
from syft_mpc.info import native_info

deprecated.install()  # the module paths of the previous release, with a warning

_LAZY_NAMES = {
    "TorchHook": "syft_mpc.hook",
    "BaseWorker": "syft_mpc.remote.workers",
    "VirtualWorker": "syft_mpc.remote.workers",
    "local_worker": "syft_mpc.remote.workers",
    "PointerTensor": "syft_mpc.remote.pointers",
    "RemoteParameter": "syft_mpc.remote.pointers",
    "SharedTensor": "syft_mpc.encrypted.tensor",
    "FixedPrecisionTensor": "syft_mpc.encrypted.fixed_precision",
    "validation": "syft_mpc.encrypted.validation",
    "set_validation": "syft_mpc.encrypted.validation",
    "validation_enabled": "syft_mpc.encrypted.validation",
    "SocketWorker": "syft_mpc.net.socket_worker",
    "workers_from_env": "syft_mpc.net.socket_worker",
    "WebsocketClientWorker": "syft_mpc.net.websocket_worker",
    "WebsocketServerWorker": "syft_mpc.net.websocket_server",
    "Gateway": "syft_mpc.net.gateway",
    "BrowserWorker": "syft_mpc.net.gateway",
    "BaseDataset": "syft_mpc.federated.dataset",
    "TrainConfig": "syft_mpc.federated.train_config",
    "FederatedDataset": "syft_mpc.federated.dataset",
    "FederatedDataLoader": "syft_mpc.federated.loader",
    "federate": "syft_mpc.federated.dataset",
    "Plan": "syft_mpc.plans.plan",
    "PointerPlan": "syft_mpc.plans.plan",
    "func2plan": "syft_mpc.plans.plan",
    "Protocol": "syft_mpc.plans.protocol",
    "PointerProtocol": "syft_mpc.plans.protocol",
    "PrivateGridNetwork": "syft_mpc.grid",
    "create_sandbox": "syft_mpc.sandbox",
    "make_hook": "syft_mpc.sandbox",
}
# module attributes of syft_mpc (sy.serde, sy.checkpoint, ...) -> the module
_LAZY_MODULES = {
    "hook": "syft_mpc.hook",
    "remote": "syft_mpc.remote",
    "serde": "syft_mpc.remote.serde",
    "messages": "syft_mpc.remote.messages",
    "allowlist": "syft_mpc.remote.allowlist",
    "workers": "syft_mpc.remote.workers",
    "pointers": "syft_mpc.remote.pointers",
    "encrypted": "syft_mpc.encrypted",
    "approx": "syft_mpc.encrypted.approx",
    "fixed_point": "syft_mpc.fixed_point",
    "mpc_session": "syft_mpc.mpc_session",
    "checkpoint": "syft_mpc.checkpoint",
    "cuda_ring": "syft_mpc.cuda_ring",
    "net": "syft_mpc.net",
    "socket_worker": "syft_mpc.net.socket_worker",
    "dp": "syft_mpc.dp",
    "federated": "syft_mpc.federated",
    "plans": "syft_mpc.plans",
    "grid": "syft_mpc.grid",
    "sandbox": "syft_mpc.sandbox",
}


# Top-level names of PySyft 0.2.9 that syft_mpc does not have: asking for one says so.
_PYSYFT_ONLY = frozenset(
    "PublicGridNetwork AdditiveSharingTensor MultiPointerTensor "
    "LoggingTensor AutogradTensor LargePrecisionTensor PrivateTensor PolynomialTensor PlaceHolder Role State "
    "ObjectStorage KerasHook TFEWorker TFECluster TorchTensor NumpyTensor ReplicatedSharingTensor "
    "GradFunc CRTPrecisionTensor hook_args dependency_check frameworks generic execution messaging "
    "exceptions keras_hook".split()
)


def __getattr__(name: str) -> Any:
    mod_name = _LAZY_NAMES.get(name) or _LAZY_MODULES.get(name)
    if mod_name is None:
        if name in _PYSYFT_ONLY:
            raise AttributeError(
                f"module 'syft_mpc' has no attribute {name!r}: PySyft 0.2 had sy.{name}, syft_mpc does not; "
                "docs/TUTORIAL_POINTERS.md lists the PySyft API this library covers and how it differs"
            )
        raise AttributeError(f"module 'syft_mpc' has no attribute {name!r}")
    import importlib

    importlib.import_module("syft_mpc.hook")  # the composition root: handlers registered before any worker runs
    mod = importlib.import_module(mod_name)
    value = mod if name in _LAZY_MODULES else getattr(mod, name)
    globals()[name] = value
    return value


__all__ = [
    "native_info",
    "BaseWorker",
    "FixedPrecisionTensor",
    "SharedTensor",
    "PointerTensor",
    "RemoteParameter",
    "SocketWorker",
    "WebsocketClientWorker",
    "WebsocketServerWorker",
    "TrainConfig",
    "Gateway",
    "BrowserWorker",
    "TorchHook",
    "VirtualWorker",
    "local_worker",
    "DEFAULT_FRAC_BITS",
    "AuthenticationError",
    "Dealer",
    "FixedPointError",
    "IntegrityError",
    "MpcError",
    "Party",
    "Request",
    "PeerDisconnected",
    "PeerTimeout",
    "PlanError",
    "ProtocolError",
    "ResourceLimitError",
    "ShapeError",
    "TlsError",
    "TransportError",
    "WorkerBusy",
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
    "UnsupportedModelError",
    "BaseDataset",
    "FederatedDataset",
    "FederatedDataLoader",
    "federate",
    "Plan",
    "PointerPlan",
    "func2plan",
    "Protocol",
    "PointerProtocol",
    "PrivateGridNetwork",
    "create_sandbox",
    "make_hook",
]
