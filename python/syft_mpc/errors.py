"""Exceptions raised by syft_mpc.

Every error is an :class:`MpcError`. The classes are defined by the native module
(the one place where Rust errors become Python exceptions) and re-exported here::

    MpcError
    ├── TransportError            a peer could not be reached or misbehaved (``.peer`` names it)
    │   ├── PeerTimeout           also a TimeoutError
    │   ├── PeerDisconnected      also a ConnectionError
    │   ├── AuthenticationError   wrong token or session
    │   └── TlsError              TLS handshake failed (untrusted certificate, wrong name, TLS on one side only)
    ├── ProtocolError             parties out of step, unsupported party count, dealer trouble
    ├── ShapeError                also a ValueError
    ├── FixedPointError           also a ValueError
    ├── SerializationError        malformed or unsupported control message (also a ValueError)
    ├── LocationError             pointers on different workers in one op (also a ValueError)
    ├── UnsupportedOperationError an op outside the allowlist (also a TypeError)
    └── RemoteError               an op failed on a worker; the message is the worker's
        ├── ObjectNotFoundError   no such object on the worker (also a LookupError)
        └── Remote{Runtime,Type,Value,Index,NotImplemented,ZeroDivision}Error
                                  also the builtin error of the same name

The first eight come from the native module; the pointer-tensor layer defines the rest.

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
    TlsError,
    TransportError,
)



class SerializationError(MpcError, ValueError):
    """A control message could not be encoded or decoded (malformed, too large, unsupported type)."""


class LocationError(MpcError, ValueError):
    """An operation mixes pointers to different workers, or a pointer with a local tensor."""


class UnsupportedOperationError(MpcError, TypeError):
    """The operation is not in :mod:`syft_mpc.remote.allowlist`, so no worker will run it."""


class RemoteError(MpcError):
    """An operation failed on a worker. ``.worker`` is its id, ``.remote_type`` the error's type name there."""

    worker: str = ""
    remote_type: str = ""


class ObjectNotFoundError(RemoteError, LookupError):
    """The object a pointer names is not (or no longer) stored on its worker."""


class RemoteRuntimeError(RemoteError, RuntimeError):
    """A ``RuntimeError`` raised on a worker."""


class RemoteTypeError(RemoteError, TypeError):
    """A ``TypeError`` raised on a worker."""


class RemoteValueError(RemoteError, ValueError):
    """A ``ValueError`` raised on a worker."""


class RemoteIndexError(RemoteError, IndexError):
    """An ``IndexError`` raised on a worker."""


class RemoteNotImplementedError(RemoteError, NotImplementedError):
    """A ``NotImplementedError`` raised on a worker."""


class RemoteZeroDivisionError(RemoteError, ZeroDivisionError):
    """A ``ZeroDivisionError`` raised on a worker."""


__all__ = [
    "LocationError",
    "ObjectNotFoundError",
    "RemoteError",
    "RemoteIndexError",
    "RemoteNotImplementedError",
    "RemoteRuntimeError",
    "RemoteTypeError",
    "RemoteValueError",
    "RemoteZeroDivisionError",
    "SerializationError",
    "UnsupportedOperationError",
    "AuthenticationError",
    "FixedPointError",
    "MpcError",
    "PeerDisconnected",
    "PeerTimeout",
    "ProtocolError",
    "ShapeError",
    "TlsError",
    "TransportError",
]
