"""Neural-network layers on shared tensors and their backward passes: convolutions, pooling,
padding, interpolation, dropout, losses.

* ``convolution``: one Beaver conv2d (``conv2d``) with shared weights, a local one with public
  weights, then one truncation. Its backward: products on im2col columns (one Beaver matmul
  each), grad_w = G @ cols and grad_x = col2im(Wᵀ @ G); ``groups`` as one batched matmul.
* ``avg_pool2d``: a public conv2d with a ones kernel times 1/(kh·kw), local.
* ``max_pool2d``: windows as views of the shares (padding, dilation, ceil_mode), a tournament
  (:func:`~syft_mpc.encrypted.comparisons.tournament`) over each window that also moves its
  one-hot argmax; the backward routes each window's gradient to it (one Beaver product) and
  sums overlapping windows (col2im: a ``scatter_add`` with a public index map).
* conv1d as the conv2d of a height-1 view; transposed convolutions as a stride-1 conv2d of the
  zero-stuffed input with the flipped, channel-swapped weight (both linear maps of the shares).
* ``adaptive_avg_pool2d``, interpolation (nearest, nearest-exact, linear, bilinear), reflection /
  replication padding, ``cumsum``: products with public matrices (0/1 ones exact and local) or
  ``index_select`` with public positions; constant padding with a public mask; pixel shuffle as a
  permutation.
* dropout: ``empty_like`` gives a sharing, and ``bernoulli_`` fills it with a mask the holders
  draw together (see :func:`_bernoulli_`).
* ``mse_loss``, ``nll_loss`` (one-hot public targets) and their backward: products and sums.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from syft_mpc.encrypted.arithmetic import add, bilinear, matmul, mul, neg, sub
from syft_mpc.encrypted.comparisons import below_sum, tournament
from syft_mpc.encrypted.tensor import (
    OP_TABLE,
    ShareCell,
    SharedTensor,
    implements,
    is_shared,
    lift,
    public_value,
    run,
)
from syft_mpc.errors import UnsupportedOperationError

__all__: list[str] = []

aten = torch.ops.aten


@implements(aten.convolution.default)
def _convolution(x: Any, w: Any, bias: Any, stride: Any, padding: Any, dilation: Any, transposed: bool, output_padding: Any, groups: int) -> Any:
    """conv1d (as a conv2d of height 1), conv2d and their transposed forms (a conv2d of the
    zero-stuffed input, see :func:`_transposed_as_conv`): one ring conv2d with ``groups`` and
    ``dilation``, a Beaver one with shared weights, then one truncation."""
    if len(stride) == 1:
        out = _convolution(_as_2d(x), _as_2d(w), None, [1, stride[0]], [0, padding[0]], [1, dilation[0]], transposed, [0, output_padding[0]], groups)
        out = out.squeeze(2)
    elif len(stride) != 2:
        raise UnsupportedOperationError(f"{len(stride)}-d convolution is not supported on shared tensors (1-d and 2-d are)")
    elif transposed:
        xz, wc = _transposed_as_conv(x, w, stride, padding, dilation, output_padding, groups)
        out = bilinear("conv2d", xz, wc, stride=[1, 1], padding=[0, 0], dilation=list(dilation), groups=int(groups))
    else:
        kw: dict[str, Any] = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation), "groups": int(groups)}
        out = bilinear("conv2d", x, w, **kw)
    if bias is not None:
        shape = (1, -1) + (1,) * (out.dim() - 2)
        out = add(out, bias.reshape(shape) if is_shared(bias) else public_value(bias).reshape(shape))
    return out


def _as_2d(t: Any) -> Any:
    """A 1-d convolution operand ``(N, C, L)`` as a 2-d one ``(N, C, 1, L)`` (a view of the shares)."""
    return t.unsqueeze(2) if is_shared(t) else public_value(t).unsqueeze(2)


def _transposed_as_conv(x: Any, w: Any, stride: Any, padding: Any, dilation: Any, output_padding: Any, groups: int) -> tuple[Any, Any]:
    """conv_transpose2d(x, w) as conv2d(xz, wc) with stride 1 (Dumoulin & Visin, *A guide to
    convolution arithmetic*, 2016, §4): ``xz`` is ``x`` with stride − 1 zeros between pixels,
    padded by dilation·(k − 1) − padding on each side (+ output_padding at the bottom/right; a
    negative pad crops), and ``wc`` the weight flipped in space with its in/out channels swapped
    per group. Both are linear maps of the shares (pads, views, one ``constant_pad_nd``):
    no communication."""
    kh, kw = w.shape[-2:]
    xz = _zero_stuff(x, stride)
    pads: list[int] = []
    for ax, k in ((1, kw), (0, kh)):  # constant_pad_nd lists the last axis first
        lo = dilation[ax] * (k - 1) - padding[ax]
        pads += [lo, lo + output_padding[ax]]
    xz = _pad_any(xz, pads)
    return xz, _transposed_weight(w, groups)


def _transposed_weight(w: Any, groups: int) -> Any:
    """(C_in, C_out/g, kh, kw) → (C_out, C_in/g, kh, kw), flipped in space (and back: it is an involution up to shape)."""
    ci, cog, kh, kw = w.shape
    g = int(groups)
    wv = w if is_shared(w) else public_value(w)
    wv = wv.reshape(g, ci // g, cog, kh, kw).transpose(1, 2).reshape(g * cog, ci // g, kh, kw)
    return wv.flip([2, 3])


def _untransposed_weight(wc: Any, ci: int, groups: int) -> Any:
    """The inverse of :func:`_transposed_weight`: a gradient for wc as one for w."""
    co, cig, kh, kw = wc.shape
    g = int(groups)
    return wc.flip([2, 3]).reshape(g, co // g, cig, kh, kw).transpose(1, 2).reshape(ci, co // g, kh, kw)


def _zero_stuff(x: Any, stride: Any) -> Any:
    """``x`` with stride − 1 zeros between neighbouring pixels along H and W: a pad of a new
    axis, then a reshape (linear on the shares)."""
    xv = x if is_shared(x) else public_value(x)
    for ax, s in ((2, stride[0]), (3, stride[1])):
        if s == 1:
            continue
        n = xv.shape[ax]
        moved = xv.movedim(ax, -1).unsqueeze(-1)
        moved = _pad_any(moved, [0, s - 1]).flatten(-2).narrow(-1, 0, (n - 1) * s + 1)
        xv = moved.movedim(-1, ax)
    return xv


def _pad_any(t: Any, pads: list[int]) -> Any:
    """Zero padding (negative entries crop) of a shared or public tensor."""
    if not any(pads):
        return t
    return torch.ops.aten.constant_pad_nd(t, pads, 0) if is_shared(t) else torch.constant_pad_nd(public_value(t), pads, 0)


@implements(aten.avg_pool2d.default)
def _avg_pool2d(x: Any, kernel_size: Any, stride: Any = (), padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Any = None) -> Any:
    k = _pair(kernel_size)
    s = _pair(stride) if stride else k
    p = _pair(padding)
    if ceil_mode or (not count_include_pad and p != (0, 0)):
        raise UnsupportedOperationError("avg_pool2d on shared tensors: ceil_mode and count_include_pad=False are not supported")
    c = x.shape[1]
    ones = torch.ones((c, 1, *k), dtype=torch.int64)
    summed = run(x, "conv2d_public", x, ones, stride=list(s), padding=list(p), dilation=[1, 1], groups=c)
    return mul(summed, 1.0 / (divisor_override or k[0] * k[1]))


def _by_public(a: Any, m: torch.Tensor) -> Any:
    """``a @ m`` for a public matrix ``m``; plain torch (in ``a``'s dtype) when ``a`` is public too."""
    if is_shared(a):
        return matmul(a, m)
    av = public_value(a)
    return torch.matmul(av, m.to(av.dtype))


def _adaptive_bins(n: int, o: int) -> torch.Tensor:
    """torch's adaptive pooling bins along one axis as an (o, n) averaging matrix: bin i spans
    [⌊i·n/o⌋, ⌈(i+1)·n/o⌉)."""
    m = torch.zeros((o, n), dtype=torch.float64)
    for i in range(o):
        lo, hi = (i * n) // o, -((-(i + 1) * n) // o)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _adaptive_matrix(hw: tuple[int, int], out: tuple[int, int]) -> torch.Tensor:
    """The (oh·ow, h·w) public matrix of adaptive average pooling: the Kronecker product of the
    two axes' averaging matrices (one local product and one truncation for the whole layer)."""
    return torch.kron(_adaptive_bins(hw[0], out[0]), _adaptive_bins(hw[1], out[1]))


@implements(aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default)
def _adaptive_avg_pool2d(x: Any, output_size: Any) -> Any:
    """Adaptive average pooling (torchvision's ResNet head): a product with a public averaging
    matrix, local, then one truncation."""
    *lead, h, w = x.shape
    o = list(output_size) if not isinstance(output_size, int) else [output_size] * 2
    oh, ow = (h if o[0] is None else int(o[0])), (w if o[-1] is None else int(o[-1]))
    out = matmul(x.reshape(-1, h * w), _adaptive_matrix((h, w), (oh, ow)).t())
    return out.reshape(*lead, oh, ow)


@implements(aten._adaptive_avg_pool2d_backward.default)
def _adaptive_avg_pool2d_backward(grad: Any, x: Any) -> Any:
    *lead, h, w = x.shape
    oh, ow = grad.shape[-2:]
    out = _by_public(grad.reshape(-1, oh * ow), _adaptive_matrix((h, w), (oh, ow)))
    return out.reshape(*lead, h, w)


@implements(aten.constant_pad_nd.default)
def _constant_pad_nd(x: Any, pad: Any, value: Any = 0) -> Any:
    """Constant padding: the shares padded with 0 (linear), plus the public value on the padded
    positions (a public mask added by one holder)."""
    out = run(x, "aten.pad", x, list(pad), 0)
    if value == 0 or not any(p > 0 for p in pad):
        return out
    mask = torch.constant_pad_nd(torch.zeros(x.shape, dtype=torch.float64), list(pad), float(value))
    return add(out, mask)


def _pad_index(n: int, lo: int, hi: int, mode: str) -> torch.Tensor:
    """Source positions of reflection / replication padding along one axis (torch's rules)."""
    i = torch.arange(-lo, n + hi)
    if mode == "reflect":
        if lo >= n or hi >= n:
            raise ValueError(f"reflection padding ({lo}, {hi}) must be smaller than the input size {n}")
        period = 2 * (n - 1)
        i = i.abs() % period if period else torch.zeros_like(i)
        return torch.where(i >= n, period - i, i)
    return i.clamp(0, n - 1)


def _index_pad(x: Any, pad: Any, mode: str) -> Any:
    """Reflection / replication padding of the last len(pad)/2 axes: ``index_select`` with
    public positions, per axis (linear on the shares)."""
    out = x
    for k in range(len(pad) // 2):
        ax = x.dim() - 1 - k
        out = out.index_select(ax, _pad_index(x.shape[ax], int(pad[2 * k]), int(pad[2 * k + 1]), mode))
    return out


def _index_pad_backward(grad: Any, x: Any, pad: Any, mode: str) -> Any:
    """The adjoint of :func:`_index_pad`: per axis, a product with the public 0/1 selection
    matrix's transpose (integral: exact and local), summing what each padded copy received."""
    out = grad
    for k in range(len(pad) // 2):
        ax = x.dim() - 1 - k
        idx = _pad_index(x.shape[ax], int(pad[2 * k]), int(pad[2 * k + 1]), mode)
        sel = torch.nn.functional.one_hot(idx, x.shape[ax]).to(torch.int64)  # (padded, n)
        out = _by_public(out.movedim(ax, -1), sel).movedim(-1, ax)
    return out


for _mode, _ops, _bw in (
    ("reflect", (aten.reflection_pad1d.default, aten.reflection_pad2d.default, aten.reflection_pad3d.default),
     (aten.reflection_pad1d_backward.default, aten.reflection_pad2d_backward.default, aten.reflection_pad3d_backward.default)),
    ("replicate", (aten.replication_pad1d.default, aten.replication_pad2d.default, aten.replication_pad3d.default),
     (aten.replication_pad1d_backward.default, aten.replication_pad2d_backward.default, aten.replication_pad3d_backward.default)),
):
    for _op in _ops:
        OP_TABLE[_op] = lambda x, pad, _m=_mode: _index_pad(x, pad, _m)
    for _op in _bw:
        OP_TABLE[_op] = lambda grad, x, pad, _m=_mode: _index_pad_backward(grad, x, pad, _m)


def _nearest_index(n: int, o: int, scale: "float | None") -> torch.Tensor:
    """torch's ``nearest`` source positions: ⌊i·s⌋ with s = 1/scale_factor when given, else n/o."""
    s = (1.0 / scale) if scale else n / o
    return torch.clamp(torch.floor(torch.arange(o, dtype=torch.float32) * s).to(torch.int64), max=n - 1)


def _upsample_sizes(x: Any, output_size: Any, scales: Any, k: int) -> list[int]:
    if output_size is not None:
        return [int(v) for v in output_size]
    return [int(math.floor(x.shape[-k + i] * float(scales[i]))) for i in range(k)]


def _upsample_nearest(x: Any, output_size: Any, scales: list[Any]) -> Any:
    """Nearest upsampling: ``index_select`` with public positions along each spatial axis (linear)."""
    k = len(scales)
    sizes = _upsample_sizes(x, output_size, scales, k)
    out = x
    for i in range(k):
        ax = x.dim() - k + i
        out = out.index_select(ax, _nearest_index(x.shape[ax], sizes[i], scales[i]))
    return out


def _upsample_nearest_backward(grad: Any, output_size: Any, input_size: Any, scales: list[Any]) -> Any:
    """The adjoint: per axis, a product with the transposed public 0/1 selection matrix (exact, local)."""
    k = len(scales)
    out = grad
    for i in range(k):
        ax = grad.dim() - k + i
        n = int(input_size[-k + i])
        sel = torch.nn.functional.one_hot(_nearest_index(n, int(output_size[i]), scales[i]), n).to(torch.int64)
        out = _by_public(out.movedim(ax, -1), sel).movedim(-1, ax)
    return out


@implements(aten.upsample_nearest1d.default)
def _upsample_nearest1d(x: Any, output_size: Any, scales: Any = None) -> Any:
    return _upsample_nearest(x, output_size, [scales])


@implements(aten.upsample_nearest2d.default)
def _upsample_nearest2d(x: Any, output_size: Any, scales_h: Any = None, scales_w: Any = None) -> Any:
    return _upsample_nearest(x, output_size, [scales_h, scales_w])


@implements(aten.upsample_nearest1d.vec, aten.upsample_nearest2d.vec)
def _upsample_nearest_vec(x: Any, output_size: Any, scale_factors: Any) -> Any:
    k = x.dim() - 2
    scales = list(scale_factors) if scale_factors is not None else [None] * k
    return _upsample_nearest(x, output_size, scales)


@implements(aten.upsample_nearest1d_backward.default)
def _upsample_nearest1d_backward(grad: Any, output_size: Any, input_size: Any, scales: Any = None) -> Any:
    return _upsample_nearest_backward(grad, output_size, input_size, [scales])


@implements(aten.upsample_nearest2d_backward.default)
def _upsample_nearest2d_backward(grad: Any, output_size: Any, input_size: Any, scales_h: Any = None, scales_w: Any = None) -> Any:
    return _upsample_nearest_backward(grad, output_size, input_size, [scales_h, scales_w])


def _axis_matrix(n: int, o: int, scale: "float | None", mode: str, align_corners: "bool | None") -> torch.Tensor:
    """The (n, o) public matrix of 1-d interpolation from n to o points, taken from torch itself:
    ``F.interpolate`` of the identity (so scales, ``align_corners`` and rounding are torch's)."""
    eye = torch.eye(n, dtype=torch.float64).unsqueeze(1)
    kw: dict[str, Any] = {"mode": mode}
    if mode == "linear":
        kw["align_corners"] = bool(align_corners)
    if scale:
        kw.update(scale_factor=float(scale), recompute_scale_factor=False)
    else:
        kw["size"] = int(o)
    m = torch.nn.functional.interpolate(eye, **kw).squeeze(1)
    if m.shape[-1] != o:
        raise UnsupportedOperationError(f"interpolation on shares: {m.shape[-1]} points for an output of {o}")
    return m.round().to(torch.int64) if mode != "linear" else m


def _separable(x: Any, in_sizes: list[int], out_sizes: list[int], scales: list[Any], mode: str, align_corners: "bool | None", backward: bool) -> Any:
    """Interpolation of the last k axes as products with public per-axis matrices (nearest modes:
    0/1 integral matrices, exact and local; linear: one truncation per axis). ``backward``: the
    adjoint (the transposed matrices), for the gradient."""
    k = len(in_sizes)
    out = x
    for i in range(k):
        ax = x.dim() - k + i
        m = _axis_matrix(int(in_sizes[i]), int(out_sizes[i]), scales[i], mode, align_corners)
        out = _by_public(out.movedim(ax, -1), m.t() if backward else m).movedim(-1, ax)
    return out


def _interp(mode: str, k: int, has_ac: bool) -> None:
    """Registers the forward (``.default`` and ``.vec``) and backward aten ops of one upsampling mode."""
    name = {"nearest-exact": "_upsample_nearest_exact", "linear": "upsample_linear" if k == 1 else "upsample_bilinear"}[mode] + f"{k}d"
    fwd, vec, bwd = (getattr(aten, name).default, getattr(aten, name).vec, getattr(aten, name + "_backward").default)

    def forward(x: Any, output_size: Any, *rest: Any) -> Any:
        ac = rest[0] if has_ac else None
        scales = list(rest[1:] if has_ac else rest) + [None] * k
        sizes = _upsample_sizes(x, output_size, scales[:k], k)
        return _separable(x, list(x.shape[-k:]), sizes, scales[:k], mode, ac, False)

    def forward_vec(x: Any, output_size: Any, *rest: Any) -> Any:
        ac = rest[0] if has_ac else None
        factors = rest[1] if has_ac else rest[0]
        scales = list(factors) if factors is not None else [None] * k
        sizes = _upsample_sizes(x, output_size, scales, k)
        return _separable(x, list(x.shape[-k:]), sizes, scales, mode, ac, False)

    def backward(grad: Any, output_size: Any, input_size: Any, *rest: Any) -> Any:
        ac = rest[0] if has_ac else None
        scales = list(rest[1:] if has_ac else rest) + [None] * k
        return _separable(grad, list(input_size[-k:]), list(output_size), scales[:k], mode, ac, True)

    OP_TABLE[fwd], OP_TABLE[vec], OP_TABLE[bwd] = forward, forward_vec, backward


for _k in (1, 2):
    _interp("nearest-exact", _k, False)
    _interp("linear", _k, True)


@implements(aten.pixel_shuffle.default)
def _pixel_shuffle(x: Any, r: int) -> Any:
    """(N, C·r², H, W) → (N, C, H·r, W·r): a permutation of the shares (reshape and permute)."""
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c // (r * r), r, r, h, w)
    nd = len(lead)
    y = y.permute(*range(nd), nd, nd + 3, nd + 1, nd + 4, nd + 2)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


@implements(aten.pixel_unshuffle.default)
def _pixel_unshuffle(x: Any, r: int) -> Any:
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c, h // r, r, w // r, r)
    nd = len(lead)
    y = y.permute(*range(nd), nd, nd + 2, nd + 4, nd + 1, nd + 3)
    return y.reshape(*lead, c * r * r, h // r, w // r)


@implements(aten.cumsum.default)
def _cumsum(x: Any, dim: int, dtype: Any = None) -> Any:
    """Cumulative sum along ``dim``: a product with the public upper-triangular matrix of ones
    (integral: exact, local; its backward, a reversed cumsum, is the same)."""
    d = dim % max(1, x.dim())
    n = x.shape[d] if x.dim() else 1
    tri = torch.triu(torch.ones((n, n), dtype=torch.int64))
    if x.dim() == 0:
        return x
    return _by_public(x.movedim(d, -1), tri).movedim(-1, d)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    return (v[0], v[0]) if len(v) == 1 else (int(v[0]), int(v[1]))


_POOL_PAD = -(1 << 60)
"""Encoded value of max_pool2d's padding: far below any encodable value (|x| < 2^47), so a padded
position never wins, as torch's −inf padding; differences with real values stay far from 2^63."""


def _pool_out(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> tuple[int, int]:
    """torch's max_pool2d output length along one axis, and how far its last window reads past
    the padded input (ceil_mode: a partial window at the end)."""
    eff = d * (k - 1) + 1
    o = (n + 2 * p - eff + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= n + p:  # the last window must start inside the input or its left padding
        o -= 1
    return o, max(0, (o - 1) * s + eff - (n + 2 * p))


def _pool_windows(x: SharedTensor, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int], d: tuple[int, int], ceil_mode: bool) -> tuple[Any, tuple[int, int]]:
    """max_pool2d's windows as views of the shares, ``(n, c, oh, ow, kh*kw)``, and the extra
    right/bottom padding that ceil_mode's partial windows read. Padded positions hold the public
    ``_POOL_PAD`` (zero-padded shares plus a public mask: no communication)."""
    n, c, h, w = x.shape
    oh, eh = _pool_out(h, k[0], s[0], p[0], d[0], ceil_mode)
    ow, ew = _pool_out(w, k[1], s[1], p[1], d[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"max_pool2d: output size {oh}x{ow} is too small for input {h}x{w}")
    xp = x
    if p != (0, 0) or eh or ew:
        xp = torch.ops.aten.constant_pad_nd(x, [p[1], p[1] + ew, p[0], p[0] + eh], 0)
        mask = torch.full(tuple(xp.shape[-2:]), _POOL_PAD, dtype=torch.int64)
        mask[p[0] : p[0] + h, p[1] : p[1] + w] = 0
        xp = run(xp, "add_public", xp, mask)
    win = xp.unfold(2, d[0] * (k[0] - 1) + 1, s[0]).unfold(3, d[1] * (k[1] - 1) + 1, s[1])
    if d != (1, 1):
        win = win[..., :: d[0], :: d[1]]
    return win[:, :, :oh, :ow].reshape(n, c, oh, ow, k[0] * k[1]), (eh, ew)


def _pool_args(kernel_size: Any, stride: Any, padding: Any, dilation: Any) -> tuple[tuple[int, int], ...]:
    k = _pair(kernel_size)
    return k, (_pair(stride) if stride else k), _pair(padding), _pair(dilation)


def _max_pool2d_onehot(x: SharedTensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False) -> tuple[SharedTensor, SharedTensor]:
    """max_pool2d that also returns, for each window, the shared one-hot vector of its argmax
    (shape ``(n, c, oh, ow, kh*kw)``, unscaled): a tournament of ⌈log2(kh·kw)⌉ comparisons, each
    taking the winners' values and one-hot vectors in its own rounds (``tournament``; ties go
    to the first position of the window, as in torch)."""
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation)
    win, _ = _pool_windows(x, k, s, p, d, ceil_mode)
    n, c, oh, ow, kk = win.shape
    vals: Any = win.reshape(n, c, oh, ow, kk, 1)
    hot = run(x, "from_public", torch.eye(kk, dtype=torch.int64).expand(n, c, oh, ow, kk, kk).contiguous(), scale=1, dtype=torch.int64)
    both = tournament(run(x, "aten.cat", [vals, hot], 5), 4, largest=True)  # value and one-hot vector
    vals, hot = both.narrow(5, 0, 1), both.narrow(5, 1, kk)
    out = vals.reshape(n, c, oh, ow)
    hot = hot.reshape(n, c, oh, ow, kk)
    return out, SharedTensor(hot.cell, 1, x.base, x.precision_fractional, torch.int64)


@implements(aten.max_pool2d_with_indices.default)
def _max_pool2d_with_indices(x: Any, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False) -> Any:
    out, hot = _max_pool2d_onehot(x, kernel_size, stride or None, padding, dilation, ceil_mode)
    # The indices (argmax within each window, row-major) stay secret: a shared int64 tensor, which
    # also carries the one-hot selection the backward pass needs.
    kk = hot.shape[-1]
    idx = run(hot, "aten.sum_dim", run(hot, "mul_public", hot, torch.arange(kk, dtype=torch.int64)), [4], False)
    idx = SharedTensor(idx.cell, 1, x.base, x.precision_fractional, torch.int64)
    idx.cell.aux = hot.cell.shares
    return out, idx


@implements(aten.max_pool2d_with_indices_backward.default)
def _max_pool2d_with_indices_backward(grad: Any, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool, indices: Any) -> Any:
    """Routes each window's gradient to its (secret) argmax: one Beaver product with the one-hot
    selection kept by the forward pass, then col2im (sums overlapping windows; what lands on
    padding is dropped)."""
    if not is_shared(indices) or indices.cell.aux is None:
        raise UnsupportedOperationError(
            "max_pool2d backward on shared tensors needs the indices of a shared max_pool2d forward pass"
        )
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation)
    h, w = x.shape[-2:]
    extra = (_pool_out(h, k[0], s[0], p[0], d[0], ceil_mode)[1], _pool_out(w, k[1], s[1], p[1], d[1], ceil_mode)[1])
    like = x if is_shared(x) else indices
    n, c, oh, ow = indices.shape
    hot = SharedTensor(ShareCell(indices.cell.aux), 1, like.base, like.precision_fractional, torch.int64)
    if not is_shared(grad):
        grad = lift(grad, like)
    g = run(grad, "mul", grad.reshape(n, c, oh, ow, 1), hot, divisor=1)  # (n, c, oh, ow, kk) at grad's scale
    cols = g.permute(0, 1, 4, 2, 3).reshape(n, c * k[0] * k[1], oh * ow)
    return _col2im(cols, c, (h, w), k, d, p, s, extra)


def _col2im(cols: Any, c: int, hw: tuple[int, int], k: Any, dilation: Any, padding: Any, stride: Any, extra: tuple[int, int] = (0, 0)) -> Any:
    """col2im (the adjoint of im2col: sums each column entry into the pixel it came from) on
    shares. torch has no int64 col2im on CPU, so it is a scatter_add with a public index map
    (the im2col of the pixel numbers), local on every share. ``extra``: padding beyond the
    symmetric one on the bottom/right (ceil_mode pooling), cropped like it."""
    n, ckk, L = cols.shape
    kk = ckk // c
    hp, wp = hw[0] + 2 * padding[0] + extra[0], hw[1] + 2 * padding[1] + extra[1]
    pix = torch.arange(hp * wp, dtype=torch.float64).reshape(1, 1, hp, wp)
    index = torch.nn.functional.unfold(pix, tuple(k), dilation=tuple(dilation), stride=tuple(stride)).round().to(torch.int64)
    if index.shape[-1] != L:
        raise UnsupportedOperationError(f"col2im on shares: {L} columns for an output of {index.shape[-1]}")
    index = index.reshape(1, 1, kk * L).expand(n, c, kk * L).contiguous()
    src: Any = cols
    zeros: Any
    if is_shared(cols):
        zeros = lift(torch.zeros((n, c, hp * wp), dtype=torch.int64), cols)
    else:  # a public gradient (public output gradient and weights): plain torch
        src = public_value(cols)
        zeros = torch.zeros((n, c, hp * wp), dtype=src.dtype)
    out = torch.ops.aten.scatter_add(zeros, 2, index, src.reshape(n, c, kk * L)).reshape(n, c, hp, wp)
    if (hp, wp) != tuple(hw):
        out = out[:, :, padding[0] : padding[0] + hw[0], padding[1] : padding[1] + hw[1]]
    return out


@implements(aten.convolution_backward.default)
def _convolution_backward(
    grad: Any, x: Any, w: Any, bias_sizes: Any, stride: Any, padding: Any, dilation: Any,
    transposed: bool, output_padding: Any, groups: int, output_mask: Any,
) -> Any:
    """Gradients of conv2d as products on im2col columns (one Beaver matmul each when both
    operands are shared, a local one otherwise): with cols = im2col(x) of shape (N·L, C·kh·kw)
    and G = grad as (O, N·L), grad_w = G @ cols and grad_x = col2im(Wᵀ @ G). With ``groups`` g,
    channels and filters split into g independent blocks: the same products as one batched
    (g, ·, ·) matmul (depthwise: C = g)."""
    if len(stride) == 1:  # conv1d: the 2-d backward of its height-1 form
        gx, gw, gb = _convolution_backward(
            _as_2d(grad), _as_2d(x), _as_2d(w), bias_sizes, [1, stride[0]], [0, padding[0]], [1, dilation[0]],
            transposed, [0, output_padding[0]], groups, output_mask,
        )
        return (None if gx is None else gx.squeeze(2)), (None if gw is None else gw.squeeze(2)), gb
    if len(stride) != 2:
        raise UnsupportedOperationError(f"{len(stride)}-d convolution backward is not supported on shared tensors (1-d and 2-d are)")
    if transposed:
        # the backward of the equivalent stride-1 conv2d, mapped back through the linear maps that
        # built its operands: crop the padding and keep every stride-th pixel (the adjoint of
        # zero-stuffing), un-flip and un-swap the weight gradient
        xz, wc = _transposed_as_conv(x, w, stride, padding, dilation, output_padding, groups)
        gxz, gwc, gb = _convolution_backward(
            grad, xz, wc, bias_sizes, [1, 1], [0, 0], dilation, False, [0, 0], groups, output_mask
        )
        gx = gw = None
        if gxz is not None:
            kh, kw = w.shape[-2:]
            crop: list[int] = []
            for ax, k in ((1, kw), (0, kh)):
                lo = dilation[ax] * (k - 1) - padding[ax]
                crop += [-lo, -(lo + output_padding[ax])]
            gx = _pad_any(gxz, crop)[:, :, :: stride[0], :: stride[1]]
        if gwc is not None:
            gw = _untransposed_weight(gwc, w.shape[0], groups)
        return gx, gw, gb
    o, cg, kh, kw = w.shape
    g = int(groups)
    og, c, kk = o // g, cg * g, kh * kw
    n, _, oh, ow = grad.shape
    L = oh * ow
    g3 = grad.reshape(n, g, og, L).permute(1, 2, 0, 3).reshape(g, og, n * L)
    gx = gw = gb = None
    if output_mask[1]:
        # im2col (torch has no int64 im2col on CPU): pad, then windows as views of the shares
        xv = x if is_shared(x) else public_value(x)
        if padding[0] or padding[1]:
            xv = torch.ops.aten.constant_pad_nd(xv, [padding[1], padding[1], padding[0], padding[0]], 0)
        dk = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
        win = xv.unfold(2, dk[0], stride[0]).unfold(3, dk[1], stride[1])  # (N, C, oh, ow, dk0, dk1)
        if dilation[0] != 1 or dilation[1] != 1:
            win = win[..., :: dilation[0], :: dilation[1]]
        cols = win[:, :, :oh, :ow].reshape(n, g, cg, L, kk).permute(1, 0, 3, 2, 4).reshape(g, n * L, cg * kk)
        gw = matmul(g3, cols).reshape(o, cg, kh, kw)
    if output_mask[0]:
        dcols = matmul(w.reshape(g, og, cg * kk).transpose(1, 2), g3)  # (g, Cg*kh*kw, N*L)
        dcols = dcols.reshape(g, cg, kk, n, L).permute(3, 0, 1, 2, 4).reshape(n, c * kk, L)
        gx = _col2im(dcols, c, tuple(x.shape[-2:]), (kh, kw), tuple(dilation), tuple(padding), tuple(stride))
    if output_mask[2]:
        gb = grad.sum((0, 2, 3)) if is_shared(grad) else public_value(grad).sum((0, 2, 3))
    return gx, gw, gb


@implements(aten.max_pool2d.default)
def _max_pool2d(x: Any, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False) -> Any:
    return _max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)[0]


def _adaptive_max_window(x: Any, output_size: Any) -> tuple[int, int]:
    h, w = x.shape[-2:]
    o = list(output_size) if not isinstance(output_size, int) else [output_size] * 2
    oh, ow = (h if o[0] is None else int(o[0])), (w if o[-1] is None else int(o[-1]))
    if h % oh or w % ow:
        raise UnsupportedOperationError(
            f"adaptive_max_pool2d on shared tensors needs output sizes that divide the input ({h}x{w} -> {oh}x{ow}): "
            "its windows are then a max_pool2d's; use max_pool2d, or an input size that divides"
        )
    return h // oh, w // ow


@implements(aten.adaptive_max_pool2d.default)
def _adaptive_max_pool2d(x: Any, output_size: Any) -> Any:
    """Adaptive max pooling whose output size divides the input (global max pooling included):
    max_pool2d with kernel = stride = input/output (a tournament per window, secret indices)."""
    k = _adaptive_max_window(x, output_size)
    return _max_pool2d_with_indices(x, k, k)


@implements(aten.adaptive_max_pool2d_backward.default)
def _adaptive_max_pool2d_backward(grad: Any, x: Any, indices: Any) -> Any:
    k = _adaptive_max_window(x, tuple(grad.shape[-2:]))
    return _max_pool2d_with_indices_backward(grad, x, k, k, (0, 0), (1, 1), False, indices)


# ------------------------------------------------------------------ dropout

_DROPOUT_BITS = 20
"""Resolution of the keep probability: a mask entry is kept iff u < round((1 − p)·2^20)."""


@implements(aten.empty_like.default)
def _empty_like(x: Any, dtype: Any = None, **_: Any) -> Any:
    """A sharing of zeros like ``x`` (a public zero tensor for another dtype). torch's CPU dropout
    is ``input * empty_like(input).bernoulli_(1 − p).div_(1 − p)``: a shared buffer sends the
    ``bernoulli_`` here, so the mask is drawn by the holders together (:func:`_bernoulli_`)."""
    if dtype is not None and dtype != x.dtype:
        return torch.zeros(x.shape, dtype=dtype)
    return lift(torch.zeros(x.shape, dtype=torch.int64), x)


@implements(aten.bernoulli_.float)
def _bernoulli_(x: Any, p: float = 0.5, generator: Any = None) -> Any:
    """Fills ``x`` with a *shared* Bernoulli(p) mask that no single holder decides and nobody
    sees: each holder draws its own uniform u_i ∈ [0, M), M = 2^20 (``local_uniform``, no
    communication); s = Σ u_i is then shared, and u = s mod M is uniform as long as one holder
    drew honestly. keep = 1{u < q}, q = round(p·M), is Σ_k 1{s < kM + q} − 1{s < kM} over the
    n possible wraps k < n: one comparison with 2n public thresholds (``below_sum``: 6 rounds,
    its products riding in them). The driver and the crypto provider learn nothing of the mask
    (the comparison's openings are masked by the dealer's randomness); the fraction kept is not
    revealed either. ``generator`` is ignored: torch's seed cannot reach the holders' draws."""
    if not is_shared(x):
        raise UnsupportedOperationError("bernoulli_ of a public tensor reached the shared-tensor table")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"bernoulli_: probability {p} is not in [0, 1]")
    m = 1 << _DROPOUT_BITS
    q = int(round(float(p) * m))
    s = run(x, "local_uniform", list(x.shape), _DROPOUT_BITS, scale=1, dtype=torch.int64)
    n = x.group.n
    cuts = [k * m + q for k in range(n)] + [k * m for k in range(n)]
    one = torch.full(tuple(x.shape), x.scale, dtype=torch.int64)
    mask = below_sum(s, cuts, [one] * n + [-one] * n)  # integer sharing of keep·scale
    x.cell.shares = mask.cell.shares
    x.cell.pos_mask = x.cell.aux = None
    return x


# ------------------------------------------------------------------ losses


def _reduce(x: Any, reduction: int) -> Any:
    if reduction == 0:
        return x
    total = run(x, "aten.sum", x)
    return mul(total, 1.0 / max(1, x.numel())) if reduction == 1 else total


@implements(aten.mse_loss.default)
def _mse(x: Any, y: Any, reduction: int = 1) -> Any:
    d = sub(x, y)
    return _reduce(mul(d, d), reduction)


@implements(aten.mse_loss_backward.default)
def _mse_backward(grad: Any, x: Any, y: Any, reduction: int = 1) -> Any:
    d = sub(x, y)
    scale = 2.0 / x.numel() if reduction == 1 else 2
    return mul(mul(d, scale), grad)


def _onehot(target: Any, like: Any, n_classes: int, ignore_index: int) -> torch.Tensor:
    t = public_value(target)
    if is_shared(t):
        raise TypeError("nll_loss/cross_entropy with shared class indices: share one-hot targets instead (probability targets)")
    t = t.to(torch.int64)
    valid = t != ignore_index
    oh: torch.Tensor = torch.nn.functional.one_hot(t.clamp(min=0) * valid, n_classes) * valid.unsqueeze(-1)
    return oh.to(torch.int64)


@implements(aten.nll_loss_forward.default)
def _nll_forward(x: Any, target: Any, weight: Any, reduction: int, ignore_index: int) -> Any:
    if weight is not None or x.dim() != 2:
        raise NotImplementedError("nll_loss on shared tensors: 2-d inputs without class weights")
    oh = _onehot(target, x, x.shape[1], ignore_index)
    picked = run(x, "aten.sum_dim", mul(x, oh), [1], False)  # public one-hot: exact, local
    n = int(oh.sum())
    total = torch.tensor(float(n))
    if reduction == 0:
        return neg(picked), total
    s = neg(run(picked, "aten.sum", picked))
    return (mul(s, 1.0 / max(1, n)) if reduction == 1 else s), total


@implements(aten.nll_loss_backward.default)
def _nll_backward(grad: Any, x: Any, target: Any, weight: Any, reduction: int, ignore_index: int, total_weight: Any) -> Any:
    oh = _onehot(target, x, x.shape[1], ignore_index)
    g = grad if reduction == 0 else mul(grad, 1.0 / max(1.0, float(public_value(total_weight)))) if reduction == 1 else grad
    if reduction == 0:
        g = g.unsqueeze(1) if is_shared(g) else public_value(g).unsqueeze(1)
    return neg(mul(g, oh)) if is_shared(g) else lift(neg(mul(g, oh)), x)
