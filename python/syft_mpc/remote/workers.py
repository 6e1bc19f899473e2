"""Workers: an object store plus the handler for control messages, independent of the transport.

:class:`BaseWorker` holds ``_objects`` (id -> tensor or pointer) and answers encoded
requests in :meth:`BaseWorker.handle` (``bytes -> bytes``). To talk to another worker
it encodes a request, hands the bytes to that worker's :meth:`BaseWorker._deliver`,
and decodes the reply. :class:`VirtualWorker` delivers in-process by calling the
other worker's ``handle``, so every message still goes through the real codec; a
socket worker only has to override ``_deliver``.

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob = sy.VirtualWorker(hook, id="bob")
    >>> x = torch.tensor([1, 2, 3]).send(bob)
    >>> bob
    <VirtualWorker id:bob #objects:1>
    >>> bob.clear_objects()
    <VirtualWorker id:bob #objects:0>
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import torch

from syft_mpc import limits
from syft_mpc.remote import allowlist, serde
from syft_mpc.errors import (
    ObjectNotFoundError,
    RemoteError,
    SerializationError,
    TransportError,
    UnsupportedOperationError,
)
from syft_mpc.remote.messages import (
    Command,
    Describe,
    Envelope,
    Err,
    Evaluate,
    Fetch,
    Fit,
    GetAttr,
    Move,
    Ok,
    RemoteGet,
    Search,
    SetAttr,
    Store,
    new_id,
)
from syft_mpc.remote.pointers import PointerTensor, RemoteParameter
from syft_mpc.remote.serde import ObjRef, PointerDesc

__all__ = ["MAX_ERROR_CHARS", "BaseWorker", "StoreLock", "VirtualWorker", "local_worker", "register_handler", "register_searchable"]

MAX_ERROR_CHARS = 8192
"""An error reply's message is cut to this many characters (the cut says so): a request
that fails with a huge message (say, a 16 MiB repr) still gets its answer, and logs stay small."""

# Attributes a peer may read or write, as fixed accessors (never getattr with a received name).
_GETTERS: dict[str, Callable[[Any], Any]] = {
    "grad": lambda o: o.grad,
    "data": lambda o: o.data,
    "requires_grad": lambda o: o.requires_grad,
    "is_leaf": lambda o: o.is_leaf,
}


def _set_grad(o: Any, v: Any) -> None:
    o.grad = v


def _set_data(o: Any, v: Any) -> None:
    o.data = v


def _set_requires_grad(o: Any, v: Any) -> None:
    if type(v) is not bool:
        raise TypeError("requires_grad must be a bool")
    o.requires_grad = v


_SETTERS: dict[str, Callable[[Any, Any], None]] = {
    "grad": _set_grad,
    "data": _set_data,
    "requires_grad": _set_requires_grad,
}

_PLAIN_RESULTS = (bool, int, float, complex, str, torch.Size, torch.dtype)
_MOVED_MEMORY = 4096  # how many moved-away ids a worker remembers, for better error messages

# Requests posted without waiting for the reply where the transport allows it (BaseWorker._post).
_NO_REPLY = (Store, SetAttr, Describe)


def _error_reply(err_type: str, msg: str) -> bytes:
    """An encoded :class:`Err`, whatever its text: both parts cut to a bounded size."""
    if len(msg) > MAX_ERROR_CHARS:  # keep both ends: the end often says what went wrong
        half = MAX_ERROR_CHARS // 2
        msg = f"{msg[:half]} ...[error message cut from {len(msg)} to {MAX_ERROR_CHARS} characters]... {msg[-half:]}"
    try:
        return serde.encode(Err(err_type[:200], msg))
    except Exception:  # e.g. lone surrogates that utf-8 cannot encode
        return serde.encode(Err(err_type.encode("ascii", "replace").decode()[:200], ascii(msg)[: MAX_ERROR_CHARS]))


def _estimate_data_dependent(op: str, args: Any, kwargs: Any) -> "int | None":
    """Upper bounds on the output bytes of the allowlisted ops whose size depends on their
    input's values (a meta dry run cannot tell), computed from those values."""
    try:
        if op in ("F.one_hot",):
            t = args[0]
            classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
            if isinstance(t, torch.Tensor) and isinstance(classes, int):
                if classes < 0:
                    classes = int(t.max()) + 1 if t.numel() else 0
                return limits.nbytes((*t.shape, max(classes, 0)), 8, op)
        if op in ("torch.repeat_interleave", "Tensor.repeat_interleave"):
            x = args[0]
            reps = args[1] if len(args) > 1 else kwargs.get("repeats")
            if isinstance(x, torch.Tensor):
                if reps is None:  # torch.repeat_interleave(repeats): sum(repeats) int64 indices
                    return limits.nbytes((int(x.sum()) if x.numel() else 0,), 8, op)
                top = int(reps.max()) if isinstance(reps, torch.Tensor) and reps.numel() else reps
                if isinstance(top, int):
                    return limits.nbytes((x.numel(), max(top, 0)), x.element_size(), op)
    except (RuntimeError, TypeError, ValueError, IndexError):
        return None
    return None


