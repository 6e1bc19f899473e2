"""The boundary between torch and the native ring, and the fixed-point codec.

Shares are ``torch.int64`` tensors in Python and ``np.uint64`` arrays (ring elements of
Z_2^64) at the native boundary: :func:`to_ring` and :func:`from_ring` are the one place that
views one as the other, without a copy. :func:`encode` and :func:`decode` map floats to and
from fixed point, ``round(x * base**precision)``, in the native codec.

    >>> import torch
    >>> from syft_mpc.fixed_point import decode, encode
    >>> encode(torch.tensor([0.5, -1.25]))
    tensor([ 32768, -81920])
    >>> decode(encode(torch.tensor([0.5, -1.25])))
    tensor([ 0.5000, -1.2500])
"""

from __future__ import annotations

import numpy as np
import torch

from syft_mpc import _native

__all__ = ["DEFAULT_BASE", "DEFAULT_PRECISION", "decode", "encode", "from_ring", "scale_of", "to_ring"]

DEFAULT_BASE = 2
DEFAULT_PRECISION = 16


def scale_of(base: int, precision: int) -> int:
    """The integer that encodes 1.0 (``base ** precision``); checks the pair is supported."""
    if base not in (2, 10):
        raise ValueError(f"fixed precision supports base 2 or 10, got base={base}")
    scale, _limit = _native.fixed_point_info(base, precision)
    return int(scale)


def encode(x: torch.Tensor, base: int = DEFAULT_BASE, precision: int = DEFAULT_PRECISION) -> torch.Tensor:
    """``round(x * base**precision)`` as int64 (raises FixedPointError for NaN or out-of-range values)."""
    if not x.dtype.is_floating_point and x.dtype != torch.bool:
        return x.to(torch.int64) * scale_of(base, precision)
    a = x.detach().to(torch.float64).contiguous().numpy()
    return torch.from_numpy(_native.encode(a, base, precision).view(np.int64))


def decode(x: torch.Tensor, base: int = DEFAULT_BASE, precision: int = DEFAULT_PRECISION, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float tensor that int64 fixed-point tensor ``x`` encodes."""
    a = x.detach().to(torch.int64).contiguous().numpy().view(np.uint64)
    return torch.from_numpy(_native.decode(a, base, precision)).to(dtype)


def to_ring(t: torch.Tensor) -> np.ndarray:
    """The ``np.uint64`` view of int64 share tensor ``t`` (a copy only if ``t`` is not contiguous)."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int64:
        raise TypeError(f"a share must be an int64 tensor, got {type(t).__name__} {getattr(t, 'dtype', '')}")
    return t.detach().contiguous().numpy().view(np.uint64)


def from_ring(a: np.ndarray) -> torch.Tensor:
    """The ``torch.int64`` view of ring array ``a``, same shape (no copy when ``a`` is contiguous;
    ``np.ascontiguousarray`` alone turns a 0-d array into shape ``(1,)``)."""
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int64)).reshape(a.shape)
