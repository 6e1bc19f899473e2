"""The control-plane messages: what a driver (or another worker) asks a worker to do.

Each message is a :class:`~syft_mpc.remote.serde.Struct` with a fixed kind and typed fields,
carried in an :class:`Envelope` that also holds the sender's batched deletions
(garbage-collected pointers). A worker answers every envelope with :class:`Ok` or
:class:`Err`.

On a socket connection (:mod:`syft_mpc.net`), each message travels in a frame (one transport
message; the first byte is the frame kind, :data:`REQUEST`, :data:`POST`, :data:`SYNC`, :data:`HELLO`)::

    b"R" + Envelope   request; the worker answers with Ok/Err
    b"A" + Envelope   posted request (Store, SetAttr, deletions): no answer on success; the
                      first failure is answered to the next b"R"/b"S" (which is not run, but
                      the deletions it carries are)
    b"S"              sync point: answers Ok(number of objects held), or the pending failure
    b"H" + {"uid": str, "peers": {worker id: "host:port"}}
                      hello (first frame of every connection, and again when the driver
                      learns new workers): who the client is (objects it stores are freed
                      when it stays away longer than the worker's grace period) and where
                      the other workers listen (for ``.move()`` and pointer chains, which
                      go worker to worker directly). Answered with Ok(None).

    >>> from syft_mpc.remote import messages, serde
    >>> env = messages.Envelope("me", [7], messages.Fetch(42, True))
    >>> serde.decode(serde.encode(env)) == env
    True
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import torch

from syft_mpc.errors import (
    ObjectNotFoundError,
    RemoteError,
    RemoteIndexError,
    RemoteNotImplementedError,
    RemoteResourceLimitError,
    RemoteRuntimeError,
    RemoteTypeError,
    RemoteValueError,
    RemoteZeroDivisionError,
    SerializationError,
)
from syft_mpc.remote.serde import PointerDesc, Struct, register

MAX_ID = (1 << 63) - 1

REQUEST, POST, SYNC, HELLO = b"R", b"A", b"S", b"H"
"""The frame kinds of a worker connection (see the module docstring)."""
DEFAULT_SESSION = "syft-mpc-control"
"""The session name a worker connection authenticates with unless told otherwise."""

# The error types an Err reply may name, mapped to the local class raised for them.
_REMOTE_ERRORS: dict[str, type[RemoteError]] = {
    "RuntimeError": RemoteRuntimeError,
    "TypeError": RemoteTypeError,
    "ValueError": RemoteValueError,
    "IndexError": RemoteIndexError,
    "NotImplementedError": RemoteNotImplementedError,
    "ZeroDivisionError": RemoteZeroDivisionError,
    "ObjectNotFoundError": ObjectNotFoundError,
    "UnsupportedOperationError": RemoteTypeError,
    "SerializationError": RemoteValueError,
    "LocationError": RemoteValueError,
    "PlanError": RemoteRuntimeError,
    "ResourceLimitError": RemoteResourceLimitError,
    "MemoryError": RemoteResourceLimitError,
}


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


MAX_TAGS = 256
MAX_TAG_CHARS = 256
MAX_DESCRIPTION_CHARS = 1 << 16


def _check_tags(what: str, tags: list[Any]) -> None:
    if len(tags) > MAX_TAGS:
        raise SerializationError(f"{what} holds at most {MAX_TAGS} strings, got {len(tags)}")
    for t in tags:
        if type(t) is not str or not 0 < len(t) <= MAX_TAG_CHARS:
            raise SerializationError(f"{what} are strings of 1 to {MAX_TAG_CHARS} characters, got {t!r:.80}")


@register
@dataclass
class Describe(Struct):
    """Attach ``tags`` and ``description`` (None: keep the current one) to object ``obj_id``
    (``tensor.tag(...)``/``.describe(...)`` travel with ``.send()``; what ``search`` matches)."""

    KIND: ClassVar[int] = 17
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (list,), (str, type(None)))
    obj_id: int
    tags: list[str]
    description: "str | None"

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)
        _check_tags("tags", self.tags)
        if self.description is not None and len(self.description) > MAX_DESCRIPTION_CHARS:
            raise SerializationError(f"a description holds at most {MAX_DESCRIPTION_CHARS} characters")


@register
@dataclass
class Search(Struct):
    """Find the tensors whose tags (or description, or id) match every item of ``query``
    (``worker.search([...])``). The reply lists ``(PointerDesc, tags, description)`` per match."""

    KIND: ClassVar[int] = 18
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((list,),)
    query: list[str]

    def validate(self) -> None:
        _check_tags("query items", self.query)


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

    def exception(self, worker: str) -> RemoteError:
        """The exception to raise for this reply from ``worker``: a :class:`~syft_mpc.errors.RemoteError`
        that is also the builtin error of the same kind (``RemoteValueError`` for ``ValueError``, ...)."""
        cls = _REMOTE_ERRORS.get(self.err_type, RemoteError)
        err = cls(f"{self.err_type} on worker {worker}: {self.message}")
        err.worker = worker
        err.remote_type = self.err_type
        return err


# ----------------------------------------------------------------------------- MPC sessions (KIND 30-35)
# Handled by syft_mpc.mpc_session.worker.


MAX_JOIN_TIMEOUT_S = 600.0
"""The longest wait a client may ask of a worker's MPC session (``MpcJoin.timeout_s``)."""