_DATA_DEPENDENT = frozenset({"F.one_hot", "torch.repeat_interleave", "Tensor.repeat_interleave"})
# Ops whose result can be larger than the broadcast of their operands: products, padding,
# repetition, concatenation (one operand may be listed many times), unfolding, factories.
_AMPLIFYING = frozenset(
    {f"{ns}.{n}" for ns in ("torch", "Tensor", "F", "op") for n in """
    matmul mm bmm baddbmm addbmm addmm addmv mv outer ger kron einsum tensordot inner dot cross rmatmul
    repeat tile cat concat concatenate stack hstack vstack dstack pad unfold conv1d conv2d conv3d
    conv_transpose2d diag diag_embed pairwise_distance embedding index_select getitem setitem gather take
    new_empty new_empty_strided new_full new_ones new_zeros new_tensor tensor_split chunk split unbind adaptive_avg_pool1d
    adaptive_avg_pool2d adaptive_max_pool2d linear""".split()}
)


# Products sized from their shapes (a meta dry run costs ~0.5 ms, as much as a small op itself).
_PRODUCTS = frozenset(
    {"torch.matmul", "Tensor.matmul", "op.matmul", "op.rmatmul", "torch.mm", "Tensor.mm", "torch.bmm", "Tensor.bmm", "F.linear"}
)


_CONCATS = frozenset(f"torch.{n}" for n in ("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack"))


def _product_bytes(op: str, args: Any) -> "int | None":
    """An upper bound on a matrix product's result, ``(*batch, m, n)``, from the operand shapes
    (None when they are not two tensors; the product then goes to the meta dry run)."""
    if len(args) < 2 or not isinstance(args[0], torch.Tensor) or not isinstance(args[1], torch.Tensor):
        return limits.meta_output_bytes(allowlist.OPS[op], args, {}) if op in allowlist.OPS else None
    a, b = (args[1], args[0]) if op == "op.rmatmul" else (args[0], args[1])
    sa, sb = list(a.shape), list(b.shape)
    if op == "F.linear":  # x (..., k) @ w (n, k).T
        return limits.nbytes([*sa[:-1], sb[0] if sb else 1], max(a.element_size(), b.element_size()), op)
    if len(sa) == 1:
        sa = [1, *sa]
    if len(sb) == 1:
        sb = [*sb, 1]
    if len(sa) < 2 or len(sb) < 2:
        return None
    ba, bb = sa[:-2], sb[:-2]
    nd = max(len(ba), len(bb))
    ba, bb = [1] * (nd - len(ba)) + ba, [1] * (nd - len(bb)) + bb
    batch = [max(x, y) for x, y in zip(ba, bb)]
    return limits.nbytes([*batch, sa[-2], sb[-1]], max(a.element_size(), b.element_size()), op)


def _logical_sizes(v: Any, out: list[tuple[tuple[int, ...], int]]) -> None:
    if isinstance(v, torch.Tensor):
        out.append((tuple(v.shape), v.element_size()))
    elif type(v) in (tuple, list):
        for x in v:
            _logical_sizes(x, out)
    elif type(v) is dict:
        for x in v.values():
            _logical_sizes(x, out)


def _broadcast_bytes(args: Any, kwargs: Any) -> int:
    """The bytes of an element-wise result of these operands: their broadcast shape (an
    expanded view counts at its full size: computing on it materialises it) times the widest
    dtype; operands that do not broadcast (not an element-wise op): the largest of them."""
    sizes: list[tuple[tuple[int, ...], int]] = []
    _logical_sizes(args, sizes)
    _logical_sizes(kwargs, sizes)
    if not sizes:
        return 0
    item = max(i for _, i in sizes)
    ndim = max(len(sh) for sh, _ in sizes)
    dims = [1] * ndim
    for sh, _ in sizes:
        for i, d in enumerate(sh, ndim - len(sh)):
            if d != dims[i]:
                if dims[i] == 1:
                    dims[i] = d
                elif d != 1:  # no broadcast: not element-wise
                    return max(limits.nbytes(sh, i, "an operation") for sh, i in sizes)
    return limits.nbytes(dims, item, "an operation")


def _describe(op: str, args: Any) -> str:
    shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
    return f"{op} on tensors of shapes {', '.join(map(str, shapes))}" if shapes else op


