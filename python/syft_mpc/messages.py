"""The control-plane messages: what a driver (or another worker) asks a worker to do.

Each message is a :class:`~syft_mpc.serde.Struct` with a fixed kind and typed fields,
carried in an :class:`Envelope` that also holds the sender's batched deletions
(garbage-collected pointers). A worker answers every envelope with :class:`Ok` or
:class:`Err`.

    >>> from syft_mpc import messages, serde
    >>> env = messages.Envelope("me", [7], messages.Fetch(42, True))
    >>> serde.decode(serde.encode(env)) == env
    True
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import torch

from syft_mpc.errors import SerializationError
from syft_mpc.serde import PointerDesc, Struct, register

MAX_ID = (1 << 63) - 1


def new_id() -> int:
    """A fresh object id from the OS CSPRNG (63 bits, so ids cannot be guessed or collide)."""
    return secrets.randbits(63)


def _check_id(name: str, v: int) -> None:
    if type(v) is not int or not 0 <= v <= MAX_ID:
        raise SerializationError(f"{name} must be an object id (0 <= id < 2**63), got {v!r}")


@register
@dataclass
class Store(Struct):
    """Store ``obj`` (a tensor, or a pointer for pointer chains) under ``obj_id``."""

    KIND: ClassVar[int] = 10
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (torch.Tensor, PointerDesc))
    obj_id: int
    obj: Union[torch.Tensor, PointerDesc]

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)


@register
@dataclass
class Fetch(Struct):
    """Return object ``obj_id``; with ``remove`` the worker forgets it (``.get()``)."""

    KIND: ClassVar[int] = 11
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (bool,))
    obj_id: int
    remove: bool

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)


@register
@dataclass
class Command(Struct):
    """Run the allowlisted operation ``op`` on ``args``/``kwargs`` (objects as ObjRef).

    A tensor result is stored under ``return_id`` (chosen by the caller); tensors inside
    a tuple result get fresh ids chosen by the worker. ``grad_enabled`` carries the
    caller's ``torch.is_grad_enabled()``.
    """

    KIND: ClassVar[int] = 12
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,), (tuple,), (dict,), (int,), (bool,))
    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    return_id: int
    grad_enabled: bool

    def validate(self) -> None:
        _check_id("return_id", self.return_id)
        if any(type(k) is not str for k in self.kwargs):
            raise SerializationError("keyword argument names must be strings")


@register
@dataclass
class GetAttr(Struct):
    """Read attribute ``name`` (``grad``, ``data``, ...) of object ``obj_id``; store a tensor under ``return_id``."""

    KIND: ClassVar[int] = 13
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (str,), (int,))
    obj_id: int
    name: str
    return_id: int

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)
        _check_id("return_id", self.return_id)


@register
@dataclass
class SetAttr(Struct):
    """Set attribute ``name`` of object ``obj_id`` to ``value`` (an ObjRef, None or a plain value)."""

    KIND: ClassVar[int] = 14
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (str,), (object,))
    obj_id: int
    name: str
    value: Any

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)


@register
@dataclass
class Move(Struct):
    """Send object ``obj_id`` to worker ``dest``, stored there as ``new_id``.

    Without ``keep_pointer`` the object leaves this worker (``ptr.move(dest)``); with it
    this worker keeps, under ``obj_id``, a pointer to the new location (``ptr.remote_send(dest)``).
    """

    KIND: ClassVar[int] = 15
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (str,), (int,), (bool,))
    obj_id: int
    dest: str
    new_id: int
    keep_pointer: bool

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)
        _check_id("new_id", self.new_id)


@register
@dataclass
class RemoteGet(Struct):
    """Object ``obj_id`` is a pointer: fetch what it points to and store it in its place."""

    KIND: ClassVar[int] = 16
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,),)
    obj_id: int

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)


@register
@dataclass
class Envelope(Struct):
    """What travels to a worker: who sends, which of its pointers died, and the request (or None)."""

    KIND: ClassVar[int] = 1
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,), (list,), (Struct, type(None)))
    sender: str
    deletes: list[int]
    body: Struct | None

    def validate(self) -> None:
        for i in self.deletes:
            _check_id("a deleted id", i)


@register
@dataclass
class Ok(Struct):
    """A successful reply; ``value`` is the result (PointerDesc for tensors that stay remote)."""

    KIND: ClassVar[int] = 2
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((object,),)
    value: Any


@register
@dataclass
class Err(Struct):
    """A failed request: the exception's type name and message on the worker."""

    KIND: ClassVar[int] = 3
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,), (str,))
    err_type: str
    message: str