@register
@dataclass
class MpcJoin(Struct):
    """Join MPC session ``session`` as party ``party_id`` of ``len(addrs)`` (or, with
    ``party_id == -1``, as its crypto provider / dealer): ``Party.connect`` /
    ``Dealer.connect`` over TCP, authenticated with ``token``. Blocks until every
    member has joined, so a driver sends the joins of one session concurrently.
    ``timeout_s`` bounds each wait of the session (at most :data:`MAX_JOIN_TIMEOUT_S`); the
    worker holds no lock meanwhile, so only this request waits."""

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
        if not 0.0 < self.timeout_s <= MAX_JOIN_TIMEOUT_S:
            raise SerializationError(f"MpcJoin.timeout_s must be in (0, {MAX_JOIN_TIMEOUT_S:g}] seconds")


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


# ============================================================================ checkpoints (KIND 50-52)

_CHECKPOINT_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_CHECKPOINT_META = 16 << 20  # the driver's description: names and shapes, never data


def check_tag(tag: object) -> str:
    """Returns ``tag`` if it is a valid checkpoint name (letters, digits, ``_.-``, not starting
    with ``.`` or ``-``, at most 128 characters); raises ValueError otherwise."""
    if not isinstance(tag, str) or _CHECKPOINT_TAG.fullmatch(tag) is None:
        raise ValueError(
            f"bad checkpoint tag {tag!r}: use 1 to 128 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit (a tag names a file in the worker's state directory, never a path)"
        )
    return tag


def _wire_tag(tag: str) -> None:
    try:
        check_tag(tag)
    except ValueError as e:
        raise SerializationError(str(e)) from None


def _check_ids(ids: list[Any]) -> None:
    if len(ids) > 1_000_000:
        raise SerializationError("a checkpoint holds at most 1,000,000 tensors")
    for i in ids:
        if type(i) is not int or not 0 <= i <= MAX_ID:
            raise SerializationError(f"checkpoint object ids must be object ids (0 <= id < 2**63), got {i!r}")


def _check_nonce(nonce: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{32}", nonce):
        raise SerializationError("a checkpoint nonce is 32 lowercase hex digits")


@register
@dataclass
class CheckpointSave(Struct):
    """Write this worker's objects ``ids`` (int64 shares) to ``<state dir>/<tag>.npz``,
    with ``nonce`` (the same on every holder of one save) and ``meta`` (the driver's
    description, stored as it is). Replaces an earlier checkpoint of that tag atomically."""

    KIND: ClassVar[int] = 50
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,), (str,), (list,), (bytes,))
    tag: str
    nonce: str
    ids: list[int]
    meta: bytes

    def validate(self) -> None:
        _wire_tag(self.tag)
        _check_nonce(self.nonce)
        _check_ids(self.ids)
        if len(self.meta) > MAX_CHECKPOINT_META:
            raise SerializationError("checkpoint description too large")


