"""MPC sessions among workers: the data plane behind shared tensors.

Worker side
    A share-holding worker keeps one :class:`~syft_mpc.Party` per session it joined
    (``MpcJoin`` -> ``Party.connect`` on TCP); the crypto provider keeps a
    :class:`~syft_mpc.Dealer` serving on a background thread. ``MpcRun`` runs one
    operation of the fixed table :data:`MPC_OPS` on the worker's stored shares
    (``torch.int64`` tensors in ``worker._objects``, read as ring elements of
    Z_2^64); the parties of a session talk to each other directly, in Rust.

Driver side
    :class:`Group` is a set of share holders plus a crypto provider with a live
    session (created on first use, re-created after a failure). :func:`fan_out`
    sends one request to each of several workers concurrently and collects the
    replies: a Party method blocks until every party has joined the step, so the
    driver must never deliver them one after the other. When every holder is a socket
    worker, :meth:`Group.run` instead posts each MpcRun without waiting (the driver infers
    the result shapes with :func:`infer_shapes`) and waits only in :meth:`Group.flush`
    (reveals, stats, ops it cannot describe, a bound on the backlog).

Everything travels as typed messages through the worker codec (no code, no names); an
operation name is a key of :data:`MPC_OPS`, never a name looked up dynamically.

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob, alice, james = (sy.VirtualWorker(hook, id=i) for i in ("bob", "alice", "james"))
    >>> x = torch.tensor([1, -2, 3]).share(bob, alice, crypto_provider=james)
    >>> (x * x).get()
    tensor([1, 4, 9])
"""

from __future__ import annotations

import math
import secrets
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from syft_mpc import _native
from syft_mpc.errors import ProtocolError, TransportError, UnsupportedOperationError
from syft_mpc.messages import Envelope, Err, MpcJoin, MpcLeave, MpcPort, MpcRun, MpcShareOut, MpcStats, Ok, Store, new_id
from syft_mpc.serde import ObjRef
from syft_mpc.workers import register_handler

if TYPE_CHECKING:
    from syft_mpc.workers import BaseWorker

__all__ = ["Group", "MPC_OPS", "fan_out", "group_of", "close_all_sessions", "infer_shapes"]

DEFAULT_TIMEOUT_S = 30.0
"""Bound on every wait of a party for a peer or the dealer (join and each protocol step)."""

# ============================================================================ worker side


class _PartyState:
    __slots__ = ("party", "id", "n", "owner")

    def __init__(self, party: Any, pid: int, n: int, owner: "str | None" = None) -> None:
        self.party, self.id, self.n = party, pid, n
        self.owner = owner  # the client (hello uid) whose MpcJoin opened it, on a worker server


def _state(worker: "BaseWorker") -> dict[str, Any]:
    st = worker.__dict__.get("_mpc_sessions")
    if st is None:
        st = worker.__dict__.setdefault("_mpc_sessions", {})
    return st


def _handle_join(worker: "BaseWorker", msg: MpcJoin) -> tuple[Any, None]:
    st = _state(worker)
    if msg.session in st:
        raise ProtocolError(f"worker {worker.id} already joined MPC session {msg.session!r}")
    n = len(msg.addrs)
    # A worker started with a TLS certificate (server.WorkerServer) runs its MPC connections
    # over TLS: as the dealer it only accepts; as a party it also connects (and needs the CA).
    tls: "dict[str, str | None]" = getattr(worker, "mpc_tls", None) or {}
    if msg.party_id < 0:
        dealer = _native.Dealer.connect(
            n,
            msg.dealer_addr,
            msg.token,
            session=msg.session,
            timeout_s=msg.timeout_s,
            tls_cert=tls.get("tls_cert"),
            tls_key=tls.get("tls_key"),
        )

        def serve() -> None:
            try:
                dealer.serve()
            except Exception:  # the parties report the failure; the dealer just stops
                pass
            finally:
                dealer.close()
                _state(worker).pop(msg.session, None)

        st[msg.session] = dealer
        threading.Thread(target=serve, name=f"dealer-{worker.id}-{msg.session}", daemon=True).start()
        return None, None
    party = _native.Party.connect(
        msg.party_id, list(msg.addrs), msg.dealer_addr, msg.token, session=msg.session, timeout_s=msg.timeout_s, **tls
    )
    st[msg.session] = _PartyState(party, msg.party_id, n, getattr(worker, "current_client", None))
    return None, None


def close_sessions_of(worker: "BaseWorker", owner: str) -> int:
    """Aborts the parties that client ``owner`` opened on ``worker`` (its driver went away for
    good: nobody will drive or close them). Their peers fail at once, and a dealer stops when
    its sessions' last party goes. Call with the worker's lock held. Returns how many."""
    st = _state(worker)
    mine = [k for k, v in st.items() if isinstance(v, _PartyState) and v.owner == owner]
    for k in mine:
        st.pop(k).party.abort()
    return len(mine)


