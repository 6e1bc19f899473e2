"""Attention on shared tensors: softmax with public masks, ``F.scaled_dot_product_attention``,
``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` (also their fused inference paths).

**Public masks.** Causal and padding masks are public (they depend on positions and lengths, not
on the data) and put −∞ (or ``torch.finfo(dtype).min``) on the scores to leave out; neither has a
fixed-point encoding. A public addend at or below ``NEG_INF`` (−10^4: exp of it is 0 at any
precision used here), added with ``+``, ``masked_fill`` or ``where`` with a public condition, is
taken for −∞: the result holds ``MASKED_VALUE`` (−2^20) there, and the positions are recorded as a
public boolean tensor next to the result's shares (keyed by its share handle, so an in-place op
that replaces the shares forgets them). Shape ops (views, transposes, expand, clone, ...), adding,
subtracting and scaling by a positive public number carry the record along. ``softmax``,
``log_softmax`` and ``_safe_softmax`` of a tensor with a record take the maximum with those
positions at ``MASKED_VALUE`` (below any real score), and multiply the exponentials by the public
0/1 complement (an exact integer product, no truncation): masked positions come out exactly 0 and
the sum, hence 1/sum, is over the kept ones only. A row masked entirely gives zeros (as torch's
``_safe_softmax``; plain softmax would give NaN). An op that does not carry the record sees
−2^20, which a later exp would not turn into exactly 0.

**Attention.** ``_scaled_dot_product_flash_attention_for_cpu`` (what ``F.scaled_dot_product_attention``
picks on CPU), ``_scaled_dot_product_attention_math``, ``_native_multi_head_attention`` and
``_transformer_encoder_layer_fwd`` (``nn.MultiheadAttention``'s and ``nn.TransformerEncoderLayer``'s
fused inference paths) are written here as matmul – scale – masked softmax – matmul; the SDPA
backward recomputes the probabilities (dV = Pᵀ·dO, dS = P∘(dO·Vᵀ − rowsum(dO∘O)), dQ = dS·K·s,
dK = dSᵀ·Q·s). Cost of one attention: two Beaver matmuls, the max tournament (⌈log2 S⌉
comparisons), exp (8 products), one comparison and ≈ 10 products for the normalization.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable

import torch
import torch.nn.functional as F

from syft_mpc.encrypted.approx import exp, normalized_sum_reciprocal, unit_log
from syft_mpc.encrypted.arithmetic import add, mul, sub
from syft_mpc.encrypted.comparisons import max_values
from syft_mpc.encrypted.tensor import OP_TABLE, ShareHandle, SharedTensor, implements, is_shared, public_value, run
from syft_mpc.errors import UnsupportedOperationError

__all__ = ["MASKED_VALUE", "NEG_INF", "masked_positions", "masked_softmax", "scaled_dot_product_attention"]

aten = torch.ops.aten

NEG_INF = -1e4
"""A public addend at or below this is −∞ (a mask)."""
MASKED_VALUE = -(2.0**20)
"""What a masked position holds in the shares: below any score, and 2^36 at 16 bits (fits the ring)."""

_MASKS: "weakref.WeakKeyDictionary[ShareHandle, torch.Tensor]" = weakref.WeakKeyDictionary()


def masked_positions(x: Any) -> "torch.Tensor | None":
    """The public boolean tensor of ``x``'s positions that are −∞ (a mask was added), or None."""
    if not is_shared(x):
        return None
    m = _MASKS.get(x.cell.shares)
    return m if m is not None and m.shape == x.shape else None


def _record(x: Any, m: "torch.Tensor | None") -> Any:
    if is_shared(x) and m is not None and bool(m.any()):
        _MASKS[x.cell.shares] = m.expand(x.shape)
    return x


def _public_neg_inf(c: Any) -> "torch.Tensor | None":
    """Where public ``c`` is −∞ (≤ NEG_INF), or None if nowhere."""
    if is_shared(c):
        return None
    v = public_value(c)
    if isinstance(v, torch.Tensor) and v.dtype.is_floating_point:
        neg = v <= NEG_INF
        return neg if bool(neg.any()) else None
    if isinstance(v, float) and v <= NEG_INF:
        return torch.tensor(True)
    return None


def _finite(c: Any, neg: torch.Tensor) -> Any:
    v = public_value(c)
    v = v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
    return torch.where(neg, torch.zeros((), dtype=v.dtype), v)