@register
@dataclass
class CheckpointInfo(Struct):
    """Describe checkpoint ``tag`` of this worker: ``{"nonce", "count", "meta"}``."""

    KIND: ClassVar[int] = 51
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,),)
    tag: str

    def validate(self) -> None:
        _wire_tag(self.tag)


@register
@dataclass
class CheckpointLoad(Struct):
    """Load checkpoint ``tag`` (it must carry ``nonce``) and store its tensors under ``ids``
    (fresh ids chosen by the driver, the same on every holder). Replies with their shapes."""

    KIND: ClassVar[int] = 52
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((str,), (str,), (list,))
    tag: str
    nonce: str
    ids: list[int]

    def validate(self) -> None:
        _wire_tag(self.tag)
        _check_nonce(self.nonce)
        _check_ids(self.ids)


# ============================================================================ federated learning (KIND 40-41)

MAX_TRAIN_STEPS = 1_000_000
LOSS_NAMES = ("cross_entropy", "nll", "mse")
"""The losses a worker trains with (``syft_mpc.federated.local.LOSSES`` maps them to functions)."""

def _finite(name: str, v: float, lo: float, hi: float) -> None:
    if not (math.isfinite(v) and lo <= v <= hi):
        raise SerializationError(f"{name} must be in [{lo}, {hi}], got {v!r}")


@register
@dataclass
class LocalTrain(Struct):
    """Train a model built from ``spec`` with ``params`` on this worker's ``data_id`` /
    ``targets_id`` tensors and store its update vector under ``return_id`` (see the module
    docstring). ``dp_noise_multiplier > 0`` trains with Opacus DP-SGD instead of SGD.
    ``threads > 0`` sets torch's intra-op threads for the training (restored afterwards;
    0 leaves the worker's setting). The reply is ``{"epsilon": ε of this call's DP-SGD or
    None, "steps": steps}``."""

    KIND: ClassVar[int] = 40
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = (
        (list,), (list,), (int,), (int,), (int,), (int,), (int,), (float,), (float,), (str,), (int,),
        (bool,), (float,), (bool,), (float,), (float,), (float,), (int,),
    )
    spec: list[Any]
    params: list[torch.Tensor]
    data_id: int
    targets_id: int
    return_id: int
    steps: int
    batch_size: int
    lr: float
    momentum: float
    loss: str
    seed: int
    weighted: bool
    clip_norm: float
    report_loss: bool
    dp_noise_multiplier: float
    dp_max_grad_norm: float
    dp_delta: float
    threads: int

    def validate(self) -> None:
        for name in ("data_id", "targets_id", "return_id", "seed"):
            _check_id(name, getattr(self, name))
        if any(not isinstance(p, torch.Tensor) for p in self.params):
            raise SerializationError("LocalTrain.params must be tensors")
        if not 1 <= self.steps <= MAX_TRAIN_STEPS or self.batch_size < 1:
            raise SerializationError(f"LocalTrain: steps must be in [1, {MAX_TRAIN_STEPS}] and batch_size >= 1")
        _finite("lr", self.lr, 1e-12, 1e6)
        _finite("momentum", self.momentum, 0.0, 0.999999)
        _finite("clip_norm", self.clip_norm, 0.0, 1e12)
        _finite("dp_noise_multiplier", self.dp_noise_multiplier, 0.0, 1e6)
        if not 0 <= self.threads <= 1024:
            raise SerializationError("LocalTrain.threads must be in [0, 1024]")
        if self.loss not in LOSS_NAMES:
            raise SerializationError(f"LocalTrain: unknown loss {self.loss!r} (one of {sorted(LOSS_NAMES)})")
        if self.dp_noise_multiplier > 0:
            _finite("dp_max_grad_norm", self.dp_max_grad_norm, 1e-12, 1e12)
            _finite("dp_delta", self.dp_delta, 1e-300, 1.0)