def _handle_leave(worker: "BaseWorker", msg: MpcLeave) -> tuple[Any, None]:
    obj = _state(worker).pop(msg.session, None)
    if isinstance(obj, _PartyState):
        obj.party.close()
    elif obj is not None:
        # A dealer's close waits until its serve() returns, i.e. until every party has left; one
        # may be stuck (a stalled peer) until its own timeout. The leave must not wait for that:
        # this worker's requests, and the driver's recovery, go on meanwhile.
        threading.Thread(target=obj.close, name=f"dealer-close-{msg.session}", daemon=True).start()
    return None, None


def _handle_stats(worker: "BaseWorker", msg: MpcStats) -> tuple[Any, None]:
    st = _state(worker).get(msg.session)
    # A dealer is busy in serve() for the whole session; its traffic shows in the parties'
    # dealer_bytes_received.
    return (dict(st.party.stats()) if isinstance(st, _PartyState) else {}), None


def _u64(t: torch.Tensor) -> np.ndarray:
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int64:
        raise TypeError(f"a share must be an int64 tensor, got {type(t).__name__} {getattr(t, 'dtype', '')}")
    return t.detach().contiguous().numpy().view(np.uint64)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int64))


# ---------------------------------------------------------------------------- the op table
# Each op: fn(ctx, *args, **kwargs) -> tensor or tuple of tensors (shares, int64).
# ``interactive`` ops call the Party and must be delivered to all parties concurrently.


class _Ctx:
    __slots__ = ("party", "id", "n")

    def __init__(self, party: Any, pid: int, n: int) -> None:
        self.party, self.id, self.n = party, pid, n


MPC_OPS: dict[str, Callable[..., Any]] = {}
"""Operation name -> worker-side function on shares. The only things MpcRun runs."""
INTERACTIVE: set[str] = set()