def _set_masked(y: SharedTensor, masked: torch.Tensor) -> SharedTensor:
    """``y`` with ``masked`` positions (public) set to MASKED_VALUE and recorded: two local ops."""
    masked = masked.expand(torch.broadcast_shapes(masked.shape, y.shape))  # type: ignore[no-untyped-call]
    y = mul(y, (~masked).to(torch.int64))  # an integer factor: exact, no truncation
    y = add(y, masked.to(torch.float64) * MASKED_VALUE)
    out: SharedTensor = _record(y, masked)
    return out


def _union(shape: torch.Size, *ms: "torch.Tensor | None") -> "torch.Tensor | None":
    out = None
    for m in ms:
        if m is not None:
            m = m.expand(shape)
            out = m if out is None else out | m
    return out


# ------------------------------------------------------------------ masked softmax


def masked_softmax(x: SharedTensor, dim: int, masked: "torch.Tensor | None", lse: bool = False) -> "tuple[SharedTensor, SharedTensor | None]":
    """(softmax of ``x`` along ``dim`` with public ``masked`` positions (True) left out: exactly 0
    there, and a row masked entirely is 0; log-sum-exp of the kept ones if ``lse``)."""
    dim = dim % x.dim()
    if masked is not None:
        masked = masked.expand(x.shape)
        keep = (~masked).to(torch.int64)
        x = add(mul(x, keep), masked.to(torch.float64) * MASKED_VALUE)  # below every kept score
    m = max_values(x, dim, keepdim=True)
    e = exp(sub(x, m))
    if masked is not None:
        e = mul(e, keep)  # masked positions: exactly 0 (exp's garbage at −2^20 times an integer 0)
    s = run(e, "aten.sum_dim", e, [dim], True)
    inv, u, k = normalized_sum_reciprocal(s, x.shape[dim])
    out = mul(e, inv)
    if not lse:
        return out, None
    return out, add(add(unit_log(u), mul(k, math.log(2))), m)


def _softmax_of(x: Any, dim: int, prev: Callable[..., Any], *rest: Any) -> Any:
    m = masked_positions(x)
    if m is None:
        return prev(x, dim, *rest)
    return masked_softmax(x, dim, m)[0]


def _log_softmax_of(x: Any, dim: int, prev: Callable[..., Any], *rest: Any) -> Any:
    m = masked_positions(x)
    if m is None:
        return prev(x, dim, *rest)
    sm, lse = masked_softmax(x, dim, m, lse=True)
    assert lse is not None
    out = sub(x, lse)  # masked positions: MASKED_VALUE − lse (torch: −∞)
    out.cell.aux = sm.cell.shares  # the softmax, for _log_softmax_backward_data
    return out


# ------------------------------------------------------------------ carrying the record


