"""Recurrent layers on shared tensors: ``nn.LSTM`` (forward and backward) and what ``nn.GRU`` /
``nn.RNN`` reach.

On CPU, torch runs each LSTM layer as one ``aten.mkldnn_rnn_layer`` (below autograd, with
``mkldnn_rnn_layer_backward`` as its derivative), so both are implemented here as the LSTM
equations on shares (Hochreiter & Schmidhuber 1997, in PyTorch's gate order i, f, g, o):

* forward: the input projection of every time step as one matmul, then per step one matmul
  ``h @ W_hhᵀ`` (a Beaver matmul with shared weights), the three sigmoid gates and the tanh
  gate (as 2·σ(2x) − 1) in *one* sigmoid call, ``c = f·c + i·g`` as one Beaver product of the
  stacked pairs, ``tanh(c)`` and ``h = o·tanh(c)``: ≈ 2 sigmoid evaluations (8 rounds each) and
  3 product rounds per step. The gates and cells are kept (shared) as the layer's workspace.
* backward (backpropagation through time): the gates' derivative factors for all steps at
  once (two batched products), then per step, in reverse, two batched products and one matmul
  ``dgates @ W_hh``; the weight gradients and the input gradient are one matmul each over all
  steps.

GRU and the Elman RNN have no CPU fused kernel: torch composes them from ``linear``,
``unsafe_chunk``/``unsafe_split``, in-place ``sigmoid_``/``tanh_``/``add_``/``mul_``, which
autograd differentiates; the splits are views of the shares here.
"""

from __future__ import annotations

from typing import Any

import torch

from syft_mpc.encrypted.arithmetic import add, matmul, mul, sub
from syft_mpc.encrypted.tensor import implements, is_shared, lift, public_value
from syft_mpc.errors import UnsupportedOperationError

__all__: list[str] = []

aten = torch.ops.aten

_LSTM_MODE = 2  # ideep::rnn_kind::LSTM, the ``mode`` torch passes to mkldnn_rnn_layer


@implements(aten.unsafe_split.Tensor)
def _unsafe_split(x: Any, split_size: int, dim: int = 0) -> Any:
    return aten.split.Tensor(x, split_size, dim)


@implements(aten.unsafe_split_with_sizes.default)
def _unsafe_split_with_sizes(x: Any, sizes: Any, dim: int = 0) -> Any:
    return aten.split_with_sizes.default(x, sizes, dim)


@implements(aten.unsafe_chunk.default)
def _unsafe_chunk(x: Any, chunks: int, dim: int = 0) -> Any:
    return x.chunk(chunks, dim)


@implements(aten.new_empty_strided.default)
def _new_empty_strided(x: Any, size: Any, stride: Any, dtype: Any = None, **_: Any) -> Any:
    """Autograd's buffer when a gradient's strides differ from its input's (it then ``copy_``s
    the gradient in): a (trivial) sharing of zeros like ``x``, so the copy stays shared."""
    if dtype is not None and dtype != x.dtype:
        return torch.zeros(tuple(size), dtype=dtype)
    return lift(torch.zeros(tuple(size), dtype=torch.int64), x)


@implements(aten.transpose_.default)
def _transpose_(x: Any, dim0: int, dim1: int) -> Any:
    """In-place transpose (a batch_first GRU's output): the tensor's own sizes and strides are
    swapped by torch's metadata-only kernel (Python dispatch off, so it never reads data), and
    the tensor becomes a transposed view of the cell it had (as in torch, where only its
    metadata changes: its aliases keep their layout, and its in-place ops reach them)."""
    new = aten.transpose.int(x, dim0, dim1)
    with torch._C._DisableTorchDispatch():
        aten.transpose_.default(x, dim0, dim1)
    x.cell = new.cell
    return x


def _pv(v: Any) -> Any:
    return v if is_shared(v) else public_value(v)


def _cat(parts: list[Any], dim: int) -> Any:
    """torch.cat of shared and public parts (public ones become trivial sharings), or plain
    torch when every part is public."""
    parts = [_pv(p) for p in parts]
    return torch.cat(parts, dim)


def _sigmoid(x: Any) -> Any:
    return torch.sigmoid(x) if is_shared(x) else torch.sigmoid(public_value(x))


@implements(aten._pack_padded_sequence.default)
def _pack_padded_sequence(*_: Any, **__: Any) -> Any:
    raise UnsupportedOperationError(
        "packed sequences (nn.utils.rnn.pack_padded_sequence) are not supported on shared tensors: "
        "run the recurrent layer on the padded batch and pick each sequence's last step with a one-hot mask"
    )