def _op(name: str, interactive: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        MPC_OPS[name] = fn
        if interactive:
            INTERACTIVE.add(name)
        return fn

    return deco


def _trunc(ctx: _Ctx, z: np.ndarray, divisor: int, local: bool) -> np.ndarray:
    if divisor == 1:
        return z
    if local:
        bits = divisor.bit_length() - 1
        return ctx.party.truncate_local(z, bits)
    return ctx.party.truncate(z, divisor)


def _product(ctx: _Ctx, run: Callable[..., np.ndarray], divisor: int, local: bool) -> np.ndarray:
    """A Beaver product truncated by ``divisor``: locally afterwards, or by the dealer-assisted
    protocol fused with the product (``run(divisor=...)``), so that the dealer prepares the
    truncation pair while the product runs."""
    if local:
        return _trunc(ctx, run(), divisor, local)
    return run(divisor=divisor)


@_op("from_public")
def _from_public(ctx: _Ctx, c: torch.Tensor) -> torch.Tensor:
    """A sharing of a public ring tensor without communication: party 0 holds it, the rest 0."""
    return c.clone() if ctx.id == 0 else torch.zeros_like(c)


@_op("add_public")
def _add_public(ctx: _Ctx, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return x + c if ctx.id == 0 else x + torch.zeros_like(c)


@_op("public_sub")
def _public_sub(ctx: _Ctx, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return c - x if ctx.id == 0 else torch.zeros_like(c) - x


@_op("mul_public")
def _mul_public(ctx: _Ctx, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return x * c


def _bmm_shapes(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Brings torch.matmul operands to the 2-d or equal-batch 3-d form of the ring kernels."""
    squeeze_a = a.dim() == 1
    squeeze_b = b.dim() == 1
    if squeeze_a:
        a = a.unsqueeze(0)
    if squeeze_b:
        b = b.unsqueeze(1)
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if b.dim() == 2 and len(batch) > 0:  # fold a's batch into rows
        a2 = a.reshape(-1, k)
        out_shape = (*batch, m, n)
        a3, b3 = a2, b
    elif len(batch) == 0:
        a3, b3, out_shape = a, b, (m, n)
    else:
        a3 = a.expand(*batch, m, k).reshape(-1, m, k)
        b3 = b.expand(*batch, k, n).reshape(-1, k, n)
        out_shape = (*batch, m, n)

    def finish(z: torch.Tensor) -> torch.Tensor:
        z = z.reshape(out_shape)
        if squeeze_a:
            z = z.squeeze(-2)
        if squeeze_b:
            z = z.squeeze(-1)
        return z

    return a3, b3, finish


@_op("matmul_public")
def _matmul_public(ctx: _Ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a3, b3, finish = _bmm_shapes(a, b)
    return finish(_t(_native.ring_matmul(_u64(a3), _u64(b3))))


@_op("conv2d_public")
def _conv2d_public(
    ctx: _Ctx, x: torch.Tensor, w: torch.Tensor, stride: Any = (1, 1), padding: Any = (0, 0), dilation: Any = (1, 1), groups: int = 1
) -> torch.Tensor:
    return _t(_native.ring_conv2d(_u64(x), _u64(w), tuple(stride), tuple(padding), tuple(dilation), groups))


@_op("mul", interactive=True)
def _mul(ctx: _Ctx, x: torch.Tensor, y: torch.Tensor, divisor: int = 1, local: bool = False) -> torch.Tensor:
    shape = torch.broadcast_shapes(x.shape, y.shape)
    xs, ys = _u64(x.expand(shape)), _u64(y.expand(shape))
    return _t(_product(ctx, lambda **kw: ctx.party.mul(xs, ys, **kw), divisor, local))


@_op("matmul", interactive=True)
def _matmul(ctx: _Ctx, a: torch.Tensor, b: torch.Tensor, divisor: int = 1, local: bool = False) -> torch.Tensor:
    a3, b3, finish = _bmm_shapes(a, b)
    xs, ys = _u64(a3), _u64(b3)
    return finish(_t(_product(ctx, lambda **kw: ctx.party.matmul(xs, ys, **kw), divisor, local)))


@_op("conv2d", interactive=True)
def _conv2d(
    ctx: _Ctx,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: Any = (1, 1),
    padding: Any = (0, 0),
    dilation: Any = (1, 1),
    groups: int = 1,
    divisor: int = 1,
    local: bool = False,
) -> torch.Tensor:
    xs, ws, geometry = _u64(x), _u64(w), (tuple(stride), tuple(padding), tuple(dilation), groups)
    return _t(_product(ctx, lambda **kw: ctx.party.conv2d(xs, ws, *geometry, **kw), divisor, local))


@_op("truncate", interactive=True)
def _truncate(ctx: _Ctx, x: torch.Tensor, divisor: int, local: bool = False) -> torch.Tensor:
    return _t(_trunc(ctx, _u64(x), divisor, local)).reshape(x.shape)


@_op("ltz", interactive=True)
def _ltz(ctx: _Ctx, x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """Shares of 1{x < 0}, multiplied by ``times`` (the fixed-point encoding of 1)."""
    b = _t(ctx.party.ltz(_u64(x))).reshape(x.shape)
    return b * times if times != 1 else b


@_op("ltz_times", interactive=True)
def _ltz_times(ctx: _Ctx, x: torch.Tensor, payload: torch.Tensor) -> torch.Tensor:
    """payload·1{x < 0} for a payload of shape ``(k, *x.shape)``, in the comparison's rounds."""
    return _t(ctx.party.ltz_times(_u64(x), _u64(payload))).reshape(payload.shape)


@_op("below_times", interactive=True)
def _below_times(ctx: _Ctx, x: torch.Tensor, thresholds: list, payload: torch.Tensor) -> torch.Tensor:
    """payload·1{x < t} for public ring thresholds t and a payload of shape ``(k, len(thresholds), *x.shape)``,
    in one comparison's rounds (one opening and one set of tables for every threshold)."""
    t = [int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in thresholds]
    return _t(ctx.party.below_times(_u64(x), t, _u64(payload))).reshape(payload.shape)


@_op("fourier", interactive=True)
def _fourier(ctx: _Ctx, x: torch.Tensor, multiplier: int, cos_coef: list, sin_coef: list, divisor: int) -> torch.Tensor:
    """Σ_k a_k·cos(kθ) + b_k·sin(kθ) at ``2**29 / divisor`` for θ = 2π·(x·multiplier mod 2^32)/2^32, in two rounds."""
    return _t(ctx.party.fourier(_u64(x), multiplier, cos_coef, sin_coef, divisor)).reshape(x.shape)


@_op("relu_mask", interactive=True)
def _relu_mask(ctx: _Ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relu(x), 1{x >= 0}) in ReLU's rounds: the (unscaled) mask is kept for the backward pass."""
    y, pos = ctx.party.relu_mask(_u64(x))
    return _t(y).reshape(x.shape), _t(pos).reshape(x.shape)


@_op("relu", interactive=True)
def _relu(ctx: _Ctx, x: torch.Tensor) -> torch.Tensor:
    return _t(ctx.party.relu(_u64(x))).reshape(x.shape)


@_op("select_mul", interactive=True)
def _select_mul(ctx: _Ctx, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """b·x + (1−b)·y = y + b·(x − y) for an integer bit sharing b (unscaled)."""
    shape = torch.broadcast_shapes(b.shape, x.shape, y.shape)
    d = (x - y).expand(shape)
    return y.expand(shape) + _t(ctx.party.mul(_u64(b.expand(shape)), _u64(d))).reshape(shape)


# Structural / linear aten ops applied to each share as they are (valid on ring shares:
# they move, copy, add or drop elements, so they commute with reconstruction).
_ATEN_LINEAR = {
    "view": torch.ops.aten.view.default,
    "_unsafe_view": torch.ops.aten._unsafe_view.default,
    "reshape": torch.ops.aten.reshape.default,
    "permute": torch.ops.aten.permute.default,
    "transpose": torch.ops.aten.transpose.int,
    "t": torch.ops.aten.t.default,
    "expand": torch.ops.aten.expand.default,
    "slice": torch.ops.aten.slice.Tensor,
    "narrow": torch.ops.aten.narrow.default,
    "tril": torch.ops.aten.tril.default,
    "triu": torch.ops.aten.triu.default,
    "movedim": torch.ops.aten.movedim.int,
    "select": torch.ops.aten.select.int,
    "index": torch.ops.aten.index.Tensor,
    "index_select": torch.ops.aten.index_select.default,
    "gather": torch.ops.aten.gather.default,
    "cat": torch.ops.aten.cat.default,
    "stack": torch.ops.aten.stack.default,
    "squeeze": torch.ops.aten.squeeze.default,
    "squeeze_dim": torch.ops.aten.squeeze.dim,
    "squeeze_dims": torch.ops.aten.squeeze.dims,
    "unsqueeze": torch.ops.aten.unsqueeze.default,
    "clone": torch.ops.aten.clone.default,
    "neg": torch.ops.aten.neg.default,
    "add": torch.ops.aten.add.Tensor,
    "sub": torch.ops.aten.sub.Tensor,
    "sum": torch.ops.aten.sum.default,
    "sum_dim": torch.ops.aten.sum.dim_IntList,
    "flip": torch.ops.aten.flip.default,
    "roll": torch.ops.aten.roll.default,
    "repeat": torch.ops.aten.repeat.default,
    "pad": torch.ops.aten.constant_pad_nd.default,
    "split": torch.ops.aten.split.Tensor,
    "split_with_sizes": torch.ops.aten.split_with_sizes.default,
    "unbind": torch.ops.aten.unbind.int,
    "diagonal": torch.ops.aten.diagonal.default,
    "unfold": torch.ops.aten.unfold.default,
    "flatten": torch.ops.aten.flatten.using_ints,
    "scatter_add": torch.ops.aten.scatter_add.default,
    "index_put": torch.ops.aten.index_put.default,
    "select_backward": torch.ops.aten.select_backward.default,
    "slice_backward": torch.ops.aten.slice_backward.default,
    "im2col": torch.ops.aten.im2col.default,
    "col2im": torch.ops.aten.col2im.default,
}
for _name, _fn in _ATEN_LINEAR.items():
    MPC_OPS["aten." + _name] = (lambda f: lambda ctx, *a, **k: f(*a, **k))(_fn)
ATEN_LINEAR_NAMES: dict[Any, str] = {fn: "aten." + n for n, fn in _ATEN_LINEAR.items()}

# Result shapes of each op, computed by the driver without a reply (so it can post MpcRuns
# without waiting for them): the same rules the worker-side functions above follow.
_ELEMENTWISE = frozenset(
    {
        "from_public", "add_public", "public_sub", "mul_public", "mul", "truncate", "ltz", "ltz_times", "below_times", "fourier",
        "relu", "relu_mask", "select_mul",
    }
)


def _as_meta(t: Any, dtype: "torch.dtype | None" = None) -> torch.Tensor:
    return torch.empty(t.shape, dtype=dtype or t.dtype, device="meta")


def infer_shapes(op: str, args: tuple[Any, ...], kwargs: dict[str, Any], n_out: int) -> "list[tuple[int, ...]] | None":
    """The shapes of the results of MPC op ``op`` on arguments whose shares are given as meta
    tensors (``int64``, ``device="meta"``; public tensors as they are), or None when the driver
    cannot tell (then it waits for the holders' reply). Raises nothing."""
    try:
        if op in _ELEMENTWISE:
            shape = torch.broadcast_shapes(*(a.shape for a in args if isinstance(a, torch.Tensor)))
            shapes = [tuple(shape)] * n_out
        elif op in ("matmul", "matmul_public"):
            shapes = [tuple(torch.matmul(_as_meta(args[0]), _as_meta(args[1])).shape)]
        elif op in ("conv2d", "conv2d_public"):
            kw = {k: kwargs[k] for k in ("stride", "padding", "dilation", "groups") if k in kwargs}
            x, w = (_as_meta(a, torch.float32) for a in args[:2])
            shapes = [tuple(torch.nn.functional.conv2d(x, w, None, *args[2:6], **kw).shape)]
        elif op.startswith("aten.") and op[5:] in _ATEN_LINEAR:
            r = _ATEN_LINEAR[op[5:]](*args, **kwargs)
            shapes = [tuple(t.shape) for t in (r if isinstance(r, (list, tuple)) else (r,))]
        else:
            return None
    except Exception:  # the holders will report it (or it was a case these rules do not cover)
        return None
    return shapes if len(shapes) == n_out else None


def _resolve(worker: "BaseWorker", v: Any) -> Any:
    if isinstance(v, ObjRef):
        return worker._get_obj(v.id)
    tv = type(v)
    if tv is tuple or tv is list:
        return tv(_resolve(worker, x) for x in v)
    if tv is dict:
        return {k: _resolve(worker, x) for k, x in v.items()}
    return v


def _handle_run(worker: "BaseWorker", msg: MpcRun) -> tuple[Any, None]:
    st = _state(worker).get(msg.session)
    if not isinstance(st, _PartyState):
        raise ProtocolError(
            f"worker {worker.id} holds no party of MPC session {msg.session!r} (it was closed or failed); "
            "the driver re-creates the session on the next operation"
        )
    fn = MPC_OPS.get(msg.op)
    if fn is None:
        raise UnsupportedOperationError(f"MPC operation {msg.op!r} is not in syft_mpc.mpc_session.MPC_OPS")
    try:
        args = _resolve(worker, msg.args)
        kwargs = _resolve(worker, msg.kwargs)
        with torch.no_grad():
            out = fn(_Ctx(st.party, st.id, st.n), *args, **kwargs)
    except BaseException:
        if msg.op in INTERACTIVE:
            # Our peers may be waiting for this step: fail them now (PeerDisconnected), not at their timeout.
            st.party.abort()
            _state(worker).pop(msg.session, None)
        raise
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if len(outs) != len(msg.return_ids):
        raise ProtocolError(f"MPC operation {msg.op} made {len(outs)} results for {len(msg.return_ids)} ids")
    shapes = []
    for rid, t in zip(msg.return_ids, outs):
        if t.dtype != torch.int64:
            raise ProtocolError(f"MPC operation {msg.op} produced {t.dtype}, not int64 shares")
        worker._store(rid, t)
        shapes.append(tuple(t.shape))
    return shapes, None


def _store_on(worker: "BaseWorker", dest: "BaseWorker", obj_id: int, t: torch.Tensor) -> None:
    """Stores ``t`` on ``dest`` and waits for its reply (``_deliver``, never a posted ``Store``:
    the driver's next request to ``dest`` travels on another connection and must find the share)."""
    from syft_mpc import serde

    reply = serde.decode(dest._deliver(serde.encode(Envelope(worker.id, [], Store(obj_id, t)))))
    if isinstance(reply, Err):
        raise ProtocolError(f"worker {dest.id} refused a share from {worker.id}: {reply.err_type}: {reply.message}")
    if not isinstance(reply, Ok):
        raise ProtocolError(f"worker {dest.id} sent a reply of type {type(reply).__name__}")


def _handle_share_out(worker: "BaseWorker", msg: MpcShareOut) -> tuple[Any, None]:
    """``ptr.share(...)`` / ``ptr.fix_prec().share(...)``: split a local tensor, send the shares to their holders."""
    from syft_mpc.fixed_precision import encode

    obj = worker._get_obj(msg.obj_id)
    if not isinstance(obj, torch.Tensor):
        raise TypeError(
            f"object {msg.obj_id} on worker {worker.id} is a {type(obj).__name__}; only a plain tensor can be "
            "shared remotely (for a pointer chain, .remote_get() it first)"
        )
    x = obj.detach()
    if msg.precision >= 0:
        enc = encode(x, msg.base, msg.precision)
    else:
        if x.dtype.is_floating_point or x.dtype.is_complex:
            raise TypeError(
                f"a {x.dtype} tensor cannot be shared as it is: encode it first with ptr.fix_precision().share(...)"
            )
        enc = x.to(torch.int64)
    dests = [None if h == worker.id else worker.get_worker(h) for h in msg.holders]  # resolve all before sending any
    parts = _native.share(_u64(enc), len(msg.holders))
    stored: list[Any] = []
    try:
        for dest, p in zip(dests, parts):
            t = torch.from_numpy(p.view(np.int64)).reshape(enc.shape)
            if dest is None:
                worker._store(msg.share_id, t)
            else:
                _store_on(worker, dest, msg.share_id, t)
            stored.append(dest)
    except BaseException:
        for dest in stored:  # no half-shared tensor stays behind
            if dest is None:
                worker._forget(msg.share_id)
            else:
                worker._queue_delete(dest, msg.share_id)
        raise
    return list(enc.shape), None


register_handler(MpcShareOut, _handle_share_out)
register_handler(MpcJoin, _handle_join)
register_handler(MpcRun, _handle_run)
register_handler(MpcLeave, _handle_leave)
register_handler(MpcStats, _handle_stats)


def _handle_port(worker: "BaseWorker", msg: MpcPort) -> tuple[Any, None]:
    try:
        return _free_port(msg.host), None
    except OSError as e:
        raise ValueError(
            f"worker {worker.id} cannot listen on {msg.host} for an MPC session ({e}); the driver reaches it "
            "by that address, so it must be an address of the worker's machine (start the worker with "
            "--host set to an address the driver and the other workers can reach)"
        ) from None


register_handler(MpcPort, _handle_port)

# ============================================================================ driver side

_POOL: "ThreadPoolExecutor | None" = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="syft-fanout")
        return _POOL


def fan_out(
    requests: Sequence[tuple["BaseWorker", Any]],
    timeout_s: float = 4 * DEFAULT_TIMEOUT_S,
    concurrent: bool = True,
    errors_out: "list[BaseException] | None" = None,
) -> list[Any]:
    """Sends ``body`` to each ``worker`` (concurrently unless told otherwise) and returns the replies in order.

    Waits for every reply (each bounded by ``timeout_s``) before raising, so no request
    is still running when this returns. When several fail, the root cause is raised:
    an error that is not a transport error outranks the ``PeerDisconnected`` errors it
    causes in the other parties. ``errors_out``, if given, receives every failure.
    """
    from syft_mpc.workers import local_worker

    if not concurrent or len(requests) == 1:
        return [local_worker._send(w, body) for w, body in requests]
    futs = [_pool().submit(local_worker._send, w, body) for w, body in requests]
    results: list[Any] = []
    errors: list[BaseException] = []
    for (w, _), f in zip(requests, futs):
        try:
            results.append(f.result(timeout=timeout_s))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            # A PeerTimeout from the request is a TimeoutError too: only a future still
            # running timed out here.
            errors.append(e if f.done() else TimeoutError(f"worker {w.id} did not answer within {timeout_s} s"))
    if errors:
        if errors_out is not None:
            errors_out.extend(errors)
        root = [e for e in errors if not _is_transport(e)]
        raise (root or errors)[0]
    return results


def _is_transport(e: BaseException) -> bool:
    return isinstance(e, TransportError) or getattr(e, "remote_type", "") in (
        "PeerDisconnected",
        "PeerTimeout",
        "TransportError",
        "ProtocolError",
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Group:
    """Share holders (party i = ``workers[i]``) plus a crypto provider, with a live MPC session.

    Made once per distinct ``(workers, crypto_provider)`` by :func:`group_of`. The session
    is joined lazily and re-joined after a failure (shares do not depend on a session).
    ``host`` is the loopback address where VirtualWorkers' parties listen.
    """

    def __init__(self, workers: Sequence["BaseWorker"], crypto_provider: "BaseWorker", host: str = "127.0.0.1") -> None:
        self.workers = tuple(workers)
        self.crypto_provider = crypto_provider
        self.host = host
        self.session: "str | None" = None
        self.addresses: "tuple[tuple[str, ...], str] | None" = None  # (parties, dealer) of the last session opened
        self.timeout_s = DEFAULT_TIMEOUT_S
        self.truncation = "dealer"
        self._lock = threading.RLock()
        self._stale: list[tuple[BaseWorker, str]] = []  # (member, session) whose MpcLeave could not be sent
        self._posted = 0  # MpcRuns posted (not waited for) since the holders last confirmed they ran
        self._posted_elements = 0  # elements those posted interactive ops produce: a measure of their work
        self._posted_op = ""  # the first of them, named in an error
        self._undo: list[Callable[[], None]] = []  # run (last first) if a posted op fails: in-place updates made since

    @property
    def n(self) -> int:
        return len(self.workers)

    def __repr__(self) -> str:
        ws = ", ".join(w.id for w in self.workers)
        return f"<Group parties:({ws}) crypto_provider:{self.crypto_provider.id}>"

    def _listen_addresses(self) -> list[str]:
        """Where each party, then the dealer, listens in a new session. A socket worker
        listens on its own host (the address the driver reaches it by) at a free port it
        picks there, so the members may sit on different machines; a VirtualWorker on this
        process's ``host``."""
        members = (*self.workers, self.crypto_provider)
        hosts = {w.id: h for w in members if isinstance(h := getattr(w, "host", None), str)}
        remote = [w for w in members if w.id in hosts]
        ports = dict(zip(hosts, fan_out([(w, MpcPort(hosts[w.id])) for w in remote], timeout_s=self.timeout_s)))
        out = []
        for w in members:
            host = hosts.get(w.id, self.host)
            port = ports[w.id] if w.id in ports else _free_port(host)
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    def ensure_session(self) -> str:
        with self._lock:
            if self.session is None:
                name = f"syft-{secrets.token_hex(8)}"
                token = secrets.token_hex(16)
                *addrs, dealer_addr = self._listen_addresses()
                self.addresses = (tuple(addrs), dealer_addr)
                reqs: list[tuple[BaseWorker, Any]] = [
                    (self.crypto_provider, MpcJoin(name, -1, addrs, dealer_addr, token, float(self.timeout_s)))
                ]
                reqs += [(w, MpcJoin(name, i, addrs, dealer_addr, token, float(self.timeout_s))) for i, w in enumerate(self.workers)]
                errors: list[BaseException] = []
                try:
                    fan_out(reqs, timeout_s=self.timeout_s * 2, errors_out=errors)
                except BaseException as e:
                    culprit, dead = self._culprit("set-up", e, errors)
                    self._leave(name, skip=dead)
                    if culprit is not None:
                        raise culprit from e
                    raise
                self.session = name
                self._leave_stale()  # every member just answered its join
            return self.session

    def _culprit(
        self, what: str, e: BaseException, errors: Sequence[BaseException] = ()
    ) -> "tuple[BaseException | None, set[str]]":
        """After a transport failure of the session: which member is gone? Each party only
        sees its neighbour fail ("party 1 closed the connection", even when the dealer died
        and party 1 gave up). A member whose own connection to the driver was closed
        (``errors``: every failure of the fan-out) is gone; otherwise every member is asked
        for a sync (each bounded by its own timeout: a timeout alone may be a member busy
        waiting for the one that hangs). Returns the error to raise instead (naming the
        unreachable worker, or the original annotated with who is who) and the ids of the
        unreachable members."""
        if not (_is_transport(e) or isinstance(e, TimeoutError)):
            return None, set()
        members = (*self.workers, self.crypto_provider)
        ids = {w.id for w in members}
        dead: dict[str, BaseException] = {}
        for x in errors:
            wid = getattr(x, "worker", None)
            if isinstance(x, TransportError) and not isinstance(x, TimeoutError) and wid in ids:
                dead.setdefault(wid, x)
        if not dead:
            probes = [(w, getattr(w, "sync", None)) for w in members]  # SocketWorkers; VirtualWorkers cannot vanish
            futs = [(w, _pool().submit(sync)) for w, sync in probes if callable(sync)]
            for w, f in futs:
                try:
                    f.result()
                except TransportError as probe_err:
                    dead[w.id] = probe_err
                except Exception:  # it answered (an earlier posted request's failure): reachable
                    pass
        roles = ", ".join(f"party {i} = {w.id}" for i, w in enumerate(self.workers))
        roles += f", dealer = crypto provider {self.crypto_provider.id}"
        if dead:
            wid, first = next(iter(dead.items()))
            role = "the crypto provider" if wid == self.crypto_provider.id else "share holder"
            err: BaseException = type(first)(f"MPC {what} failed: {role} {wid} cannot be reached ({roles}): {first}")
        elif getattr(e, "remote_type", ""):
            err = type(e)(f"{e} ({roles})")
        else:
            return None, set()
        for attr in ("worker", "peer", "remote_type"):
            v = getattr(first if dead else e, attr, None)
            if v is not None:
                setattr(err, attr, v)
        if dead:
            err.worker = wid  # type: ignore[attr-defined]
        return err, set(dead)

    def _leave_stale(self, connected_only: bool = False) -> None:
        """Sends the leaves that unreachable members missed: a member that was only cut off
        (a stalled or dropped link) still holds its party of the failed session. With
        ``connected_only``, only to members the driver is connected to again (a dead one
        would cost a connect timeout); the others are forgotten."""
        from syft_mpc.workers import local_worker

        stale, self._stale = self._stale, []
        for w, name in stale:
            if connected_only and getattr(w, "_conn", True) is None:  # a SocketWorker not reconnected
                continue
            try:
                local_worker._send(w, MpcLeave(name))
            except Exception:  # still unreachable, or restarted: nothing to close there
                pass

    def _leave(self, name: str, skip: "set[str] | frozenset[str]" = frozenset()) -> None:
        for w in (*self.workers, self.crypto_provider):
            if w.id in skip:  # unreachable: waiting on it again would only add its timeout
                self._stale.append((w, name))
                continue
            from syft_mpc.workers import local_worker

            for _ in range(2):
                try:
                    local_worker._send(w, MpcLeave(name))
                except TransportError:
                    break
                except Exception:  # a posted request's failure came back instead: this one did not run
                    continue
                break

    def close(self) -> None:
        """Closes the session (parties and dealer); the next operation opens a new one."""
        with self._lock:
            try:
                self.flush()  # a failure of posted ops drops the session itself
            except Exception:
                pass
            if self.session is not None:
                name, self.session = self.session, None
                self._leave(name)
            self._leave_stale(connected_only=True)

    @property
    def asynchronous(self) -> bool:
        """Whether MpcRuns are posted without waiting: every share holder is a worker whose
        transport can (a :class:`~syft_mpc.socket_worker.SocketWorker` with ``asynchronous``)."""
        return all(getattr(w, "async_commands", False) for w in self.workers)

    def run(
        self,
        op: str,
        args: tuple[Any, ...],
        kwargs: "dict[str, Any] | None" = None,
        n_out: int = 1,
        shapes: "Sequence[tuple[int, ...]] | None" = None,
    ) -> tuple[list[int], list[tuple[int, ...]]]:
        """Runs MPC op ``op`` on every share holder; returns the new share ids and their shapes.

        ``args`` may hold ObjRefs (the same id names a tensor's share on every holder)
        and public values. ``shapes``: the result shapes, when the caller inferred them
        (:func:`infer_shapes`); then, if the group is :attr:`asynchronous`, the op is posted to
        every holder without waiting (holders run their requests in order; a failure is raised
        by the next wait: :meth:`flush`, a reveal, an op that waits). Otherwise interactive ops
        go out concurrently and the replies are awaited (and checked against ``shapes``).
        After a failure of an interactive op (of any posted op) the session is dropped (its
        parties aborted) and re-created on the next call.
        """
        if op not in MPC_OPS:
            raise UnsupportedOperationError(f"MPC operation {op!r} is not in syft_mpc.mpc_session.MPC_OPS")
        interactive = op in INTERACTIVE
        with self._lock:
            if shapes is not None and self.asynchronous:
                return self._post(op, args, kwargs, n_out, shapes, interactive)
            if self._posted:
                self.flush()  # what was posted runs first; its failure must not land on this request
            session = self.ensure_session()
            ids = [new_id() for _ in range(n_out)]
            body = MpcRun(session, op, tuple(args), dict(kwargs or {}), ids)
            errors: list[BaseException] = []
            try:
                replies = fan_out([(w, body) for w in self.workers], concurrent=interactive, errors_out=errors)
            except BaseException as e:
                self._delete(ids)  # holders that finished stored results nobody will name
                if interactive:
                    self._failed(session, f"operation {op!r}", e, errors)
                raise
            got = [tuple(s) for s in replies[0]]
            if shapes is not None and [tuple(s) for s in shapes] != got:
                raise ProtocolError(f"MPC operation {op}: the holders made shapes {got}, the driver expected {list(shapes)}")
            return ids, got

    # Bounds on what may be posted before the driver waits for the holders: a wait is bounded by
    # each worker's timeout, so the work queued ahead of it must stay far below that.
    MAX_POSTED = 1024
    MAX_POSTED_ELEMENTS = 1 << 23  # elements out of posted interactive ops (~1 s of protocol work here)

    def _post(
        self, op: str, args: Any, kwargs: Any, n_out: int, shapes: Sequence[tuple[int, ...]], interactive: bool
    ) -> tuple[list[int], list[tuple[int, ...]]]:
        from syft_mpc.workers import local_worker

        session = self.ensure_session()
        ids = [new_id() for _ in range(n_out)]
        body = MpcRun(session, op, tuple(args), dict(kwargs or {}), ids)
        if not self._posted:
            self._posted_op = op
        self._posted += 1
        try:
            for w in self.workers:
                local_worker._send(w, body, post=True)
        except BaseException as e:
            # The link to a holder broke: the others may be waiting in this op for it.
            self._delete(ids)
            self._posted = self._posted_elements = 0
            self._confirmed(False)
            self._failed(session, f"operation {op!r}", e, [e])
            raise
        if interactive:
            self._posted_elements += sum(math.prod(s) for s in shapes)
        if self._posted >= self.MAX_POSTED or self._posted_elements >= self.MAX_POSTED_ELEMENTS:
            self.flush()
        return ids, [tuple(s) for s in shapes]

    def on_failure(self, undo: Callable[[], None]) -> None:
        """Registers ``undo`` to run if an op posted so far fails (in-place updates of shared
        tensors: they then keep the shares they had, as after a failure of a synchronous op)."""
        self._undo.append(undo)

    def _confirmed(self, ok: bool) -> None:
        undo, self._undo = self._undo, []
        if not ok:
            for fn in reversed(undo):
                fn()

    def flush(self) -> None:
        """Waits until every share holder has run the MpcRuns posted so far; raises the first
        failure among them (the root cause, naming an unreachable worker, as :meth:`run` does)
        and then drops the session (re-created on the next operation). No-op when nothing is posted."""
        with self._lock:
            if not self._posted:
                return
            what = f"operation {self._posted_op!r} or one sent after it without waiting"
            self._posted = self._posted_elements = 0
            session = self.session
            futs = [(w, _pool().submit(w.sync)) for w in self.workers]
            errors: list[BaseException] = []
            for w, f in futs:
                try:
                    f.result()
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    errors.append(e)
            self._confirmed(not errors)
            if errors:
                root = [e for e in errors if not _is_transport(e)]
                first = (root or errors)[0]
                if session is not None:
                    self._failed(session, what, first, errors)
                raise first

    def _failed(self, session: str, what: str, e: BaseException, errors: Sequence[BaseException]) -> None:
        """An op of ``session`` failed: drop the session (its members leave it), and raise the
        error naming the unreachable member, if one is (otherwise return: the caller raises ``e``)."""
        self.session = None
        culprit, dead = self._culprit(what, e, errors)
        self._leave(session, skip=dead)
        if culprit is not None:
            raise culprit from e

    def stats(self) -> dict[str, dict[str, int]]:
        """Traffic counters of the live session per share holder, worker id -> ``{"rounds",
        "bytes_sent", "bytes_received", "dealer_bytes_received"}`` (bytes between parties, and
        what the crypto provider streamed to that party); empty when no session is open.
        Counters grow over the session's life: measure an operation by the difference of two calls."""
        with self._lock:
            self.flush()
            if self.session is None:
                return {}
            replies = fan_out([(w, MpcStats(self.session)) for w in self.workers], timeout_s=self.timeout_s)
            return {w.id: dict(r) for w, r in zip(self.workers, replies)}

    def _delete(self, ids: Sequence[int]) -> None:
        from syft_mpc.workers import local_worker

        for w in self.workers:
            for i in ids:
                local_worker._queue_delete(w, i)


_GROUPS: dict[tuple[str, ...], Group] = {}
_GROUPS_LOCK = threading.Lock()


def group_of(workers: Sequence["BaseWorker"], crypto_provider: "BaseWorker") -> Group:
    """The :class:`Group` of these share holders (in this order) and crypto provider."""
    ids = [w.id for w in workers]
    if len(ids) < 2:
        raise ValueError(f"sharing needs at least 2 workers, got {len(ids)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"the shares of one tensor must sit on distinct workers, got {ids}")
    if crypto_provider is None:
        raise ValueError("share() needs a crypto_provider (a worker that deals correlated randomness)")
    if crypto_provider.id in ids:
        raise ValueError(
            f"the crypto provider {crypto_provider.id} must not hold a share (it would see the dealer's "
            "randomness and a share); pick another worker"
        )
    key = (*ids, "|", crypto_provider.id)
    with _GROUPS_LOCK:
        g = _GROUPS.get(key)
        same = g is not None and all(a is b for a, b in zip(g.workers, workers)) and g.crypto_provider is crypto_provider
        if not same:
            if g is not None:
                g.close()
            g = _GROUPS[key] = Group(workers, crypto_provider)
        return g


def close_all_sessions() -> None:
    """Closes every MPC session this driver opened (tests call it between runs)."""
    with _GROUPS_LOCK:
        groups = list(_GROUPS.values())
        _GROUPS.clear()
    for g in groups:
        g.close()
