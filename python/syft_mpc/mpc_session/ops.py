"""The MPC operations a share holder runs on its shares: the table :data:`MPC_OPS`.

An op is ``fn(ctx, *args, **kwargs)`` on ``torch.int64`` share tensors (read as ring
elements of Z_2^64 through :func:`~syft_mpc.fixed_point.to_ring`) and returns shares.
``INTERACTIVE`` ops call the worker's :class:`~syft_mpc.Party` (the parties exchange
messages, so the driver must deliver them to every party at once); the others are local.
:func:`infer_shapes` gives the driver the result shapes of an op without a reply, by the
same rules the worker follows. An op name in a message is a key of :data:`MPC_OPS`, never a
name looked up dynamically.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

from syft_mpc import _native
from syft_mpc.fixed_point import from_ring, to_ring

__all__ = ["ATEN_LINEAR_NAMES", "INTERACTIVE", "MPC_OPS", "OpContext", "infer_shapes", "working_bytes"]


# Each op: fn(ctx, *args, **kwargs) -> tensor or tuple of tensors (shares, int64).
# ``interactive`` ops call the Party and must be delivered to all parties concurrently.


def _broadcast(*shapes: Sequence[int]) -> torch.Size:
    return torch.Size(torch.broadcast_shapes(*shapes))  # type: ignore[no-untyped-call]  # (torch leaves it unannotated)


class OpContext:
    """What an op needs of the worker that runs it: its party, party id and the number of parties."""

    __slots__ = ("party", "id", "n")

    def __init__(self, party: _native.Party, pid: int, n: int) -> None:
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


def _trunc(ctx: OpContext, z: np.ndarray, divisor: int, local: bool) -> np.ndarray:
    if divisor == 1:
        return z
    if local:
        bits = divisor.bit_length() - 1
        return ctx.party.truncate_local(z, bits)
    return ctx.party.truncate(z, divisor)


def _product(ctx: OpContext, run: Callable[..., np.ndarray], divisor: int, local: bool) -> np.ndarray:
    """A Beaver product truncated by ``divisor``: locally afterwards, or by the dealer-assisted
    protocol fused with the product (``run(divisor=...)``), so that the dealer prepares the
    truncation pair while the product runs."""
    if local:
        return _trunc(ctx, run(), divisor, local)
    return run(divisor=divisor)


@_op("from_public")
def _from_public(ctx: OpContext, c: torch.Tensor) -> torch.Tensor:
    """A sharing of a public ring tensor without communication: party 0 holds it, the rest 0."""
    return c.clone() if ctx.id == 0 else torch.zeros_like(c)


@_op("add_public")
def _add_public(ctx: OpContext, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return x + c if ctx.id == 0 else x + torch.zeros_like(c)


@_op("public_sub")
def _public_sub(ctx: OpContext, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return c - x if ctx.id == 0 else torch.zeros_like(c) - x


@_op("mul_public")
def _mul_public(ctx: OpContext, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return x * c


def _bmm_shapes(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Brings torch.matmul operands to the 2-d or equal-batch 3-d form of the ring kernels."""
    squeeze_a = a.dim() == 1
    squeeze_b = b.dim() == 1
    if squeeze_a:
        a = a.unsqueeze(0)
    if squeeze_b:
        b = b.unsqueeze(1)
    batch = _broadcast(a.shape[:-2], b.shape[:-2])
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
def _matmul_public(ctx: OpContext, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a3, b3, finish = _bmm_shapes(a, b)
    return finish(from_ring(_native.ring_matmul(to_ring(a3), to_ring(b3))))


@_op("conv2d_public")
def _conv2d_public(
    ctx: OpContext, x: torch.Tensor, w: torch.Tensor, stride: Any = (1, 1), padding: Any = (0, 0), dilation: Any = (1, 1), groups: int = 1
) -> torch.Tensor:
    return from_ring(_native.ring_conv2d(to_ring(x), to_ring(w), tuple(stride), tuple(padding), tuple(dilation), groups))


@_op("local_uniform")
def _local_uniform(ctx: OpContext, shape: list[int], bits: int) -> torch.Tensor:
    """This holder's own uniform integers in [0, 2^bits), from the operating system's CSPRNG: the
    holders' draws are additive shares of their sum, which no holder alone decides (dropout)."""
    n = 1
    for d in shape:
        n *= int(d)
    raw = np.frombuffer(os.urandom(8 * n), dtype=np.int64) & ((1 << bits) - 1)
    return torch.from_numpy(raw.copy()).reshape(tuple(shape))


@_op("mul", interactive=True)
def _mul(ctx: OpContext, x: torch.Tensor, y: torch.Tensor, divisor: int = 1, local: bool = False) -> torch.Tensor:
    shape = _broadcast(x.shape, y.shape)
    xs, ys = to_ring(x.expand(shape)), to_ring(y.expand(shape))
    return from_ring(_product(ctx, lambda **kw: ctx.party.mul(xs, ys, **kw), divisor, local))


@_op("matmul", interactive=True)
def _matmul(ctx: OpContext, a: torch.Tensor, b: torch.Tensor, divisor: int = 1, local: bool = False) -> torch.Tensor:
    a3, b3, finish = _bmm_shapes(a, b)
    xs, ys = to_ring(a3), to_ring(b3)
    return finish(from_ring(_product(ctx, lambda **kw: ctx.party.matmul(xs, ys, **kw), divisor, local)))


@_op("conv2d", interactive=True)
def _conv2d(
    ctx: OpContext,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: Any = (1, 1),
    padding: Any = (0, 0),
    dilation: Any = (1, 1),
    groups: int = 1,
    divisor: int = 1,
    local: bool = False,
) -> torch.Tensor:
    xs, ws, geometry = to_ring(x), to_ring(w), (tuple(stride), tuple(padding), tuple(dilation), groups)
    return from_ring(_product(ctx, lambda **kw: ctx.party.conv2d(xs, ws, *geometry, **kw), divisor, local))


@_op("truncate", interactive=True)
def _truncate(ctx: OpContext, x: torch.Tensor, divisor: int, local: bool = False) -> torch.Tensor:
    return from_ring(_trunc(ctx, to_ring(x), divisor, local)).reshape(x.shape)


@_op("ltz", interactive=True)
def _ltz(ctx: OpContext, x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """Shares of 1{x < 0}, multiplied by ``times`` (the fixed-point encoding of 1)."""
    b = from_ring(ctx.party.ltz(to_ring(x))).reshape(x.shape)
    return b * times if times != 1 else b


@_op("ltz_times", interactive=True)
def _ltz_times(ctx: OpContext, x: torch.Tensor, payload: torch.Tensor) -> torch.Tensor:
    """payload·1{x < 0} for a payload of shape ``(k, *x.shape)``, in the comparison's rounds."""
    return from_ring(ctx.party.ltz_times(to_ring(x), to_ring(payload))).reshape(payload.shape)


@_op("below_times", interactive=True)
def _below_times(ctx: OpContext, x: torch.Tensor, thresholds: list[int], payload: torch.Tensor) -> torch.Tensor:
    """payload·1{x < t} for public ring thresholds t and a payload of shape ``(k, len(thresholds), *x.shape)``,
    in one comparison's rounds (one opening and one set of tables for every threshold)."""
    t = [int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in thresholds]
    return from_ring(ctx.party.below_times(to_ring(x), t, to_ring(payload))).reshape(payload.shape)


@_op("fourier", interactive=True)
def _fourier(ctx: OpContext, x: torch.Tensor, multiplier: int, cos_coef: list[int], sin_coef: list[int], divisor: int) -> torch.Tensor:
    """Σ_k a_k·cos(kθ) + b_k·sin(kθ) at ``2**29 / divisor`` for θ = 2π·(x·multiplier mod 2^32)/2^32, in two rounds."""
    return from_ring(ctx.party.fourier(to_ring(x), multiplier, cos_coef, sin_coef, divisor)).reshape(x.shape)


@_op("relu_mask", interactive=True)
def _relu_mask(ctx: OpContext, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relu(x), 1{x >= 0}) in ReLU's rounds: the (unscaled) mask is kept for the backward pass."""
    y, pos = ctx.party.relu_mask(to_ring(x))
    return from_ring(y).reshape(x.shape), from_ring(pos).reshape(x.shape)


@_op("relu", interactive=True)
def _relu(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return from_ring(ctx.party.relu(to_ring(x))).reshape(x.shape)


@_op("select_mul", interactive=True)
def _select_mul(ctx: OpContext, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """b·x + (1−b)·y = y + b·(x − y) for an integer bit sharing b (unscaled)."""
    shape = _broadcast(b.shape, x.shape, y.shape)
    d = (x - y).expand(shape)
    return y.expand(shape) + from_ring(ctx.party.mul(to_ring(b.expand(shape)), to_ring(d))).reshape(shape)


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
    "take": torch.ops.aten.take.default,  # a view's elements, gathered from its base (encrypted.tensor.ViewCell)
    "put": torch.ops.aten.put.default,  # a view's new elements, written into its base
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
# A shared tensor's wrapper always reports contiguous strides, so torch asks for a view where the
# share itself may be a transposed (non-contiguous) tensor: on shares a view is a reshape (no op
# writes into a share in place, so a copy is indistinguishable from an alias).
MPC_OPS["aten.view"] = MPC_OPS["aten._unsafe_view"] = lambda ctx, x, shape: torch.ops.aten.reshape.default(x, shape)
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
            shape = _broadcast(*(a.shape for a in args if isinstance(a, torch.Tensor)))
            shapes = [tuple(shape)] * n_out
        elif op == "local_uniform":
            shapes = [tuple(int(d) for d in args[0])]
        elif op in ("matmul", "matmul_public"):
            shapes = [tuple(torch.matmul(_as_meta(args[0]), _as_meta(args[1])).shape)]
        elif op in ("conv2d", "conv2d_public"):
            kw = {k: kwargs[k] for k in ("stride", "padding", "dilation", "groups") if k in kwargs}
            x, w = (_as_meta(a, torch.float32) for a in args[:2])
            shapes = [tuple(torch.nn.functional.conv2d(x, w, None, *args[2:6], **kw).shape)]
        elif op == "aten.take":  # the index is a public (CPU) tensor: no meta kernel call
            shapes = [tuple(args[1].shape)]
        elif op == "aten.put":
            shapes = [tuple(args[0].shape)]
        elif op.startswith("aten.") and op[5:] in _ATEN_LINEAR:
            r = _ATEN_LINEAR[op[5:]](*args, **kwargs)
            shapes = [tuple(t.shape) for t in (r if isinstance(r, (list, tuple)) else (r,))]
        else:
            return None
    except Exception:  # the holders will report it (or it was a case these rules do not cover)
        return None
    return shapes if len(shapes) == n_out else None


WORKING_COPIES = 2
"""A local op's estimated peak: its result and one converted copy of it (``to_ring``/``from_ring``)."""
INTERACTIVE_COPIES = 6
"""An interactive op's estimated peak, in results: the operands' ring copies, the triple or
mask shares from the dealer, the masked openings and the result."""


def _meta_arg(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return torch.empty_strided(v.size(), v.stride(), dtype=v.dtype, device="meta")
    tv = type(v)
    if tv is tuple or tv is list:
        return tv(_meta_arg(x) for x in v)
    return v


def working_bytes(op: str, args: tuple[Any, ...], kwargs: dict[str, Any], n_out: int) -> "int | None":
    """An upper estimate of the bytes MPC op ``op`` allocates on a share holder (the worker
    checks it against its memory budget before it runs the op): its results' size (from
    :func:`infer_shapes` on meta copies of the arguments) times :data:`WORKING_COPIES` or
    :data:`INTERACTIVE_COPIES`, plus a convolution's im2col buffer. None when the shapes
    cannot be told in advance (the op then runs unchecked; its kernels still refuse sizes
    that overflow or cannot be allocated). Raises :class:`~syft_mpc.errors.ResourceLimitError`
    for a result whose size does not even fit 64 bits."""
    from syft_mpc.limits import nbytes

    margs = tuple(_meta_arg(a) for a in args)
    shapes = infer_shapes(op, margs, {k: _meta_arg(v) for k, v in kwargs.items()}, n_out)
    if shapes is None:
        return None
    total = sum(nbytes(s, 8, f"MPC operation {op}") for s in shapes)
    total *= INTERACTIVE_COPIES if op in INTERACTIVE else WORKING_COPIES
    if op in ("conv2d", "conv2d_public") and len(args) >= 2 and shapes and len(shapes[0]) == 4:
        x, w = args[0], args[1]
        groups = int(args[5]) if len(args) > 5 else int(kwargs.get("groups", 1))
        _, _, oh, ow = shapes[0]
        # One (C/groups·KH·KW) x (OH·OW) im2col buffer per thread (rust/ring kernels::conv2d).
        cols = nbytes((w.shape[1], w.shape[2], w.shape[3], oh, ow), 8, f"MPC operation {op}")
        total += cols * max(1, min(torch.get_num_threads(), int(x.shape[0]) * max(groups, 1)))
    return total