def _wrap(op: Any, fn: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    prev = OP_TABLE.get(op)
    if prev is None:
        raise RuntimeError(f"internal: {op} has no implementation to extend")
    OP_TABLE[op] = fn(prev)


_CARRIED_VIEWS = [
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.permute.default, aten.transpose.int,
    aten.t.default, aten.expand.default, aten.slice.Tensor, aten.narrow.default, aten.select.int, aten.squeeze.default,
    aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default, aten.movedim.int, aten.flatten.using_ints,
]
_CARRIED_COPIES = [aten.clone.default, aten._to_copy.default, aten.detach.default, aten.alias.default]


def _carry_view(op: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(prev: Callable[..., Any]) -> Callable[..., Any]:
        def impl(x: Any, *args: Any, **kwargs: Any) -> Any:
            out = prev(x, *args, **kwargs)
            m = masked_positions(x)
            if m is not None and is_shared(out):
                _record(out, op(m.contiguous(), *args, **kwargs))
            return out

        return impl

    return wrap


def _carry_copy(prev: Callable[..., Any]) -> Callable[..., Any]:
    def impl(x: Any, *args: Any, **kwargs: Any) -> Any:
        out = prev(x, *args, **kwargs)
        m = masked_positions(x)
        if m is not None and is_shared(out) and out.shape == x.shape:
            _record(out, m)
        return out

    return impl


def _with_addend(prev: Callable[..., Any], negate_second: bool) -> Callable[..., Any]:
    def impl(a: Any, b: Any, alpha: Any = 1) -> Any:
        al = float(public_value(alpha)) if not isinstance(alpha, (int, float)) else float(alpha)
        for x, c, c_is_second in ((a, b, True), (b, a, False)):
            if not is_shared(x):
                continue
            neg = _public_neg_inf(c)
            sign = (-al if negate_second else al) if c_is_second else 1.0
            if neg is not None and sign > 0 and (c_is_second or not negate_second):
                fin = _finite(c, neg)
                y = prev(a, fin, alpha) if c_is_second else prev(fin, b, alpha)
                return _set_masked(y, _union(y.shape, neg, masked_positions(x)))  # type: ignore[arg-type]
        out = prev(a, b, alpha)
        if is_shared(out):
            keep_b = not negate_second  # x − (−∞) is not −∞: only the first operand's record carries through a subtraction
            _record(out, _union(out.shape, masked_positions(a), masked_positions(b) if keep_b else None))
        return out

    return impl


def _with_positive_factor(prev: Callable[..., Any]) -> Callable[..., Any]:
    def impl(a: Any, b: Any) -> Any:
        out = prev(a, b)
        x, c = (a, b) if is_shared(a) else (b, a)
        if is_shared(out) and not is_shared(c):
            cv = public_value(c)
            if (isinstance(cv, (int, float)) and cv > 0) or (isinstance(cv, torch.Tensor) and cv.numel() == 1 and float(cv) > 0):
                _record(out, masked_positions(x))
        return out

    return impl


def _where(prev: Callable[..., Any]) -> Callable[..., Any]:
    def impl(cond: Any, a: Any, b: Any) -> Any:
        if is_shared(cond):
            return prev(cond, a, b)
        c = public_value(cond).to(torch.bool)
        na, nb = _public_neg_inf(a), _public_neg_inf(b)
        fa = _finite(a, na) if na is not None else a
        fb = _finite(b, nb) if nb is not None else b
        y = prev(cond, fa, fb) if is_shared(fa) or is_shared(fb) else torch.where(c, public_value(fa), public_value(fb))
        if not is_shared(y):
            return y
        ma = _union(y.shape, na, masked_positions(a))
        mb = _union(y.shape, nb, masked_positions(b))
        if ma is None and mb is None:
            return y
        zero = torch.zeros(y.shape, dtype=torch.bool)
        m = torch.where(c, zero if ma is None else ma, zero if mb is None else mb)
        assert isinstance(y, SharedTensor)
        return _set_masked(y, m) if na is not None or nb is not None else _record(y, m)

    return impl


def _masked_fill(x: Any, mask: Any, value: Any) -> Any:
    if is_shared(mask):
        raise UnsupportedOperationError("masked_fill on a shared tensor takes a public mask")
    v = public_value(value)
    v = v.to(torch.float64) if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
    if is_shared(value):
        return OP_TABLE[aten.where.self](mask, value, x)
    return OP_TABLE[aten.where.self](public_value(mask).to(torch.bool), v, x)


def _masked_fill_(x: Any, mask: Any, value: Any) -> Any:
    out = _masked_fill(x, mask, value)
    m = masked_positions(out)
    x.copy_(out)
    return _record(x, m)


def _install() -> None:
    for op in _CARRIED_VIEWS:
        _wrap(op, _carry_view(op))
    for op in _CARRIED_COPIES:
        _wrap(op, _carry_copy)
    _wrap(aten.add.Tensor, lambda p: _with_addend(p, negate_second=False))
    _wrap(aten.sub.Tensor, lambda p: _with_addend(p, negate_second=True))
    for op in (aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar):
        _wrap(op, _with_positive_factor)
    _wrap(aten.where.self, _where)
    for op in (aten._softmax.default,):
        _wrap(op, lambda p: lambda x, dim, half=False: _softmax_of(x, dim, p, half))
    _wrap(aten._log_softmax.default, lambda p: lambda x, dim, half=False: _log_softmax_of(x, dim, p, half))
    OP_TABLE[aten.masked_fill.Scalar] = _masked_fill
    OP_TABLE[aten.masked_fill.Tensor] = _masked_fill
    OP_TABLE[aten.masked_fill_.Scalar] = _masked_fill_
    OP_TABLE[aten.masked_fill_.Tensor] = _masked_fill_


_install()


def _safe_softmax(x: Any, dim: int, dtype: Any = None) -> Any:
    return masked_softmax(x, dim, masked_positions(x))[0]


if hasattr(aten, "_safe_softmax"):  # torch >= 2.5 (what SDPA's math path calls); torch 2.4 has none
    OP_TABLE[aten._safe_softmax.default] = _safe_softmax


# ------------------------------------------------------------------ scaled dot-product attention


def _mask_of(attn_mask: Any, is_causal: bool, shape: "tuple[int, ...]", keep_is_true: bool = True) -> "tuple[torch.Tensor | None, torch.Tensor | None]":
    """(public boolean masked positions, public finite additive part) for scores of ``shape``
    from an SDPA-style mask (bool: True = take part; float: added) and ``is_causal``."""
    masked: "torch.Tensor | None" = None
    addend: "torch.Tensor | None" = None
    if attn_mask is not None:
        if is_shared(attn_mask):
            addend = attn_mask  # a shared additive mask: added as it is
        else:
            am = public_value(attn_mask)
            if am.dtype == torch.bool:
                masked = ~am if keep_is_true else am
            else:
                neg = am <= NEG_INF
                masked = neg if bool(neg.any()) else None
                fin = torch.where(neg, torch.zeros((), dtype=am.dtype), am)
                addend = fin if bool(fin.ne(0).any()) else None
    if is_causal:
        L, S = shape[-2], shape[-1]
        causal = torch.ones(L, S, dtype=torch.bool).tril(0).logical_not()  # torch's: aligned top-left
        masked = causal if masked is None else masked | causal
    if masked is not None:
        masked = masked.expand(shape)
    return masked, addend


def scaled_dot_product_attention(
    q: Any, k: Any, v: Any, attn_mask: Any = None, is_causal: bool = False, scale: "float | None" = None, lse: bool = False
) -> "tuple[Any, Any, Any]":
    """(output, attention probabilities, log-sum-exp or None): softmax(q·kᵀ·scale + mask)·v."""
    s = (1.0 / math.sqrt(q.shape[-1])) if scale is None else float(scale)
    scores = mul(torch.matmul(q, k.transpose(-2, -1)), s)
    masked, addend = _mask_of(attn_mask, is_causal, tuple(scores.shape))
    if addend is not None:
        scores = add(scores, addend)
    p, l = masked_softmax(scores, -1, _union(scores.shape, masked, masked_positions(scores)), lse=lse)
    return torch.matmul(p, v), p, l


def _check_sdpa(dropout_p: float, enable_gqa: bool = False) -> None:
    if dropout_p:
        raise UnsupportedOperationError("attention dropout on shared tensors is not supported: use dropout_p=0 (eval mode)")
    if enable_gqa:
        raise UnsupportedOperationError("grouped-query attention (enable_gqa) on shared tensors is not supported")


@implements(aten._scaled_dot_product_flash_attention_for_cpu.default)
def _sdpa_flash_cpu(q: Any, k: Any, v: Any, dropout_p: float = 0.0, is_causal: bool = False, *, attn_mask: Any = None, scale: Any = None) -> Any:
    _check_sdpa(dropout_p)
    out, _, l = scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, lse=True)
    return out, l.squeeze(-1)


@implements(aten._scaled_dot_product_attention_math.default)
def _sdpa_math(q: Any, k: Any, v: Any, attn_mask: Any = None, dropout_p: float = 0.0, is_causal: bool = False,
               dropout_mask: Any = None, *, scale: Any = None, enable_gqa: bool = False) -> Any:
    _check_sdpa(dropout_p, enable_gqa)
    out, p, _ = scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale)
    return out, p


