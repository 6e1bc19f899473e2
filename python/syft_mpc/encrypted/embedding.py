"""Embedding lookups on shared tensors (``nn.Embedding``, ``F.embedding``, ``aten.embedding``).

* **Public indices, shared table** (token ids a model owner sees, a shared model): a local gather
  of rows of every share (``index_select``), no communication, exact. Its backward is torch's
  decomposition of ``embedding_dense_backward`` (a local ``index_put`` with accumulation).
* **Shared indices** (integer sharing, ``ids.share(...)``; the lookup itself is secret): the
  one-hot matrix of the ids, ``onehot[i, v] = 1{ids_i = v} = 1{ids_i − v < 1} − 1{ids_i − v < 0}``,
  from *one* comparison with the two thresholds over the N·V differences (``below_sum``: one
  opening and one set of tables, 6 rounds), then one Beaver matmul ``onehot @ table`` (1 round;
  the one-hot is unscaled, so no truncation). Cost for N ids and a V × D table: the comparison on
  N·V elements and a Beaver matmul of (N × V)·(V × D): the masked one-hot (N·V) and table (V·D)
  go out from every party. Bytes and rounds are measured by ``tests/test_encrypted_transformers.py``
  and stated in ``docs/ENCRYPTED_TENSORS.md``. The backward to the table is ``onehotᵀ @ grad``
  (one more comparison, since the one-hot is recomputed, and one Beaver matmul).
  ``padding_idx`` rows get no gradient, as in torch.
"""

from __future__ import annotations

from typing import Any

import torch

from syft_mpc.encrypted.arithmetic import sub
from syft_mpc.encrypted.comparisons import below_sum
from syft_mpc.encrypted.tensor import SharedTensor, implements, is_shared, lift, public_value, run
from syft_mpc.errors import UnsupportedOperationError

__all__ = ["one_hot", "secret_embedding"]

aten = torch.ops.aten


def one_hot(ids: SharedTensor, num_classes: int) -> SharedTensor:
    """Shares of the (unscaled, integer) one-hot vectors of integer-shared ``ids``: shape (*ids.shape, V)."""
    if ids.scale != 1:
        raise TypeError("shared indices must be an integer sharing (ids.share(...) without fix_prec)")
    d = sub(ids.unsqueeze(-1), torch.arange(num_classes, dtype=torch.int64))
    return below_sum(d, [1, 0], [1, -1])


def _product(onehot: SharedTensor, table: Any) -> SharedTensor:
    """onehot (integer) @ table (fixed point, shared or public): exact, no truncation."""
    if not is_shared(table):
        table = lift(public_value(table), onehot)
    assert isinstance(table, SharedTensor)
    out = run(table, "matmul", onehot, table, divisor=1, local=False)
    return out


def secret_embedding(ids: SharedTensor, table: Any) -> SharedTensor:
    """table[ids] for shared integer ``ids`` (shape (...)) and a (V, D) table: (..., D)."""
    v, d = table.shape
    oh = one_hot(ids, v).reshape(-1, v)
    return _product(oh, table).reshape(*ids.shape, d)


@implements(aten.embedding.default)
def _embedding(weight: Any, indices: Any, padding_idx: int = -1, scale_grad_by_freq: bool = False, sparse: bool = False) -> Any:
    if is_shared(indices):
        if not is_shared(weight) and public_value(weight).dtype.is_floating_point is False:
            raise UnsupportedOperationError("a secret lookup needs a floating-point (fixed-point) table")
        return secret_embedding(indices, weight)
    idx = public_value(indices)
    return run(weight, "aten.index_select", weight, 0, idx.reshape(-1)).reshape(*idx.shape, weight.shape[1])


@implements(aten.embedding_dense_backward.default)
def _embedding_backward(grad: Any, indices: Any, num_weights: int, padding_idx: int, scale_grad_by_freq: bool) -> Any:
    if scale_grad_by_freq:
        raise UnsupportedOperationError("embedding with scale_grad_by_freq on shared tensors is not supported")
    d = grad.shape[-1]
    g = grad.reshape(-1, d)
    if is_shared(indices):
        oh = one_hot(indices, num_weights).reshape(-1, num_weights)
        if padding_idx >= 0:
            keep = torch.ones(num_weights, dtype=torch.int64)
            keep[padding_idx] = 0
            oh = run(oh, "mul_public", oh, keep)
        if not is_shared(g):
            g = lift(public_value(g), oh)
        return run(g, "matmul", oh.transpose(0, 1), g, divisor=1, local=False)
    idx = public_value(indices).reshape(-1)
    if not is_shared(g):
        return aten.embedding_dense_backward(public_value(grad), idx, num_weights, padding_idx, scale_grad_by_freq)
    if padding_idx >= 0:
        g = run(g, "mul_public", g, (idx != padding_idx).to(torch.int64).unsqueeze(1))
    zeros = lift(torch.zeros(num_weights, d, dtype=torch.int64), g)
    return run(g, "aten.index_put", zeros, [idx], g, True)
