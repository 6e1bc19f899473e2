"""Exceptions raised by syft_mpc.

Every error is an :class:`MpcError`. The classes are defined by the native module
(the one place where Rust errors become Python exceptions) and re-exported here::

    MpcError
    ├── TransportError            a peer could not be reached or misbehaved (``.peer`` names it)
    │   ├── PeerTimeout           also a TimeoutError
    │   ├── PeerDisconnected      also a ConnectionError
    │   └── AuthenticationError   wrong token or session
    ├── ProtocolError             parties out of step, unsupported party count, dealer trouble
    ├── ShapeError                also a ValueError
    └── FixedPointError           also a ValueError

Example::

    >>> import numpy as np, syft_mpc
    >>> try:
    ...     syft_mpc.ring_add(np.zeros(2, np.uint64), np.zeros(3, np.uint64))
    ... except syft_mpc.ShapeError as e:
    ...     print(type(e).__name__)
    ShapeError
"""

from syft_mpc._native import (
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
    "AuthenticationError",
    "FixedPointError",
    "MpcError",
    "PeerDisconnected",
    "PeerTimeout",
    "ProtocolError",
    "ShapeError",
    "TransportError",
]