@implements(aten._scaled_dot_product_flash_attention_for_cpu_backward.default)
def _sdpa_flash_cpu_backward(grad_out: Any, q: Any, k: Any, v: Any, out: Any, logsumexp: Any, dropout_p: float, is_causal: bool,
                             *, attn_mask: Any = None, scale: Any = None) -> Any:
    """Recomputes the probabilities P, then dV = Pᵀ·dO, dS = P∘(dO·Vᵀ − rowsum(dO∘O)), dQ = dS·K·s, dK = dSᵀ·Q·s."""
    _check_sdpa(dropout_p)
    s = (1.0 / math.sqrt(q.shape[-1])) if scale is None else float(scale)
    _, p, _ = scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale)
    dv = torch.matmul(p.transpose(-2, -1), grad_out)
    dp = torch.matmul(grad_out, v.transpose(-2, -1))
    d = (grad_out * out).sum(-1, keepdim=True)
    ds = p * (dp - d)
    dq = torch.matmul(ds, k) * s
    dk = torch.matmul(ds.transpose(-2, -1), q) * s
    return dq, dk, dv


# ------------------------------------------------------------------ the fused inference paths


def _mha_mask(mask: Any, mask_type: "int | None", b: int, h: int, L: int, S: int) -> "torch.Tensor | None":
    """nn.MultiheadAttention's merged mask (bool: True = masked; float: added) as an SDPA mask
    of shape (b, h, L, S) (bool: True = take part)."""
    if mask is None:
        return None
    if is_shared(mask):
        raise UnsupportedOperationError("attention masks on shared tensors must be public")
    m: torch.Tensor = public_value(mask)
    if mask_type == 1:  # key padding (b, S)
        m = m.reshape(b, 1, 1, S)
    elif mask_type == 0:  # (L, S)
        m = m.reshape(1, 1, L, S)
    else:
        m = m.reshape(b, -1, L, S)
    if m.dtype == torch.bool:
        return (~m).expand(b, h, L, S)
    return m.expand(b, h, L, S)


