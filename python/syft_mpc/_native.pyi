# Stubs of the native module (rust/python), written by hand and checked with
# `python -m mypy.stubtest syft_mpc._native`.
#
# Ring arrays are numpy uint64 (elements of Z_2^64); any shape unless stated.

from types import TracebackType
from typing import Optional, Sequence, final

import numpy as np
import numpy.typing as npt

_U64 = npt.NDArray[np.uint64]
_F64 = npt.NDArray[np.float64]
_U8 = npt.NDArray[np.uint8]
# A control message: bytes, a 1-d contiguous uint8 array, or pieces sent as their concatenation.
_Message = bytes | _U8 | list[bytes | _U8] | tuple[bytes | _U8, ...]

__all__ = [
    "AuthenticationError",
    "Connection",
    "Listener",
    "DEFAULT_FRAC_BITS",
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
    "fixed_point_info",
    "worker_party_id",
    "memory_session",
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
__version__: str
DEFAULT_FRAC_BITS: int

class MpcError(Exception): ...

class TransportError(MpcError):
    peer: Optional[str]

class PeerTimeout(TransportError, TimeoutError): ...
class PeerDisconnected(TransportError, ConnectionError): ...
class AuthenticationError(TransportError): ...
class TlsError(TransportError): ...
class ProtocolError(MpcError): ...
class ShapeError(MpcError, ValueError): ...
class FixedPointError(MpcError, ValueError): ...

# ring kernels
def ring_add(a: _U64, b: _U64) -> _U64: ...
def ring_sub(a: _U64, b: _U64) -> _U64: ...
def ring_mul(a: _U64, b: _U64) -> _U64: ...
def ring_neg(a: _U64) -> _U64: ...
def ring_scale(a: _U64, k: int) -> _U64: ...
def ring_matmul(a: _U64, b: _U64, threads: Optional[int] = None) -> _U64: ...
def ring_conv2d(
    x: _U64,
    w: _U64,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> _U64: ...
def ring_sum(a: _U64, axis: int = 0) -> _U64: ...
def ring_transpose(a: _U64) -> _U64: ...

# fixed point
def encode(x: _F64, base: int = 2, precision: int = 16) -> _U64: ...
def decode(x: _U64, base: int = 2, precision: int = 16) -> _F64: ...
def fixed_point_info(base: int = 2, precision: int = 16) -> tuple[int, float]: ...

# sharing
def share(x: _U64, n: int) -> list[_U64]: ...
def reconstruct(shares: Sequence[_U64]) -> _U64: ...

# sessions
@final
class Party:
    @property
    def id(self) -> int: ...
    @property
    def n_parties(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @staticmethod
    def connect(
        party_id: int,
        addrs: Sequence[str],
        dealer_addr: str,
        token: str,
        session: str = "syft-mpc",
        timeout_s: float = 30.0,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_server_name: Optional[str] = None,
    ) -> Party: ...
    def set_timeout(self, seconds: float) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def open(self, x: _U64) -> _U64: ...
    def input(self, owner: int, x: Optional[_U64] = None, shape: Optional[Sequence[int]] = None) -> _U64: ...
    def mul(self, x: _U64, y: _U64) -> _U64: ...
    def matmul(self, x: _U64, y: _U64) -> _U64: ...
    def conv2d(
        self,
        x: _U64,
        w: _U64,
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
    ) -> _U64: ...
    def truncate(self, x: _U64, divisor: int) -> _U64: ...
    def truncate_local(self, x: _U64, frac_bits: int) -> _U64: ...
    def ltz(self, x: _U64) -> _U64: ...
    def relu(self, x: _U64) -> _U64: ...
    def relu_mask(self, x: _U64) -> tuple[_U64, _U64]: ...
    def preprocess(self, requests: Sequence[Request]) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def __enter__(self) -> Party: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> bool: ...

@final
class Request:
    @staticmethod
    def mul(n: int) -> Request: ...
    @staticmethod
    def matmul(m: int, k: int, n: int, batch: int = 1) -> Request: ...
    @staticmethod
    def conv2d(
        x_shape: Sequence[int],
        w_shape: Sequence[int],
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
    ) -> Request: ...
    @staticmethod
    def truncate(n: int, divisor: int) -> Request: ...
    @staticmethod
    def ltz(n: int) -> Request: ...
    @staticmethod
    def relu(n: int) -> Request: ...

@final
class Dealer:
    @property
    def n_parties(self) -> int: ...
    @staticmethod
    def connect(
        n_parties: int,
        dealer_addr: str,
        token: str,
        session: str = "syft-mpc",
        timeout_s: float = 30.0,
        idle_timeout_s: float = 3600.0,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
    ) -> Dealer: ...
    def serve(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...

def memory_session(
    n_parties: int, timeout_s: float = 30.0, dealer_timeout_s: float = 3600.0
) -> tuple[list[Party], Dealer]: ...

# Control plane (channel.rs): authenticated framed TCP between drivers and workers.

def worker_party_id(name: str) -> int: ...
@final
class Listener:
    def __new__(
        cls,
        addr: str,
        token: str,
        name: str,
        session: str = "syft-mpc-control",
        timeout_s: float = 30.0,
        max_message: int = 1073741824,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
    ) -> Listener: ...
    @property
    def local_addr(self) -> str: ...
    @property
    def tls(self) -> bool: ...
    def accept(self, timeout_s: float = 1.0) -> Optional[Connection]: ...
    def close(self) -> None: ...

@final
class Connection:
    @staticmethod
    def connect(
        addr: str,
        token: str,
        name: str,
        session: str = "syft-mpc-control",
        timeout_s: float = 30.0,
        max_message: int = 1073741824,
        tls_ca: Optional[str] = None,
        tls_server_name: Optional[str] = None,
    ) -> Connection: ...
    def send(self, data: _Message) -> None: ...
    def recv(self, timeout_s: Optional[float] = None) -> bytes | _U8: ...
    def request(self, data: _Message, timeout_s: Optional[float] = None) -> bytes | _U8: ...
    def set_timeout(self, timeout_s: float) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def peer(self) -> str: ...
    @property
    def peer_addr(self) -> Optional[str]: ...
    @property
    def tls(self) -> bool: ...
    def stats(self) -> dict[str, int]: ...
    def __enter__(self) -> Connection: ...
    def __exit__(
        self,
        t: Optional[type[BaseException]],
        v: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
