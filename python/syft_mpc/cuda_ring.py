"""Z_2^64 matmul as float64 matmuls on limbs, for GPUs (optional; the CPU default is Rust).

GPUs have no fast 64-bit integer matmul, but they do have fast float64 matmul (on
H100-class GPUs it runs on the FP64 tensor cores). CrypTen (Knott et al., "CrypTen:
Secure Multi-Party Computation Meets Machine Learning", NeurIPS 2021;
``crypten/cuda/cuda_tensor.py``) computes its int64 ring products that way, and so
does this module:

* each 64-bit value is split into ``L`` limbs of ``w`` bits, ``x = Σ_i x_i 2^(w·i)``,
  ``0 ≤ x_i < 2^w``, held as float64;
* ``A·B mod 2^64 = Σ_{i,j} (A_i·B_j) · 2^(w·(i+j)) mod 2^64``; the pairs with
  ``w·(i+j) ≥ 64`` vanish mod 2^64 and are skipped (10 of 16 pairs kept for 16-bit
  limbs, 6 of 9 for 22-bit limbs);
* every ``A_i·B_j`` is a float64 matmul whose entries are sums of ``K`` products of
  integers below ``2^w``. Integers up to 2^53 are exact in float64 and every term is
  non-negative, so every partial sum (in any summation order, with or without FMA)
  is exact as long as ``K·(2^w − 1)^2 ≤ 2^53``;
* each exact result is converted to int64, shifted and added with wrapping int64
  arithmetic.

Limb width from the inner dimension ``K`` (:func:`limb_plan`): 22-bit limbs (3 limbs,
6 products) while ``K ≤ 512``; 16-bit limbs (4 limbs, 10 products) up to
``K ≤ 2,097,216`` (about 2^21); beyond that K is split into chunks of at most that size,
each chunk exact, and the chunk results added mod 2^64. Chunking adds no products,
where narrower limbs would (21 products for 11-bit limbs).

Correctness needs IEEE float64 products and sums: a float64 emulation with fewer
mantissa bits (such as cuBLAS's opt-in fixed-point FP64 emulation math mode) could
break it, which is why the tests run on every available device.

Shares are ``torch.int64`` tensors holding the two's complement view of u64 ring
elements (as in :mod:`syft_mpc.encrypted.tensor`); int64 addition, multiplication and left
shifts wrap, which is arithmetic mod 2^64.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from syft_mpc import _native
from syft_mpc.fixed_point import from_ring, to_ring  # the int64 <-> u64 share boundary

__all__ = ["beaver_matmul_local", "limb_plan", "max_exact_inner", "ring_matmul"]

Device = Union[str, torch.device]

_MANTISSA_LIMIT = 1 << 53  # float64 holds every integer up to here exactly
_WIDE = 22  # 3 limbs (22, 22, 20 bits): fewest products, for short inner dimensions
_NARROW = 16  # 4 limbs: exact for inner dimensions up to about 2^21


def max_exact_inner(width: int) -> int:
    """Largest inner dimension K for which a float64 matmul of ``width``-bit limbs is exact:
    K·(2^width − 1)^2 ≤ 2^53."""
    return _MANTISSA_LIMIT // ((1 << width) - 1) ** 2


def limb_plan(k: int) -> tuple[int, int]:
    """(limb width in bits, largest K chunk) for inner dimension ``k``."""
    if k <= max_exact_inner(_WIDE):
        return _WIDE, max(k, 1)
    return _NARROW, max_exact_inner(_NARROW)


def _limbs(x: torch.Tensor, width: int) -> torch.Tensor:
    """float64 limbs of int64 ``x``, stacked on a new leading dimension (least significant
    first). The arithmetic right shift smears the sign bit, and the mask removes it."""
    n = -(-64 // width)
    shifts = torch.arange(n, device=x.device, dtype=torch.int64) * width
    return ((x.unsqueeze(0) >> shifts.view(-1, *([1] * x.dim()))) & ((1 << width) - 1)).to(torch.float64)


def _limb_matmul(a: torch.Tensor, b: torch.Tensor, width: int, max_inner: int) -> torch.Tensor:
    """a @ b mod 2^64 for int64 ``a`` (..., M, K) and ``b`` (..., K, N) on their device, on
    limbs of ``width`` bits with K split into chunks of at most ``max_inner``."""
    n_limbs = -(-64 // width)
    k = a.shape[-1]
    shifts = torch.arange(n_limbs, device=a.device, dtype=torch.int64) * width
    out: Optional[torch.Tensor] = None
    for k0 in range(0, max(k, 1), max_inner):
        al = _limbs(a[..., k0 : k0 + max_inner], width)
        bl = _limbs(b[..., k0 : k0 + max_inner, :], width)
        # The limb axis of `a` has to sit left of every batch axis of the broadcast.
        while al.dim() < bl.dim():
            al = al.unsqueeze(1)
        for j in range(n_limbs):
            # Limbs i = 0 .. n_limbs-1-j of `a` times limb j of `b`: exactly the pairs with
            # width·(i+j) < 64, in one matmul (a 2-d `b` folds the limb axis into the rows).
            p = torch.matmul(al[: n_limbs - j], bl[j]).to(torch.int64)
            s = shifts[j:].view(-1, *([1] * (p.dim() - 1)))
            term = (p << s).sum(0)
            out = term if out is None else out + term
    assert out is not None
    return out


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64:
            raise TypeError(f"ring_matmul: {name} must be a torch.int64 tensor (a u64 ring view)")
    if a.device != b.device:
        raise ValueError(f"ring_matmul: operands on different devices ({a.device}, {b.device})")
    if a.dim() == 0 or b.dim() == 0:
        raise ValueError("ring_matmul: operands must have at least one dimension")
    ka = a.shape[-1]
    kb = b.shape[-2] if b.dim() > 1 else b.shape[0]
    if ka != kb:
        raise ValueError(f"ring_matmul: inner dimensions differ ({tuple(a.shape)} @ {tuple(b.shape)})")


def ring_matmul(a: torch.Tensor, b: torch.Tensor, device: Optional[Device] = None) -> torch.Tensor:
    """``a @ b`` in Z_2^64 for int64 tensors, with torch.matmul's shape rules (1-d operands,
    broadcast batch dimensions). The result is an int64 tensor on the operands' device.

    ``device``: where the limb path runs (inputs are copied there and the result back).
    ``None`` picks the fastest available: CUDA (the operands' CUDA device, else the current
    one) when torch sees a GPU; otherwise the Rust CPU kernel for 2-d and equal-batch 3-d
    operands, which is several times faster than limbs on a CPU
    (``benches/bench_cuda_ring.py``), and the limb path on the CPU for other shapes.
    An explicit device, ``"cpu"`` included, always takes the limb path.
    """
    _check(a, b)
    home = a.device
    if device is None:
        if home.type == "cuda":
            device = home
        elif torch.cuda.is_available():
            device = torch.device("cuda")
        elif (a.dim() == b.dim() == 2) or (a.dim() == b.dim() == 3 and a.shape[0] == b.shape[0]):
            return from_ring(_native.ring_matmul(to_ring(a), to_ring(b)))
        else:
            device = home
    dev = torch.device(device)
    a, b = a.to(dev), b.to(dev)
    # torch.matmul's 1-d rules, applied by hand: the limb axis is a leading batch axis.
    squeeze_a, squeeze_b = a.dim() == 1, b.dim() == 1
    if squeeze_a:
        a = a.unsqueeze(0)
    if squeeze_b:
        b = b.unsqueeze(1)
    width, max_inner = limb_plan(a.shape[-1])
    out = _limb_matmul(a, b, width, max_inner)
    if squeeze_a:
        out = out.squeeze(-2)
    if squeeze_b:
        out = out.squeeze(-1)
    return out.to(home)


def beaver_matmul_local(
    epsilon: torch.Tensor,
    delta: torch.Tensor,
    a_share: torch.Tensor,
    b_share: torch.Tensor,
    c_share: torch.Tensor,
    party: int,
    device: Optional[Device] = None,
) -> torch.Tensor:
    """Party ``party``'s share of ``x @ y`` after the Beaver opening (Beaver 1991).

    ``epsilon = x − a`` and ``delta = y − b`` are the opened public values, ``(a_share,
    b_share, c_share)`` the party's shares of the triple ``c = a @ b``. The share is
    ``c_i + ε·b_i + a_i·δ``, and party 0 adds ``ε·δ``, folded into ``ε·(b_0 + δ)`` so
    every party runs two matmuls (as the Rust protocol does). All int64 (u64 ring views),
    on one device; ``device`` as for :func:`ring_matmul`.
    """
    if party < 0:
        raise ValueError(f"beaver_matmul_local: party must be ≥ 0, got {party}")
    right = b_share + delta if party == 0 else b_share
    return c_share + ring_matmul(epsilon, right, device) + ring_matmul(a_share, delta, device)