def _native_mha(q: Any, k: Any, v: Any, embed_dim: int, num_head: int, qkv_weight: Any, qkv_bias: Any, proj_weight: Any,
                proj_bias: Any, mask: Any = None, need_weights: bool = True, average_attn_weights: bool = True,
                mask_type: "int | None" = None) -> Any:
    """``nn.MultiheadAttention``'s fast path (batch-first inputs, packed projections)."""
    b, L, _ = q.shape
    S = k.shape[1]
    hd = embed_dim // num_head
    wq, wk, wv = qkv_weight.chunk(3, 0)
    bq, bk, bv = qkv_bias.chunk(3, 0)

    def heads(x: Any, n: int) -> Any:
        return x.reshape(b, n, num_head, hd).transpose(1, 2)

    qh, kh, vh = heads(F.linear(q, wq, bq), L), heads(F.linear(k, wk, bk), S), heads(F.linear(v, wv, bv), S)
    out, p, _ = scaled_dot_product_attention(qh, kh, vh, _mha_mask(mask, mask_type, b, num_head, L, S))
    out = F.linear(out.transpose(1, 2).reshape(b, L, embed_dim), proj_weight, proj_bias)
    if not need_weights:
        return out, torch.empty(0)
    return out, (p.mean(1) if average_attn_weights else p)


OP_TABLE[aten._native_multi_head_attention.default] = _native_mha


@implements(aten._transformer_encoder_layer_fwd.default)
def _transformer_encoder_layer(src: Any, embed_dim: int, num_heads: int, qkv_weight: Any, qkv_bias: Any, proj_weight: Any,
                               proj_bias: Any, use_gelu: bool, norm_first: bool, eps: float, norm_weight_1: Any, norm_bias_1: Any,
                               norm_weight_2: Any, norm_bias_2: Any, ffn_weight_1: Any, ffn_bias_1: Any, ffn_weight_2: Any,
                               ffn_bias_2: Any, mask: Any = None, mask_type: "int | None" = None) -> Any:
    """``nn.TransformerEncoderLayer``'s fast path: the layer's own composition (attention, two
    layer norms, a ReLU or GELU feed-forward), pre- or post-norm."""
    def sa(x: Any) -> Any:
        return _native_mha(x, x, x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, mask, False, True, mask_type)[0]

    def ff(x: Any) -> Any:
        h = F.linear(x, ffn_weight_1, ffn_bias_1)
        return F.linear(F.gelu(h) if use_gelu else F.relu(h), ffn_weight_2, ffn_bias_2)

    def ln1(x: Any) -> Any:
        return F.layer_norm(x, (embed_dim,), norm_weight_1, norm_bias_1, eps)

    def ln2(x: Any) -> Any:
        return F.layer_norm(x, (embed_dim,), norm_weight_2, norm_bias_2, eps)

    x = src
    if norm_first:
        x = x + sa(ln1(x))
        return x + ff(ln2(x))
    x = ln1(x + sa(x))
    return ln2(x + ff(x))