# ----------------------------------------------------------------------------- MPC (issue 5)
# Handled by syft_mpc.mpc_session (registered with workers.register_handler).


@register
@dataclass
class MpcJoin(Struct):
    """Join MPC session ``session`` as party ``party_id`` of ``len(addrs)`` (or, with
    ``party_id == -1``, as its crypto provider / dealer): ``Party.connect`` /
    ``Dealer.connect`` over TCP, authenticated with ``token``. Blocks until every
    member has joined, so a driver sends the joins of one session concurrently."""

    KIND: ClassVar[int] = 30
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,), (int,), (list,), (str,), (str,), (float,))
    session: str
    party_id: int
    addrs: list[str]
    dealer_addr: str
    token: str
    timeout_s: float

    def validate(self) -> None:
        if not 2 <= len(self.addrs) <= 64 or any(type(a) is not str for a in self.addrs):
            raise SerializationError("MpcJoin.addrs must list 2 to 64 addresses")
        if not -1 <= self.party_id < len(self.addrs):
            raise SerializationError(f"MpcJoin.party_id {self.party_id} is out of range")
        if not 0.0 < self.timeout_s <= 3600.0:
            raise SerializationError("MpcJoin.timeout_s must be in (0, 3600]")


@register
@dataclass
class MpcRun(Struct):
    """Run MPC operation ``op`` (a name in ``syft_mpc.mpc_session.MPC_OPS``) of session
    ``session`` on this worker's shares (ObjRefs in ``args``/``kwargs``); store the
    share results under ``return_ids``. Every share holder gets the same message."""

    KIND: ClassVar[int] = 31
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,), (str,), (tuple,), (dict,), (list,))
    session: str
    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    return_ids: list[int]

    def validate(self) -> None:
        for i in self.return_ids:
            _check_id("a return id", i)
        if any(type(k) is not str for k in self.kwargs):
            raise SerializationError("keyword argument names must be strings")


@register
@dataclass
class MpcLeave(Struct):
    """Close this worker's party (or dealer) of MPC session ``session``, if it has one."""

    KIND: ClassVar[int] = 32
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,),)
    session: str


@register
@dataclass
class MpcShareOut(Struct):
    """Secret-share object ``obj_id`` (a plain tensor on this worker) among ``holders`` (worker ids,
    party order): this worker encodes it (``precision >= 0``: fixed point ``base**precision``;
    ``precision == -1``: an integer tensor as it is), splits it with ``_native.share`` and stores
    share i under ``share_id`` on ``holders[i]`` directly (``Store``, as ``Move`` does). The
    plaintext never leaves this worker; the reply is the tensor's shape."""

    KIND: ClassVar[int] = 33
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (list,), (int,), (int,), (int,))
    obj_id: int
    holders: list[str]
    share_id: int
    base: int
    precision: int

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)
        _check_id("share_id", self.share_id)
        if not 2 <= len(self.holders) <= 64 or any(type(h) is not str for h in self.holders):
            raise SerializationError("MpcShareOut.holders must list 2 to 64 worker ids")
        if len(set(self.holders)) != len(self.holders):
            raise SerializationError("MpcShareOut.holders must be distinct workers")
        if self.base not in (2, 10) or not -1 <= self.precision <= 62:
            raise SerializationError("MpcShareOut: base must be 2 or 10 and precision in [-1, 62]")


@register
@dataclass
class MpcPort(Struct):
    """Return a free TCP port on ``host``, an address of this worker's machine (the one the
    driver reaches it by): where this worker's party or dealer will listen in the next
    session, so the members of a session may sit on different machines."""

    KIND: ClassVar[int] = 35
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,),)
    host: str

    def validate(self) -> None:
        if not 0 < len(self.host) <= 255:
            raise SerializationError("MpcPort.host must be a host name or address of at most 255 characters")


@register
@dataclass
class MpcStats(Struct):
    """Return this worker's traffic counters for MPC session ``session`` (its party's or its
    dealer's ``stats()``: rounds, bytes sent and received), or an empty dict if it has none."""

    KIND: ClassVar[int] = 34
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,),)
    session: str
