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
"""

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
    TransportError,
)

__all__ = [
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
]
