"""The float64-limb ring matmul (syft_mpc.cuda_ring) against the Rust ring kernel.

Every test runs on the CPU and, where torch sees a GPU, again on CUDA: the limb code is
the same on both, only the float64 matmul underneath differs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import I64_MAX, I64_MIN
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from syft_mpc import _native
from syft_mpc.cuda_ring import _limb_matmul, beaver_matmul_local, limb_plan, max_exact_inner, ring_matmul

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
EDGES = [0, 1, -1, I64_MIN, I64_MAX, I64_MIN + 1, 2**53, 2**53 + 1, 0xFFFF, 0x10000]

# Mostly uniform int64, often an edge value (all-ones limbs, the sign bit alone, limb borders).
int64s = st.one_of(st.integers(I64_MIN, I64_MAX), st.sampled_from(EDGES))


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b mod 2^64 by the Rust kernel (2-d or equal-batch 3-d)."""
    u = _native.ring_matmul(a.contiguous().numpy().view(np.uint64), b.contiguous().numpy().view(np.uint64))
    return torch.from_numpy(u.view(np.int64))


def uniform(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(I64_MIN, I64_MAX, shape, dtype=torch.int64, generator=gen)


def with_edges(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform values with every edge value planted at random positions."""
    t = uniform(gen, *shape).flatten()
    edges = torch.tensor(EDGES * 3, dtype=torch.int64)
    idx = torch.randperm(t.numel(), generator=gen)[: min(t.numel(), len(edges))]
    t[idx] = edges[: idx.numel()]
    return t.view(*shape)


def test_exactness_bound_is_tight() -> None:
    for width in (16, 22):
        k = max_exact_inner(width)
        assert k * (2**width - 1) ** 2 <= 2**53 < (k + 1) * (2**width - 1) ** 2
    assert max_exact_inner(22) == 512 and max_exact_inner(16) == 2_097_216
    assert limb_plan(1) == (22, 1) and limb_plan(512) == (22, 512)
    assert limb_plan(513) == (16, 2_097_216) and limb_plan(2**30) == (16, 2_097_216)


@pytest.mark.parametrize("device", DEVICES)
@given(st.data(), st.integers(0, 6), st.integers(0, 40), st.integers(0, 6))
def test_matches_rust_kernel(device: str, data: st.DataObject, m: int, k: int, n: int) -> None:
    a = torch.from_numpy(data.draw(hnp.arrays(np.int64, (m, k), elements=int64s)))
    b = torch.from_numpy(data.draw(hnp.arrays(np.int64, (k, n), elements=int64s)))
    out = ring_matmul(a, b, device)
    assert out.dtype == torch.int64 and out.device == a.device
    assert torch.equal(out, reference(a, b))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [1, 7, 256, 512, 513, 1024])
def test_inner_dimensions(device: str, k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    a, b = with_edges(gen, 9, k), with_edges(gen, k, 5)
    assert torch.equal(ring_matmul(a, b, device), reference(a, b))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [512, 513])
def test_worst_case_limbs_at_the_width_switch(device: str, k: int) -> None:
    # -1 has every limb at its maximum: each float64 sum is at its bound.
    a = torch.full((2, k), -1, dtype=torch.int64)
    b = torch.full((k, 3), -1, dtype=torch.int64)
    out = ring_matmul(a, b, device)
    assert torch.equal(out, torch.full((2, 3), k, dtype=torch.int64))  # (-1)(-1)·k
    assert torch.equal(out, reference(a, b))


@pytest.mark.parametrize("device", DEVICES)
def test_inner_dimension_beyond_the_bound_is_chunked(device: str) -> None:
    k = max_exact_inner(16) + 5  # two chunks
    gen = torch.Generator().manual_seed(3)
    a = torch.full((1, k), -1, dtype=torch.int64)
    b = torch.full((k, 2), -1, dtype=torch.int64)
    b[:, 1] = uniform(gen, k)
    b[:10, 1] = torch.tensor(EDGES, dtype=torch.int64)
    expected = reference(a, b)
    assert torch.equal(ring_matmul(a, b, device), expected)
    # Column 0 sums k·(2^16 - 1)^2, odd and above 2^53: one float64 sum over all of K rounds.
    unchunked = _limb_matmul(a.to(device), b.to(device), 16, k).cpu()
    assert not torch.equal(unchunked[:, 0], expected[:, 0])


@pytest.mark.parametrize("device", DEVICES)
def test_batched_and_broadcast_shapes(device: str) -> None:
    gen = torch.Generator().manual_seed(4)
    a, b = with_edges(gen, 3, 4, 300), with_edges(gen, 3, 300, 5)
    assert torch.equal(ring_matmul(a, b, device), reference(a, b))
    w = with_edges(gen, 300, 5)  # one matrix against a batch, as torch.matmul broadcasts
    assert torch.equal(ring_matmul(a, w, device), reference(a, w.expand(3, 300, 5)))
    assert torch.equal(ring_matmul(w.T, a.transpose(1, 2), device), reference(w.T.expand(3, 5, 300), a.transpose(1, 2)))
    v = with_edges(gen, 300)  # 1-d operands follow torch.matmul
    assert torch.equal(ring_matmul(v, w, device), reference(v[None], w)[0])
    assert torch.equal(ring_matmul(w.T, v, device), reference(w.T, v[:, None])[:, 0])
    assert torch.equal(ring_matmul(v, v, device), reference(v[None], v[:, None])[0, 0])


def test_default_device_matches() -> None:
    gen = torch.Generator().manual_seed(5)
    a, b = with_edges(gen, 6, 700), with_edges(gen, 700, 4)
    assert torch.equal(ring_matmul(a, b), reference(a, b))
    v = with_edges(gen, 700)
    assert torch.equal(ring_matmul(v, b), reference(v[None], b)[0])


def test_rejects_bad_operands() -> None:
    a = torch.zeros((2, 3), dtype=torch.int64)
    with pytest.raises(TypeError):
        ring_matmul(a.to(torch.int32), a.T)
    with pytest.raises(TypeError):
        ring_matmul(a.numpy(), a.T)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ring_matmul(a, a)
    with pytest.raises(ValueError):
        ring_matmul(torch.tensor(1), a)
    with pytest.raises(ValueError):
        beaver_matmul_local(a, a.T, a, a.T, a @ a.T, party=-1)


def additive_shares(gen: torch.Generator, x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """n uniform int64 shares of x (int64 addition wraps: sums are mod 2^64)."""
    shares = [uniform(gen, *x.shape) for _ in range(n - 1)]
    last = x.clone()
    for s in shares:
        last -= s
    return [last, *shares]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_parties", [2, 3])
@pytest.mark.parametrize("shape", [(5, 7, 3), (16, 600, 8)], ids=["22-bit-limbs", "16-bit-limbs"])
def test_beaver_matmul_reconstructs_the_product(device: str, n_parties: int, shape: tuple[int, int, int]) -> None:
    m, k, n = shape
    gen = torch.Generator().manual_seed(n_parties * 1000 + k)
    x, y = with_edges(gen, m, k), with_edges(gen, k, n)
    a, b = uniform(gen, m, k), uniform(gen, k, n)
    c = reference(a, b)  # the dealer's triple, then shared
    xs, ys = additive_shares(gen, x, n_parties), additive_shares(gen, y, n_parties)
    as_, bs, cs = (additive_shares(gen, t, n_parties) for t in (a, b, c))
    # The opening: every party publishes x_i - a_i and y_i - b_i; the sums are public.
    epsilon = sum((xi - ai for xi, ai in zip(xs, as_)), torch.zeros_like(x))
    delta = sum((yi - bi for yi, bi in zip(ys, bs)), torch.zeros_like(y))
    assert torch.equal(epsilon, x - a) and torch.equal(delta, y - b)
    z = [beaver_matmul_local(epsilon, delta, as_[i], bs[i], cs[i], party=i, device=device) for i in range(n_parties)]
    total = sum(z[1:], z[0])
    assert torch.equal(total, reference(x, y))
    assert not any(torch.equal(zi, total) for zi in z)  # no single share is the product
