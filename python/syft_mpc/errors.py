"""Exceptions raised by syft_mpc.

Every error is an :class:`MpcError`. This module declares every class (and imports nothing
from the native module); the native module imports the transport, protocol, shape and
fixed-point errors from here and raises them::

    MpcError
    ├── TransportError            a peer could not be reached or misbehaved (``.peer`` names it)
    │   ├── PeerTimeout           also a TimeoutError
    │   ├── PeerDisconnected      also a ConnectionError
    │   ├── AuthenticationError   wrong token or session
    │   ├── TlsError              TLS handshake failed (untrusted certificate, wrong name, TLS on one side only)
    │   ├── IntegrityError        a frame was altered, replayed, reordered or injected on the way
    │   └── WorkerBusy            a worker or gateway refused a connection or request at capacity: retry later
    ├── ProtocolError             parties out of step, unsupported party count, dealer trouble
    ├── ShapeError                also a ValueError
    ├── FixedPointError           also a ValueError
    ├── ResourceLimitError        a request needs more memory than the worker's budget (also a MemoryError)
    ├── SerializationError        malformed or unsupported control message (also a ValueError)
    ├── LocationError             pointers on different workers in one op (also a ValueError)
    ├── UnsupportedOperationError an op outside the allowlist (also a TypeError)
    ├── ValidationError           validation mode: a secure op differs from plaintext torch (also a RuntimeError)
    ├── UnsupportedModelError     a layer or argument remote training does not support (also a ValueError)
    ├── PlanError                 a plan used before it was built, or called with arguments it was not built for (also a RuntimeError)
    └── RemoteError               an op failed on a worker; the message is the worker's
        ├── ObjectNotFoundError   no such object on the worker (also a LookupError)
        └── Remote{Runtime,Type,Value,Index,NotImplemented,ZeroDivision,ResourceLimit}Error
                                  also the builtin error of the same name

The native module raises the first ten below MpcError (from TransportError to
ResourceLimitError); the Python layers raise the rest (ResourceLimitError too).

Example::

    >>> import numpy as np, syft_mpc
    >>> try:
    ...     syft_mpc.ring_add(np.zeros(2, np.uint64), np.zeros(3, np.uint64))
    ... except syft_mpc.ShapeError as e:
    ...     print(type(e).__name__)
    ShapeError
"""

from typing import Optional


class MpcError(Exception):
    """Base class of every error raised by syft_mpc."""


class TransportError(MpcError):
    """A peer could not be reached, timed out, or sent malformed data. ``peer`` names it.

    The session's channels are unusable afterwards: start a new session.
    """

    peer: Optional[str] = None


class PeerTimeout(TransportError, TimeoutError):
    """A peer did not answer within the timeout; it may have crashed or be overloaded."""


class PeerDisconnected(TransportError, ConnectionError):
    """A peer closed its connection."""


class AuthenticationError(TransportError):
    """A connection failed authentication: check that every process uses the same token and session."""


class TlsError(TransportError):
    """A TLS handshake failed: the peer's certificate is not signed by the trusted CA (tls_ca) or does not
    name the address connected to, or only one side uses TLS. The message says which."""


class IntegrityError(TransportError):
    """A frame from ``peer`` failed its integrity check (MAC): it was altered, replayed, reordered or
    injected between the two ends, or sent by someone without the connection's keys. The connection
    was closed; a new one is authenticated afresh. Repeated failures mean someone tampers with the
    network path: use TLS (``tls_cert``/``tls_key`` on workers, ``tls_ca`` on clients)."""


class WorkerBusy(TransportError):
    """A worker, gateway or browser worker refused a connection or a request because it is at
    capacity: it already serves ``--max-connections`` authenticated connections, or too many
    bytes already wait for the browser worker ``peer`` at its gateway. Nothing was run. The
    connections already open are served as before: retry later, send less at a time (wait for
    earlier answers), or start the worker or gateway with a larger ``--max-connections``."""


class ProtocolError(MpcError):
    """Parties are out of step, a protocol was used with an unsupported number of parties,
    or the dealer could not serve a request."""


class ShapeError(MpcError, ValueError):
    """Operands whose shapes or dtypes do not fit the operation."""


class FixedPointError(MpcError, ValueError):
    """A value has no fixed-point encoding (NaN, infinite, out of range) or the precision is unsupported."""


class ResourceLimitError(MpcError, MemoryError):
    """A request would need more memory than allowed: its size overflows, it exceeds the
    worker's memory budget (``syft-mpc worker --max-memory``), or the system refused the
    allocation. Nothing was allocated; the worker keeps serving. The message names the
    request and the limit: make the operands smaller, split the operation, or start the
    worker with a larger ``--max-memory``."""


class SerializationError(MpcError, ValueError):
    """A control message could not be encoded or decoded (malformed, too large, unsupported type)."""


class LocationError(MpcError, ValueError):
    """An operation mixes pointers to different workers, or a pointer with a local tensor."""


class UnsupportedOperationError(MpcError, TypeError):
    """The operation is not in :mod:`syft_mpc.remote.allowlist`, so no worker will run it."""


class ValidationError(MpcError, RuntimeError):
    """Validation mode found a secure op whose result differs from plaintext torch beyond tolerance."""


class UnsupportedModelError(MpcError, ValueError):
    """A model uses a layer or argument that remote training does not support."""


class PlanError(MpcError, RuntimeError):
    """A plan or protocol was used in a way it cannot be: sent before it was built, called with
    arguments of another structure than it was built with, run before it was deployed."""


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


class RemoteResourceLimitError(RemoteError, MemoryError):
    """A worker refused a request that needs more memory than its budget (a
    :class:`ResourceLimitError` there) or ran out of memory (``MemoryError``)."""


__all__ = [
    "AuthenticationError",
    "FixedPointError",
    "IntegrityError",
    "LocationError",
    "MpcError",
    "ObjectNotFoundError",
    "PeerDisconnected",
    "PeerTimeout",
    "PlanError",
    "ProtocolError",
    "RemoteError",
    "RemoteIndexError",
    "RemoteNotImplementedError",
    "RemoteResourceLimitError",
    "RemoteRuntimeError",
    "RemoteTypeError",
    "RemoteValueError",
    "RemoteZeroDivisionError",
    "ResourceLimitError",
    "SerializationError",
    "ShapeError",
    "TlsError",
    "TransportError",
    "UnsupportedModelError",
    "UnsupportedOperationError",
    "ValidationError",
    "WorkerBusy",
]