@register
@dataclass
class AddNoiseShare(Struct):
    """Add N(0, std²) noise, fixed-point encoded (``base**precision``), to this worker's
    share ``obj_id`` and store the result under ``new_id``: every share holder adds its
    own noise, so the shared sum gets noise that no single party knows. Replies the shape."""

    KIND: ClassVar[int] = 41
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (int,), (float,), (int,), (int,))
    obj_id: int
    new_id: int
    std: float
    base: int
    precision: int

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)
        _check_id("new_id", self.new_id)
        _finite("std", self.std, 0.0, 1e6)
        if self.base not in (2, 10) or not 0 <= self.precision <= 30:
            raise SerializationError("AddNoiseShare: base must be 2 or 10 and precision in [0, 30]")
        if self.std * float(self.base**self.precision) > 2.0**50:  # |noise| < 2^57 even at 100 sigma
            raise SerializationError("AddNoiseShare: std is too large for this fixed-point precision")


# ============================================================================ plans and protocols (KIND 60-65)
# Handled by syft_mpc.plans.worker; the format is described in docs/PLANS.md.

MAX_PLAN_NODES = 100_000
MAX_PLAN_INPUTS = 10_000
MAX_PLAN_STATE = 100_000
MAX_PLAN_NAME = 256
MAX_PROTOCOL_STEPS = 1_000
_PLAN_LEAVES = (type(None), bool, int, float, str, torch.dtype, torch.device, torch.memory_format)


@register
@dataclass(frozen=True)
class Var(Struct):
    """A value of a plan's graph, by index: inputs first, then state tensors, then one value per node."""

    KIND: ClassVar[int] = 60
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,),)
    idx: int


def _check_plan_value(v: Any, limit: int, where: str, depth: int = 0) -> None:
    """A node argument or an output: nested lists/tuples/str-keyed dicts of plain values and
    :class:`Var` that name values already computed (index < ``limit``)."""
    tv = type(v)
    if tv is Var:
        if not 0 <= v.idx < limit:
            raise SerializationError(f"{where} refers to value {v.idx}, which is not defined before it (0..{limit - 1})")
    elif tv is list or tv is tuple:
        for x in v:
            _check_plan_value(x, limit, where, depth + 1)
    elif tv is dict:
        for k, x in v.items():
            if type(k) is not str:
                raise SerializationError(f"{where}: keyword names must be strings")
            _check_plan_value(x, limit, where, depth + 1)
    elif not isinstance(v, _PLAN_LEAVES):
        raise SerializationError(f"{where} holds a {tv.__name__}; a plan's arguments are values, lists and Vars")


def _leaves(v: Any) -> list[Any]:
    if type(v) in (list, tuple):
        return [x for item in v for x in _leaves(item)]
    return [v]


@register
@dataclass
class PlanDef(Struct):
    """A plan: a graph of aten ops over ``n_inputs`` inputs and the ``state`` tensors.

    ``in_tree`` is the call's argument structure (lists/tuples whose leaves are ``Var(i)`` for
    the i-th input, in order, or plain constants the plan was built with); ``nodes`` are
    ``(op, args, kwargs)`` with ``op`` an ``aten.<op>.<overload>`` name (or ``prim.getitem``)
    and each argument a plain value, a list of them, or a :class:`Var`; node ``k`` defines value
    ``n_inputs + len(state) + k``. ``outputs`` is a Var or a list/tuple of them."""

    KIND: ClassVar[int] = 61
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = (
        (int,), (str,), (object,), (int,), (list,), (list,), (object,),
    )
    plan_id: int
    name: str
    in_tree: Any
    n_inputs: int
    state: list[torch.Tensor]
    nodes: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
    outputs: Any

    def validate(self) -> None:
        _check_id("plan_id", self.plan_id)
        if len(self.name) > MAX_PLAN_NAME:
            raise SerializationError(f"a plan name has at most {MAX_PLAN_NAME} characters")
        if not 0 <= self.n_inputs <= MAX_PLAN_INPUTS:
            raise SerializationError(f"a plan has 0 to {MAX_PLAN_INPUTS} inputs, not {self.n_inputs}")
        if len(self.state) > MAX_PLAN_STATE or any(not isinstance(t, torch.Tensor) for t in self.state):
            raise SerializationError(f"a plan's state is a list of at most {MAX_PLAN_STATE} tensors")
        if len(self.nodes) > MAX_PLAN_NODES:
            raise SerializationError(f"a plan has at most {MAX_PLAN_NODES} nodes, this one {len(self.nodes)}")
        _check_plan_value(self.in_tree, self.n_inputs, "the plan's input structure")
        if [v.idx for v in _leaves(self.in_tree) if type(v) is Var] != list(range(self.n_inputs)):
            raise SerializationError("the plan's input structure must name its inputs Var(0)..Var(n-1) once each, in order")
        defined = self.n_inputs + len(self.state)
        for k, node in enumerate(self.nodes):
            where = f"plan node {k}"
            if type(node) is not tuple or len(node) != 3:
                raise SerializationError(f"{where} must be a tuple (op, args, kwargs)")
            op, args, kwargs = node
            if type(op) is not str or type(args) is not tuple or type(kwargs) is not dict:
                raise SerializationError(f"{where} must be (op: str, args: tuple, kwargs: dict)")
            _check_plan_value(args, defined, f"{where} ({op})")
            _check_plan_value(kwargs, defined, f"{where} ({op})")
            defined += 1
        outs = _leaves(self.outputs)
        if not outs or any(type(v) is not Var for v in outs):
            raise SerializationError("a plan's outputs must be one Var or lists and tuples of Vars")
        _check_plan_value(self.outputs, defined, "the plan's outputs")