@implements(aten.mkldnn_rnn_layer.default)
def _lstm_layer(
    x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, hx: Any, cx: Any, reverse: bool, batch_sizes: Any,
    mode: int, hidden_size: int, num_layers: int, has_biases: bool, bidirectional: bool, batch_first: bool, train: bool,
) -> tuple[Any, Any, Any, Any]:
    """One LSTM layer over (T, B, I) (torch has already moved the batch to dimension 1): the
    outputs (T, B, H), h_T, c_T and the workspace (T, B, 6H) = [i, f, g, o, c, tanh c] per step."""
    if mode != _LSTM_MODE:
        raise UnsupportedOperationError(f"mkldnn_rnn_layer mode {mode} on shared tensors (only LSTM, mode 2, is)")
    if batch_sizes:
        raise UnsupportedOperationError("packed sequences (PackedSequence) are not supported by the shared LSTM; pad them")
    t_len, b, _ = x.shape
    h_sz = int(hidden_size)
    pre = matmul(_pv(x).reshape(t_len * b, -1), _pv(w_ih).t())
    if has_biases:
        pre = add(pre, add(_pv(b_ih), _pv(b_hh)))
    pre = pre.reshape(t_len, b, 4 * h_sz)
    h, c = _pv(hx).reshape(b, h_sz), _pv(cx).reshape(b, h_sz)
    whh_t = _pv(w_hh).t()
    outs: list[Any] = [None] * t_len
    work: list[Any] = [None] * t_len
    for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
        gates = add(pre[t], matmul(h, whh_t))
        gi, gf, gg, go = gates.split(h_sz, 1)
        s = _sigmoid(_cat([gi, gf, go, mul(gg, 2)], 1))  # tanh(g) = 2·σ(2g) − 1, in the same call
        i, f, o, s2 = s.split(h_sz, 1)
        g = sub(mul(s2, 2), 1)
        fc_ig = mul(_cat([f, i], 1), _cat([c, g], 1))
        a, bb = fc_ig.split(h_sz, 1)
        c = add(a, bb)
        tc = torch.tanh(_pv(c))
        h = mul(o, tc)
        outs[t] = h
        work[t] = _cat([i, f, g, o, c, tc], 1)
    out = torch.stack([_pv(v) for v in outs], 0)
    ws = torch.stack([_pv(v) for v in work], 0)
    return out, h.reshape(_pv(hx).shape), c.reshape(_pv(cx).shape), ws


@implements(aten.mkldnn_rnn_layer_backward.default)
def _lstm_layer_backward(
    x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, hx: Any, cx: Any, output: Any, hy: Any, cy: Any,
    grad_output: Any, grad_hy: Any, grad_cy: Any, reverse: bool, mode: int, hidden_size: int, num_layers: int,
    has_biases: bool, train: bool, bidirectional: bool, batch_sizes: Any, batch_first: bool, workspace: Any,
) -> tuple[Any, ...]:
    """Backpropagation through time for :func:`_lstm_layer` from its workspace. Returns the
    gradients of (input, W_ih, W_hh, b_ih, b_hh, h_0, c_0)."""
    t_len, b, _ = x.shape
    h_sz = int(hidden_size)
    i, f, g, o, c, tc = _pv(workspace).split(h_sz, 2)
    order = list(range(t_len - 1, -1, -1)) if reverse else list(range(t_len))
    # the state each step started from, in time index order
    h0, c0 = _pv(hx).reshape(1, b, h_sz), _pv(cx).reshape(1, b, h_sz)
    outp = _pv(output)
    if reverse:
        h_prev, c_prev = _cat([outp[1:], h0], 0), _cat([c[1:], c0], 0)
    else:
        h_prev, c_prev = _cat([h0, outp[:-1]], 0), _cat([c0, c[:-1]], 0)
    # derivative factors of every step at once: σ' = σ(1 − σ), tanh' = 1 − tanh²
    sq = mul(_cat([i, f, o, g, tc], 2), _cat([sub(1, i), sub(1, f), sub(1, o), g, tc], 2))
    d_i, d_f, d_o, g2, tc2 = sq.split(h_sz, 2)
    fac = mul(_cat([tc, g, c_prev, i, o], 2), _cat([d_o, d_i, d_f, sub(1, g2), sub(1, tc2)], 2))
    k_o, k_i, k_f, k_g, k_c = fac.split(h_sz, 2)  # d(pre_o)/dh, d(pre_i)/dc, d(pre_f)/dc, d(pre_g)/dc, dc/dh
    gout = _pv(grad_output) if grad_output is not None else torch.zeros(t_len, b, h_sz)
    dh: Any = _pv(grad_hy).reshape(b, h_sz) if grad_hy is not None else torch.zeros(b, h_sz)
    dc: Any = _pv(grad_cy).reshape(b, h_sz) if grad_cy is not None else torch.zeros(b, h_sz)
    w_hh_v = _pv(w_hh)
    dgates: list[Any] = [None] * t_len
    for t in reversed(order):
        dh = add(gout[t], dh)
        r = mul(_cat([dh, dh], 1), _cat([k_c[t], k_o[t]], 1))
        dcc, d_pre_o = r.split(h_sz, 1)
        dc = add(dcc, dc)
        r = mul(_cat([dc, dc, dc, dc], 1), _cat([k_i[t], k_f[t], k_g[t], f[t]], 1))
        d_pre_i, d_pre_f, d_pre_g, dc = r.split(h_sz, 1)
        dgates[t] = _cat([d_pre_i, d_pre_f, d_pre_g, d_pre_o], 1)
        dh = matmul(dgates[t], w_hh_v)
    dg = torch.stack([_pv(v) for v in dgates], 0).reshape(t_len * b, 4 * h_sz)
    dgt = dg.t()
    gx = matmul(dg, _pv(w_ih)).reshape(x.shape)
    gw_ih = matmul(dgt, _pv(x).reshape(t_len * b, -1))
    gw_hh = matmul(dgt, _pv(h_prev).reshape(t_len * b, h_sz))
    gb = dg.sum(0) if has_biases else None
    return gx, gw_ih, gw_hh, gb, gb, dh.reshape(_pv(hx).shape), dc.reshape(_pv(cx).shape)