_registry: dict[str, "BaseWorker"] = {}
"""Workers known in this process, by id (how a received worker id is resolved)."""

_HANDLERS: dict[type, Callable[["BaseWorker", Any], "tuple[Any, Callable[[], None] | None]"]] = {}
"""Extra request types (message class -> handler(worker, body) -> (value, commit)); see register_handler."""


def register_handler(
    msg_type: type, handler: Callable[["BaseWorker", Any], "tuple[Any, Callable[[], None] | None]"]
) -> None:
    """Lets a module add a request type to every worker (e.g. the MPC messages of
    :mod:`syft_mpc.mpc_session`). The handler runs under the worker's lock and returns
    ``(reply value, commit callback or None)``, like the built-in requests; it waits for
    the network only inside ``with worker.unlocked():``."""
    _HANDLERS[msg_type] = handler


_SEARCHABLE: dict[str, Callable[["BaseWorker", "BaseWorker", int], Any]] = {}
"""Stored objects other than tensors that a search finds (type name -> pointer maker)."""


def register_searchable(
    obj_type: type, make_pointer: Callable[["BaseWorker", "BaseWorker", int], Any]
) -> None:
    """Lets a module make its stored objects (``obj_type``, carrying ``tags`` and ``description``)
    findable by :meth:`BaseWorker.search`; a match comes back as ``make_pointer(owner, location,
    id)`` (e.g. the protocols of :mod:`syft_mpc.plans`). The reply names the type, never code."""
    _SEARCHABLE[obj_type.__name__] = make_pointer


class StoreLock:
    """The object store's lock: re-entrant, and let go for network waits (:meth:`released`).

    Requests of different clients are serialised by it, but a request that waits for
    another machine (an MPC peer, a dealer, another worker) must not make every other
    client wait too: it releases the lock for the wait and takes it back afterwards."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = threading.local()  # .n: how many times this thread holds it

    def __enter__(self) -> "StoreLock":
        self._lock.acquire()
        self._depth.n = getattr(self._depth, "n", 0) + 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        self._lock.release()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Releases the lock entirely (however deep this thread holds it) for the block."""
        n = getattr(self._depth, "n", 0)
        for _ in range(n):
            self._lock.release()
        self._depth.n = 0
        try:
            yield
        finally:
            for _ in range(n):
                self._lock.acquire()
            self._depth.n = n