@register
@dataclass
class ProtocolDef(Struct):
    """A protocol: ``steps`` of ``(role, worker id or "", plan index)`` run in order, each plan's
    outputs the next one's inputs; ``plans`` holds each distinct plan once (with the id it has
    on the step's worker once deployed). ``tags`` and ``description`` are the owner's labels."""

    KIND: ClassVar[int] = 64
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (list,), (list,), (list,), (str,))
    protocol_id: int
    steps: list[tuple[str, str, int]]
    plans: list[PlanDef]
    tags: list[str]
    description: str

    def validate(self) -> None:
        _check_id("protocol_id", self.protocol_id)
        if not 1 <= len(self.steps) <= MAX_PROTOCOL_STEPS:
            raise SerializationError(f"a protocol has 1 to {MAX_PROTOCOL_STEPS} steps")
        if any(type(p) is not PlanDef for p in self.plans):
            raise SerializationError("a protocol's plans must be plans")
        for step in self.steps:
            if (
                type(step) is not tuple
                or len(step) != 3
                or type(step[0]) is not str
                or type(step[1]) is not str
                or type(step[2]) is not int
                or not 0 <= step[2] < len(self.plans)
            ):
                raise SerializationError("a protocol step is (role: str, worker id: str, plan index)")
        if any(type(t) is not str or len(t) > MAX_PLAN_NAME for t in self.tags):
            raise SerializationError("a protocol's tags are strings")


@register
@dataclass
class PlanStore(Struct):
    """Validate ``obj`` (a plan or a protocol) and keep it under ``obj_id``; it runs many times
    without being sent again, until it is deleted like any object (the pointer died, or ``.get()``)."""

    KIND: ClassVar[int] = 62
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (PlanDef, ProtocolDef))
    obj_id: int
    obj: "PlanDef | ProtocolDef"

    def validate(self) -> None:
        _check_id("obj_id", self.obj_id)


@register
@dataclass
class PlanRun(Struct):
    """Run plan ``plan_id`` on ``args`` (its flat inputs: ObjRefs to stored tensors, or tensors)
    and store its outputs under ``return_ids``; replies with a PointerDesc per output."""

    KIND: ClassVar[int] = 63
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (tuple,), (list,))
    plan_id: int
    args: tuple[Any, ...]
    return_ids: list[int]

    def validate(self) -> None:
        _check_id("plan_id", self.plan_id)
        if len(self.args) > MAX_PLAN_INPUTS or len(self.return_ids) > MAX_PLAN_NODES:
            raise SerializationError("too many plan arguments or results")
        for i in self.return_ids:
            _check_id("a return id", i)


@register
@dataclass
class ProtocolRun(Struct):
    """Run protocol ``protocol_id`` (stored here, deployed) on ``args``: this worker moves the data
    from step to step and keeps a pointer to the last step's result under ``return_id``."""

    KIND: ClassVar[int] = 65
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (tuple,), (int,))
    protocol_id: int
    args: tuple[Any, ...]
    return_id: int

    def validate(self) -> None:
        _check_id("protocol_id", self.protocol_id)
        _check_id("return_id", self.return_id)


