"""Encrypted tensors: fixed point and additive secret sharing, with torch's autograd.

:mod:`~syft_mpc.encrypted.fixed_precision` holds the fixed-point tensor,
:mod:`~syft_mpc.encrypted.tensor` the shared tensor and its op table, and the op families fill
that table, each built on the ones before it: :mod:`~syft_mpc.encrypted.arithmetic` (linear ops,
products, matmul), :mod:`~syft_mpc.encrypted.comparisons` (comparisons, relu, max/argmax),
:mod:`~syft_mpc.encrypted.approx` (approximations, division by a shared value),
:mod:`~syft_mpc.encrypted.activations` (GELU, SiLU, ELU, hardtanh, clamp, ... and their backward),
:mod:`~syft_mpc.encrypted.normalization` (batch, layer and group norm and their backward),
:mod:`~syft_mpc.encrypted.nn_ops` (convolution, pooling, padding, interpolation, dropout, losses
and their backward passes), :mod:`~syft_mpc.encrypted.recurrent` (LSTM, and what GRU/RNN reach),
:mod:`~syft_mpc.encrypted.optim_ops` (in-place, ``out=`` and ``_foreach_`` ops for optimizers),
:mod:`~syft_mpc.encrypted.attention` (softmax with public masks, scaled dot-product and
multi-head attention, the transformer encoder layer) and :mod:`~syft_mpc.encrypted.embedding`
(lookups with public or shared indices). An aten op with no entry falls back to torch's own
decomposition of it (``tensor.decomposition_of``).
:mod:`~syft_mpc.encrypted.api` is what the hook attaches to tensors, modules, optimizers and
pointers (``fix_prec``, ``share``, ``encrypt``, ...); :mod:`~syft_mpc.encrypted.validation` the
debugging mode that checks every op against plaintext torch.

Importing this package imports every op family, so the op table is complete before any shared
tensor exists.
"""

from syft_mpc.encrypted import activations, approx, arithmetic, comparisons, embedding, nn_ops, normalization, optim_ops, recurrent, tensor
# Last: attention wraps entries the other families register (add, mul, where, softmax, views) so
# that public -inf masks travel with the shares; an entry registered after it would drop the mask.
from syft_mpc.encrypted import attention

__all__ = ["activations", "approx", "arithmetic", "attention", "comparisons", "embedding", "nn_ops", "normalization", "optim_ops", "recurrent", "tensor"]