class BaseWorker:
    """A worker: an object store (``_objects``) and the handler of control messages.

    Args:
        hook: the :class:`~syft_mpc.hook.TorchHook` (kept for PySyft compatibility; may be None).
        id: the worker's id; workers are told apart (and compared) by id.
        known_workers: where worker ids received in messages are resolved
            (default: every worker created in this process).
        data: tensors the worker holds from the start (PySyft's ``VirtualWorker(hook, id=...,
            data=(x, y))``), with their tags and descriptions; find them with :meth:`search`.
        max_memory: the memory budget of the requests it answers (bytes, or ``"4G"``; default
            :func:`syft_mpc.limits.default_max_memory`): a request that would allocate more
            is refused with :class:`~syft_mpc.errors.ResourceLimitError` before it allocates.
    """

    def __init__(
        self,
        hook: Any = None,
        id: str = "me",
        known_workers: "dict[str, BaseWorker] | None" = None,
        data: "Iterable[torch.Tensor] | None" = None,
        *,
        max_memory: "int | str | None" = None,
        memory_budget: "limits.MemoryBudget | None" = None,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise ValueError("a worker id must be a non-empty string")
        self.hook = hook
        self.id = id
        self._objects: dict[int, Any] = {}
        self._known_workers = _registry if known_workers is None else known_workers
        self._known_workers[id] = self
        self._gc_pending: dict[BaseWorker, list[int]] = {}
        # Finalizers queue deletions from whichever thread drops the last reference: the
        # queue is only touched under this lock (re-entrant: a finalizer can run inside it).
        self._gc_lock = threading.RLock()
        self._moved: OrderedDict[int, str] = OrderedDict()
        self._lock = StoreLock()
        self.memory_budget = memory_budget or limits.MemoryBudget(max_memory, name=f"worker {id}")
        self.datasets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.train_config: Any = None  # the last sy.TrainConfig sent here (fit/evaluate use it)
        if data is not None:
            self.load_data(data)

    # ------------------------------------------------------------------ identity

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseWorker) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id:{self.id} #objects:{len(self._objects)}>"

    # ------------------------------------------------------------------ object store

    @property
    def _tensors(self) -> dict[int, torch.Tensor]:
        """The stored tensors (not the pointers), by id: PySyft's ``worker._tensors``."""
        return {k: v for k, v in self._objects.items() if isinstance(v, torch.Tensor)}

    def add_dataset(self, dataset: Any, key: str) -> None:
        """Holds ``dataset`` (anything with ``.data`` and ``.targets`` tensors, e.g. a
        ``sy.BaseDataset``) under ``key`` for ``worker.fit`` / ``worker.evaluate`` (PySyft 0.2's
        ``add_dataset``). The data stays on this worker; requests name it by key."""
        data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
        if not isinstance(data, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise TypeError("add_dataset needs a dataset with .data and .targets tensors (e.g. sy.BaseDataset(x, y))")
        if not key or len(data) != len(targets):
            raise ValueError(f"dataset {key!r}: a non-empty key and as many targets ({len(targets)}) as samples ({len(data)})")
        self.datasets[key] = (data.detach(), targets.detach())

    def _config_id(self) -> int:
        cfg = self.train_config
        if cfg is None:
            raise ValueError(f"no train config was sent to worker {self.id}: call sy.TrainConfig(...).send(worker) first")
        return int(cfg.id)

    def fit(self, dataset_key: str, device: str = "cpu", **kwargs: Any) -> torch.Tensor:
        """Trains the last :class:`~syft_mpc.federated.train_config.TrainConfig` sent here on the
        dataset this worker holds under ``dataset_key`` (one request; the training loop runs on
        the worker) and returns the loss of the last batch. PySyft 0.2's ``worker.fit``."""
        if device != "cpu":
            raise ValueError("workers train on the CPU here (device='cpu')")
        loss = local_worker._send(self, Fit(self._config_id(), str(dataset_key)))
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"worker {self.id} answered fit with a {type(loss).__name__}, not a loss tensor")
        return loss

    async def async_fit(self, dataset_key: str, device: str = "cpu", return_ids: Any = None) -> torch.Tensor:
        """:meth:`fit` for ``asyncio`` (PySyft's ``async_fit``): the request waits in a thread, so
        ``asyncio.gather`` over several workers trains them at the same time."""
        import asyncio

        return await asyncio.to_thread(self.fit, dataset_key, device)

    def evaluate(
        self,
        dataset_key: str,
        return_histograms: bool = False,
        nr_bins: int = -1,
        return_loss: bool = True,
        return_raw_accuracy: bool = True,
        device: str = "cpu",
    ) -> dict[str, Any]:
        """Evaluates the last train config's model on the dataset held under ``dataset_key``
        (PySyft 0.2.9's ``worker.evaluate``): a dict with ``nr_predictions`` and, as asked,
        ``loss`` (mean over the samples), ``nr_correct_predictions``, ``histogram_predictions``
        and ``histogram_target`` (``nr_bins`` counts of classes 0..nr_bins-1)."""
        if device != "cpu":
            raise ValueError("workers evaluate on the CPU here (device='cpu')")
        if return_histograms and nr_bins < 1:
            raise ValueError("return_histograms=True needs nr_bins >= 1 (e.g. the number of classes)")
        msg = Evaluate(self._config_id(), str(dataset_key), bool(return_histograms), int(max(nr_bins, 0)),
                       bool(return_loss), bool(return_raw_accuracy))
        result = local_worker._send(self, msg)
        if not isinstance(result, dict):
            raise TypeError(f"worker {self.id} answered evaluate with a {type(result).__name__}, not a dict")
        return result

    def remove_dataset(self, key: str) -> None:
        """Forgets the dataset held under ``key``."""
        self.datasets.pop(key, None)

    def load_data(self, data: "Iterable[torch.Tensor]") -> None:
        """Stores tensors on this worker, each with its tags and description (nothing here owns
        them: they stay until the worker forgets them, like the data sets of ``sy.create_sandbox``)."""
        for t in data:
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"a worker's data are tensors, got {type(t).__name__}")
            oid = new_id()
            local_worker._send(self, Store(oid, t.detach()))
            tags, description = tensor_meta(t)
            if tags or description is not None:
                local_worker._send(self, Describe(oid, tags, description))

    # ------------------------------------------------------------------ tags and search

    def _search_objects(self, query: "list[str]") -> list[tuple[int, Any]]:
        """The stored tensors matching every query item: a tag, a substring of the description,
        or the object's id (PySyft's rule)."""
        found = []
        for key, obj in list(self._objects.items()):
            if not isinstance(obj, (torch.Tensor, PointerTensor)) and type(obj).__name__ not in _SEARCHABLE:
                continue
            tags, description = tensor_meta(obj)
            if all(q in tags or (description is not None and q in description) or q == str(key) for q in query):
                found.append((key, obj))
        return found

    def search(self, query: "str | Iterable[str]", *more: str) -> list[Any]:
        """Pointers to the tensors on this worker that match every item of ``query`` (tags such
        as ``"#digits"``, words of a description, ids), in storage order. The pointers do not
        own the data: dropping them deletes nothing (``.get()`` still moves the tensor here)."""
        return local_worker.request_search(_query(query, more), location=self)

    def request_search(self, query: "str | Iterable[str]", location: "BaseWorker") -> list[Any]:
        """Asks ``location`` for the tensors (and registered objects, such as protocols) matching
        ``query`` (see :meth:`search`); the pointers are owned by this worker."""
        found = self._send(location, Search(_query(query, ())))
        out: list[Any] = []
        for desc, tags, description in found:
            if isinstance(desc, tuple):  # (type name, id) of a registered searchable object
                kind, obj_id = desc
                if kind not in _SEARCHABLE:
                    raise UnsupportedOperationError(f"worker {location.id} found an object of unknown kind {kind!r}")
                out.append(_SEARCHABLE[kind](self, location, int(obj_id)))
                continue
            ptr = PointerTensor(
                self, location, desc.id, desc.shape, desc.dtype, desc.requires_grad, garbage_collect_data=False
            )
            ptr.tags = set(tags)
            ptr.description = description
            out.append(ptr)
        return out

    def clear_objects(self) -> "BaseWorker":
        """Forgets every stored object (pointers it held release their remote data). Returns self."""
        with self._lock:
            self._objects.clear()
        self.flush_gc()
        return self

    def unlocked(self) -> Any:
        """Context manager: the object store's lock, if this thread holds it (a request
        handler does), is released for the block. Wrap every network wait in it, so that
        a stalled peer holds up only the request waiting for it; objects looked up before
        may be changed or deleted by other requests meanwhile."""
        return self._lock.released()

    def get_worker(self, worker_id: str) -> "BaseWorker":
        """The known worker with this id (raises LookupError naming it if unknown)."""
        try:
            return self._known_workers[worker_id]
        except KeyError:
            raise LookupError(f"worker {self.id} does not know a worker with id {worker_id!r}") from None

    def _get_obj(self, obj_id: int) -> Any:
        try:
            return self._objects[obj_id]
        except KeyError:
            dest = self._moved.get(obj_id)
            where = f" (it was moved to {dest}; use the pointer returned by .move())" if dest else ""
            raise ObjectNotFoundError(f"object {obj_id} is not on worker {self.id}{where}") from None

    def _store(self, obj_id: int, obj: Any) -> None:
        if obj_id in self._objects:
            raise ValueError(f"object id {obj_id} is already in use on worker {self.id}")
        self._objects[obj_id] = obj

    def _forget(self, obj_id: int, moved_to: "str | None" = None) -> Any:
        obj = self._objects.pop(obj_id, None)
        if moved_to is not None:
            self._moved[obj_id] = moved_to
            if len(self._moved) > _MOVED_MEMORY:
                self._moved.popitem(last=False)
        return obj

    def _pointer_from_desc(self, desc: PointerDesc) -> PointerTensor:
        return PointerTensor(
            self, self.get_worker(desc.location), desc.id, desc.shape, desc.dtype, desc.requires_grad
        )

    # ------------------------------------------------------------------ client side

    def _deliver(self, data: bytes) -> bytes:
        """Transport: hands an encoded request to this worker and returns the encoded reply."""
        raise NotImplementedError(f"{type(self).__name__} cannot receive messages")

    def _encode_request(self, env: Envelope) -> Any:
        """Transport: encodes a request for :meth:`_deliver`/:meth:`_post` (a socket worker
        returns pieces, :func:`serde.encode_parts`, so large tensors are not copied)."""
        return serde.encode(env)

    def _post(self, data: bytes, sender: "BaseWorker | None" = None, deletes: "list[int] | None" = None) -> bool:
        """Transport: sends an encoded request without waiting for its reply, if this
        transport can (a socket worker reports a failure with its next reply). Returns
        False when it cannot; the caller then uses :meth:`_deliver`. ``sender``'s
        ``deletes`` ride on the request: a socket worker keeps them, from the moment they
        are sent, until the worker confirms it ran that far, and queues them again on
        ``sender`` if the link breaks first."""
        return False

    def _send(self, location: "BaseWorker", body: Any, post: bool = False) -> Any:
        """Sends request ``body`` to ``location`` (with this worker's pending deletions) and returns the reply value.

        Requests whose reply is always None and whose effects stay on ``location``
        (``Store``, ``SetAttr``, deletions alone), and any request with ``post=True`` (a
        ``Command`` whose result the caller described itself, see
        ``pointers.remote_call``), are posted without waiting where the transport allows
        it (then None is returned); the worker runs them in order before any later request.
        """
        deletes = self._take_deletes(location)
        data = location._encode_request(Envelope(self.id, deletes, body))
        linked = getattr(location, "_conn", None) is not None  # a SocketWorker with a live connection
        try:
            with self.unlocked():  # a worker's request to another: other clients go on meanwhile
                if (post or body is None or type(body) in _NO_REPLY) and location._post(data, self, deletes):
                    return None
                raw = location._deliver(data)
        except TransportError:
            # The link broke under this request, so its deletions may never have arrived: queue
            # them again for the next request (after a reconnect; deleting twice is harmless).
            # Not when connecting failed: a worker that is gone would keep them queued forever.
            if deletes and linked:
                self._queue_deletes(location, deletes)
            raise
        reply = serde.decode(raw)
        if isinstance(reply, Ok):
            return reply.value
        if isinstance(reply, Err):
            raise reply.exception(location.id)
        raise SerializationError(f"worker {location.id} sent a reply of type {type(reply).__name__}")

    def _queue_delete(self, location: "BaseWorker", obj_id: int) -> None:
        # Called from PointerTensor.__del__: only queue (no I/O from a finalizer).
        self._queue_deletes(location, (obj_id,))

    def _queue_deletes(self, location: "BaseWorker", ids: "Iterable[int]") -> None:
        with self._gc_lock:
            self._gc_pending.setdefault(location, []).extend(ids)

    def _take_deletes(self, location: "BaseWorker") -> list[int]:
        """Removes and returns the deletions queued for ``location`` (they go out now)."""
        with self._gc_lock:
            return self._gc_pending.pop(location, None) or []

    def _gc_locations(self) -> "list[BaseWorker]":
        """The locations with deletions queued (empty entries are dropped on the way)."""
        with self._gc_lock:
            for location in [loc for loc, ids in self._gc_pending.items() if not ids]:
                del self._gc_pending[location]
            return list(self._gc_pending)

    def is_linked(self) -> bool:
        """Whether a request to this worker goes out without opening a connection first: always
        for in-process and relayed workers; a :class:`SocketWorker` while its connection is open."""
        return True

    def flush_gc(self) -> None:
        """Sends the deletions queued by dead pointers now (otherwise they ride on the next message),
        to every location this worker is linked to. A location with no open connection is not dialled
        for them: dialling a stopped or stalled worker could hold the caller for the whole connect
        timeout (this runs inside request handlers too). Its deletions wait for the next request to
        it, and a worker never reached again frees this client's objects when its grace period ends."""
        for location in self._gc_locations():
            # Workers are equal by id, so the key may be an older object for this id (a
            # restarted worker, reached through a new SocketWorker): go through the one
            # known now, as the next request to that id would, not to the old address.
            target = self._known_workers.get(location.id, location)
            if not target.is_linked():
                continue
            try:
                self._send(target, None)
            except TransportError:
                # Unreachable (gone, or another deployment's worker of that name): its objects
                # die with it or after its grace period; deletions never fail the caller.
                self._take_deletes(location)
                self._take_deletes(target)

    # ------------------------------------------------------------------ server side

    def handle(self, data: "bytes | memoryview") -> bytes:
        """Answers one encoded request; never raises (errors become an :class:`Err` reply)."""
        try:
            with limits.using(self.memory_budget):
                env = serde.decode(data)
            if not isinstance(env, Envelope):
                raise SerializationError(f"expected an Envelope, got {type(env).__name__}")
        except Exception as e:
            return _error_reply(type(e).__name__, str(e))
        reply: bytes = self.handle_envelope(env)
        return reply

    def handle_envelope(self, env: Envelope, encode: Callable[[Any], Any] = serde.encode) -> Any:
        """Answers one decoded request (see :meth:`handle`); never raises.

        ``encode`` encodes a successful reply (a socket server passes
        :func:`serde.encode_parts`, so a large ``.get()`` is sent without a copy); errors
        are always ``bytes``."""
        try:
            with self._lock, limits.using(self.memory_budget):
                for obj_id in env.deletes:
                    self._forget(obj_id)
                value, commit = self._dispatch(env.body)
                reply = encode(Ok(value))
                if commit is not None:
                    commit()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # the worker keeps serving whatever the request did
            # BaseException: a Rust panic arrives as pyo3's PanicException, which is not an
            # Exception; it becomes an error answer like any other failure.
            if isinstance(e, RemoteError) and e.remote_type:
                err_type, msg = e.remote_type, str(e)
            else:
                err_type, msg = type(e).__name__, str(e)
            reply = _error_reply(err_type, msg)
        if self._gc_pending:  # pointers this worker held died (e.g. deleted above): cascade now
            try:
                self.flush_gc()
            except Exception:
                pass
        return reply

    def _dispatch(self, body: Any) -> tuple[Any, "Callable[[], None] | None"]:
        if body is None:
            return None, None
        if isinstance(body, Command):
            return self._run_command(body), None
        if isinstance(body, Store):
            obj = body.obj
            self._store(body.obj_id, self._pointer_from_desc(obj) if isinstance(obj, PointerDesc) else obj)
            return None, None
        if isinstance(body, Fetch):
            obj = self._get_obj(body.obj_id)
            if isinstance(obj, torch.Tensor) and not obj.is_contiguous():  # encoding copies it (e.g. an expanded view)
                self.memory_budget.check(obj.nelement() * obj.element_size(), f"sending object {body.obj_id} of shape {tuple(obj.shape)}")
            value = obj._desc() if isinstance(obj, PointerTensor) else obj
            if not body.remove:
                return value, None

            def commit() -> None:  # only once the reply is encoded: a failed get loses nothing
                self._forget(body.obj_id)
                if isinstance(obj, PointerTensor):
                    obj._consume("it was retrieved with .get()")

            return value, commit
        if isinstance(body, GetAttr):
            getter = _GETTERS.get(body.name)
            if getter is None:
                raise UnsupportedOperationError(f"attribute {body.name!r} cannot be read remotely")
            obj = self._get_obj(body.obj_id)
            return self._register(getter(obj), body.return_id, {body.obj_id: obj}), None
        if isinstance(body, SetAttr):
            setter = _SETTERS.get(body.name)
            if setter is None:
                raise UnsupportedOperationError(f"attribute {body.name!r} cannot be set remotely")
            obj = self._get_obj(body.obj_id)
            setter(obj, self._resolve(body.value, {}))
            return None, None
        if isinstance(body, Move):
            self._move(body)
            return None, None
        if isinstance(body, Describe):
            obj = self._get_obj(body.obj_id)
            if not isinstance(obj, (torch.Tensor, PointerTensor)):
                raise TypeError(f"object {body.obj_id} on worker {self.id} cannot carry tags")
            set_tensor_meta(obj, body.tags, body.description)
            return None, None
        if isinstance(body, Search):
            matches: list[tuple[Any, list[str], "str | None"]] = []
            for key, obj in self._search_objects(body.query):
                tags, description = tensor_meta(obj)
                if not isinstance(obj, (torch.Tensor, PointerTensor)):
                    matches.append(((type(obj).__name__, key), sorted(tags), description))
                    continue
                if isinstance(obj, PointerTensor):
                    desc = PointerDesc(self.id, key, obj._shape, obj.dtype, obj.requires_grad)
                else:
                    desc = PointerDesc(self.id, key, obj.shape, obj.dtype, obj.requires_grad)
                matches.append((desc, sorted(tags), description))
            return tuple(matches), None
        if isinstance(body, RemoteGet):
            obj = self._get_obj(body.obj_id)
            if not isinstance(obj, PointerTensor):
                raise TypeError(f"object {body.obj_id} on worker {self.id} is not a pointer; nothing to fetch")
            self._objects[body.obj_id] = obj.get()
            return None, None
        handler = _HANDLERS.get(type(body))
        if handler is not None:
            return handler(self, body)
        raise SerializationError(f"worker {self.id} cannot handle a {type(body).__name__} request")

    def _move(self, msg: Move) -> None:
        obj = self._get_obj(msg.obj_id)
        dest = self.get_worker(msg.dest)
        payload = obj._desc() if isinstance(obj, PointerTensor) else obj
        self._send(dest, Store(msg.new_id, payload))
        if isinstance(obj, PointerTensor):
            obj._consume(f"it was sent to {dest.id}")  # dest's pointer owns the data now
        if msg.keep_pointer:
            self._objects[msg.obj_id] = PointerTensor(
                self, dest, msg.new_id, obj.shape, obj.dtype, bool(obj.requires_grad)
            )
        else:
            self._forget(msg.obj_id, moved_to=dest.id)

    def _resolve(self, v: Any, refs: dict[int, Any]) -> Any:
        if isinstance(v, ObjRef):
            obj = self._get_obj(v.id)
            refs[v.id] = obj
            return obj
        tv = type(v)
        if tv is tuple or tv is list:
            return tv(self._resolve(x, refs) for x in v)
        if tv is dict:
            return {k: self._resolve(x, refs) for k, x in v.items()}
        if isinstance(v, PointerDesc):
            raise SerializationError("a pointer can only be sent in a Store request")
        return v

    def _run_command(self, cmd: Command) -> Any:
        fn = allowlist.OPS.get(cmd.op)
        if fn is None:
            raise UnsupportedOperationError(f"operation {cmd.op!r} is not in the allowlist of worker {self.id}")
        refs: dict[int, Any] = {}
        args = self._resolve(cmd.args, refs)
        kwargs = self._resolve(cmd.kwargs, refs)
        with torch.set_grad_enabled(cmd.grad_enabled):
            if any(isinstance(o, PointerTensor) for o in refs.values()):
                # A pointer chain: run the same operation where those pointers point.
                from syft_mpc.remote.pointers import remote_call

                result = remote_call(cmd.op, args, kwargs)
            else:
                self._check_memory(cmd.op, fn, args, kwargs)
                result = fn(*args, **kwargs)
        return self._register(result, cmd.return_id, refs)

    def _check_memory(self, op: str, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        """Refuses (ResourceLimitError) an op whose new tensors would not fit this worker's
        memory budget, before it runs. Every op: its operands' broadcast shape (an element-wise
        op on an expanded view or on ``(n, 1)`` and ``(1, n)`` makes that much). Ops whose
        output can outgrow their operands in other ways (:data:`_AMPLIFYING`): a dry run on
        meta tensors. The few ops whose output size depends on the data: from that data."""
        need: "int | None" = None
        if op in _PRODUCTS:
            need = _product_bytes(op, args)
        elif op in _CONCATS:  # the result holds each listed operand once (one may be listed many times)
            sizes: list[tuple[tuple[int, ...], int]] = []
            _logical_sizes(args[:1], sizes)
            need = sum(limits.nbytes(sh, item, op) for sh, item in sizes)
        elif op in _DATA_DEPENDENT:
            need = _estimate_data_dependent(op, args, kwargs)
        elif op in _AMPLIFYING:
            need = limits.meta_output_bytes(fn, args, kwargs)
        if need is None:
            need = _broadcast_bytes(args, kwargs)
        if need:
            self.memory_budget.check(need, _describe(op, args))

    def _register(self, result: Any, return_id: int, refs: dict[int, Any]) -> Any:
        """Stores tensor results and describes them; plain values are returned as they are."""
        if isinstance(result, (torch.Tensor, PointerTensor)):
            if isinstance(result, RemoteParameter):
                raise UnsupportedOperationError("a worker cannot store a remote parameter")
            for oid, obj in refs.items():
                if obj is result:  # in-place op: the caller keeps its pointer
                    return ObjRef(oid)
            self._store(return_id, result)
            if isinstance(result, PointerTensor):
                return PointerDesc(self.id, return_id, result._shape, result.dtype, result.requires_grad)
            return PointerDesc(self.id, return_id, result.shape, result.dtype, result.requires_grad)
        if result is None or isinstance(result, _PLAIN_RESULTS):
            return result
        if isinstance(result, (tuple, list)):
            return tuple(self._register(r, new_id(), refs) for r in result)
        raise UnsupportedOperationError(f"a result of type {type(result).__name__} cannot be returned by a worker")


def tensor_meta(obj: Any) -> tuple[list[str], "str | None"]:
    """The tags (sorted) and description of a tensor or pointer (``[]``/None when it has none)."""
    tags = getattr(obj, "tags", None) or ()
    return sorted(tags), getattr(obj, "description", None)


def set_tensor_meta(obj: Any, tags: "Iterable[str]", description: "str | None") -> None:
    """Adds ``tags`` to ``obj``'s tags and sets its description (None: keeps it)."""
    obj.tags = set(getattr(obj, "tags", None) or ()) | set(tags)
    if description is not None:
        obj.description = description


def _query(query: "str | Iterable[str]", more: "Iterable[str]") -> list[str]:
    items = [query] if isinstance(query, str) else list(query)
    items += list(more)
    if not items:
        raise ValueError("search() needs at least one tag, word or id to look for")
    for q in items:
        if not isinstance(q, str):
            raise TypeError(f"search() looks for strings (tags such as '#digits', words, ids), got {type(q).__name__}")
    return items


class VirtualWorker(BaseWorker):
    """A worker in this process. Messages to it still go through the codec (:mod:`syft_mpc.remote.serde`).

        >>> import torch, syft_mpc as sy
        >>> hook = sy.TorchHook(torch)
        >>> alice = sy.VirtualWorker(hook, id="alice")
        >>> ptr = torch.ones(2).send(alice)
        >>> alice._objects[ptr.id_at_location]
        tensor([1., 1.])
    """

    def _deliver(self, data: bytes) -> bytes:
        return self.handle(data)


local_worker = VirtualWorker(None, id="me")
"""The driver: the worker that owns the pointers made in this process (id ``"me"``)."""