# ============================================================================ train configs (KIND 42-44)
# PySyft 0.2's TrainConfig / fit / evaluate, on plans; handled by syft_mpc.federated.worker.

MAX_DATASET_KEY = 256


def _check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_DATASET_KEY:
        raise SerializationError(f"a dataset key has 1 to {MAX_DATASET_KEY} characters")


@register
@dataclass
class TrainConfigStore(Struct):
    """Keep a training configuration under ``config_id``: the model's forward pass as plans
    (``forward``: ``(x, *params) -> output``, one graph per batch size in ``batch_sizes``), the
    loss (``loss``: ``(output, target) -> scalar``, same batch sizes), the training step
    (``step``: ``(x, target, *params) -> (loss, *new params)`` at ``batch_sizes[0]``, or None for a
    configuration that only evaluates), and the model's ``params``, stored under ``param_ids``."""

    KIND: ClassVar[int] = 42
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = (
        (int,), (list,), (list,), (list,), (PlanDef, type(None)), (list,), (list,), (bool,), (int,), (int,), (int,),
    )
    config_id: int
    batch_sizes: list[int]
    forward: list[PlanDef]
    loss: list[PlanDef]
    step: "PlanDef | None"
    params: list[torch.Tensor]
    param_ids: list[int]
    shuffle: bool
    max_nr_batches: int
    epochs: int
    seed: int

    def validate(self) -> None:
        _check_id("config_id", self.config_id)
        _check_id("seed", self.seed)
        if len(self.batch_sizes) != 2 or not all(type(b) is int and 1 <= b <= 1_000_000 for b in self.batch_sizes):
            raise SerializationError("TrainConfigStore.batch_sizes is [batch_size, 1]")
        for name in ("forward", "loss"):
            plans = getattr(self, name)
            if len(plans) != 2 or any(type(p) is not PlanDef for p in plans):
                raise SerializationError(f"TrainConfigStore.{name} is one plan per batch size")
        if len(self.params) != len(self.param_ids) or any(not isinstance(p, torch.Tensor) for p in self.params):
            raise SerializationError("TrainConfigStore: one id per parameter tensor")
        for i in self.param_ids:
            _check_id("a parameter id", i)
        if not 1 <= self.epochs <= MAX_TRAIN_STEPS or not -1 <= self.max_nr_batches <= MAX_TRAIN_STEPS:
            raise SerializationError(f"TrainConfigStore: epochs in [1, {MAX_TRAIN_STEPS}], max_nr_batches in [-1, {MAX_TRAIN_STEPS}]")


@register
@dataclass
class Fit(Struct):
    """Train the stored configuration ``config_id`` on this worker's dataset ``dataset_key``
    (one training-step plan run per batch); the parameters stay here, updated. Replies with the
    loss of the last batch (a 0-d tensor)."""

    KIND: ClassVar[int] = 43
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (str,))
    config_id: int
    dataset_key: str

    def validate(self) -> None:
        _check_id("config_id", self.config_id)
        _check_key(self.dataset_key)


@register
@dataclass
class Evaluate(Struct):
    """Run the stored configuration's model and loss on the dataset ``dataset_key``; reply with
    a dict (PySyft 0.2.9's keys): ``nr_predictions``, and as asked ``loss`` (mean over samples),
    ``nr_correct_predictions``, ``histogram_predictions`` / ``histogram_target`` (``nr_bins`` counts)."""

    KIND: ClassVar[int] = 44
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ((int,), (str,), (bool,), (int,), (bool,), (bool,))
    config_id: int
    dataset_key: str
    return_histograms: bool
    nr_bins: int
    return_loss: bool
    return_raw_accuracy: bool

    def validate(self) -> None:
        _check_id("config_id", self.config_id)
        _check_key(self.dataset_key)
        if self.return_histograms and not 1 <= self.nr_bins <= 100_000:
            raise SerializationError("Evaluate: nr_bins must be in [1, 100000] when histograms are asked for")
