"""Every ring GEMM kernel this machine can run (AMX-INT8, AVX-512 IFMA, AVX-512, AVX2, portable), through the
Python API and the protocols, bit for bit against numpy's wrapping uint64 arithmetic.

A kernel the CPU or OS cannot run is reported as skipped with the reason the native module
gives (e.g. "kernel amx not run on this machine: CPUID: no AMX-TILE"), never silently passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator

import numpy as np
import pytest
import torch
from conftest import rand_u64, run_parties
from hypothesis import given, settings
from hypothesis import strategies as st

import syft_mpc as sy
from syft_mpc import _native

KERNELS = ("amx", "avx512ifma", "avx512", "avx2", "portable")
INFO = _native.gemm_kernel_info()


@pytest.fixture(
    params=[
        pytest.param(
            k,
            marks=pytest.mark.skipif(
                k not in INFO["available"],
                reason=f"kernel {k} not run on this machine ({INFO['reason']}; available: {INFO['available']})",
            ),
        )
        for k in KERNELS
    ]
)
def kernel(request: pytest.FixtureRequest) -> Iterator[str]:
    name = str(request.param)
    _native.set_gemm_kernel(name)
    try:
        yield name
    finally:
        _native.set_gemm_kernel(None)


EDGE_SIZES = (1, 3, 15, 17, 31, 33, 63, 65, 127)


@pytest.mark.parametrize("m,k,n", [(m, k, n) for m in (1, 17, 33) for k in EDGE_SIZES for n in (1, 15, 65)])
def test_odd_shapes(kernel: str, m: int, k: int, n: int) -> None:
    rng = np.random.default_rng(m * 10_000 + k * 100 + n)
    a, b = rand_u64(rng, (m, k)), rand_u64(rng, (k, n))
    np.testing.assert_array_equal(sy.ring_matmul(a, b), a @ b)


@pytest.mark.parametrize("fill", [2**64 - 1, 2**63, 0x8080_8080_8080_8080, 0])
def test_extreme_limbs(kernel: str, fill: int) -> None:
    # All-ones limbs make every byte product 255·255: the exactness edge of 32-bit tile sums.
    a = np.full((70, 1100), fill, np.uint64)
    b = np.full((1100, 40), fill, np.uint64)
    np.testing.assert_array_equal(sy.ring_matmul(a, b), a @ b)


def test_deep_inner_dimension(kernel: str) -> None:
    # k beyond one depth block (and beyond the 16384 that one 32-bit accumulation may hold).
    rng = np.random.default_rng(7)
    a, b = rand_u64(rng, (3, 20_000)), rand_u64(rng, (20_000, 5))
    ones_a, ones_b = np.full_like(a, 2**64 - 1), np.full_like(b, 2**64 - 1)
    np.testing.assert_array_equal(sy.ring_matmul(a, b), a @ b)
    np.testing.assert_array_equal(sy.ring_matmul(ones_a, ones_b), ones_a @ ones_b)


@pytest.mark.parametrize("threads", [1, 2])
def test_blocked_and_threaded(kernel: str, threads: int) -> None:
    rng = np.random.default_rng(threads)
    a, b = rand_u64(rng, (301, 1100)), rand_u64(rng, (1100, 1030))
    np.testing.assert_array_equal(sy.ring_matmul(a, b, threads=threads), a @ b)


def test_batched_strided_and_conv(kernel: str) -> None:
    rng = np.random.default_rng(11)
    a, b = rand_u64(rng, (3, 40, 70)), rand_u64(rng, (3, 70, 20))
    np.testing.assert_array_equal(sy.ring_matmul(a, b), a @ b)
    t = rand_u64(rng, (90, 50))
    np.testing.assert_array_equal(sy.ring_matmul(t.T, t), t.T @ t)  # a Fortran-ordered view
    x, w = rand_u64(rng, (2, 4, 9, 9)), rand_u64(rng, (6, 2, 3, 3))
    got = sy.ring_conv2d(x, w, (1, 2), (1, 0), (2, 1), 2)
    _native.set_gemm_kernel("portable")
    np.testing.assert_array_equal(got, sy.ring_conv2d(x, w, (1, 2), (1, 0), (2, 1), 2))


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(EDGE_SIZES), st.sampled_from(EDGE_SIZES), st.sampled_from(EDGE_SIZES), st.integers(0, 2**32))
def test_kernels_agree_with_numpy(m: int, k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rand_u64(rng, (m, k)), rand_u64(rng, (k, n))
    want = a @ b
    try:
        for name in INFO["available"]:
            _native.set_gemm_kernel(name)
            np.testing.assert_array_equal(sy.ring_matmul(a, b), want, err_msg=name)
    finally:
        _native.set_gemm_kernel(None)


@pytest.mark.parametrize("n_parties", [2, 3])
def test_secure_matmul_on_each_kernel(kernel: str, n_parties: int) -> None:
    rng = np.random.default_rng(n_parties)
    x, w = rng.normal(size=(33, 70)), rng.normal(size=(70, 17))

    def party(p: sy.Party) -> np.ndarray:
        xs = p.input(0, sy.encode(x) if p.id == 0 else None, shape=x.shape)
        ws = p.input(1, sy.encode(w) if p.id == 1 else None, shape=w.shape)
        return sy.decode(p.open(p.matmul(xs, ws, divisor=1 << 16)))

    for out in run_parties(n_parties, party):
        np.testing.assert_allclose(out, x @ w, atol=1e-2)


def test_encrypted_linear_layer_on_each_kernel(kernel: str) -> None:
    hook = sy.TorchHook(torch)
    bob, alice, carol = (sy.VirtualWorker(hook, id=f"gk-{kernel}-{n}") for n in ("bob", "alice", "carol"))
    x, w = torch.randn(20, 40), torch.randn(40, 8)
    xs = x.fix_prec().share(bob, alice, crypto_provider=carol)
    ws = w.fix_prec().share(bob, alice, crypto_provider=carol)
    torch.testing.assert_close((xs @ ws).decrypt(), x @ w, atol=2e-2, rtol=0)


def test_unknown_or_unavailable_kernel_is_refused() -> None:
    with pytest.raises(sy.ShapeError, match="unknown GEMM kernel"):
        _native.set_gemm_kernel("tpu")
    for name in set(KERNELS) - set(INFO["available"]):
        with pytest.raises(sy.ShapeError):
            _native.set_gemm_kernel(name)
    assert _native.gemm_kernel_info()["chosen"] == INFO["chosen"]


@pytest.mark.parametrize("forced", ["portable", "avx512", "bogus"])
def test_environment_variable_forces_a_kernel(forced: str) -> None:
    env = {**os.environ, "SYFT_MPC_GEMM": forced}
    code = (
        "import numpy as np, syft_mpc as sy\n"
        "a = np.arange(12, dtype=np.uint64).reshape(3, 4) * np.uint64(2**61 + 3)\n"
        "assert (sy.ring_matmul(a, a.T) == a @ a.T).all()\n"
        "i = sy.native_info()['gemm']\n"
        "print(i['chosen'], '|', i['reason'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    chosen, reason = (s.strip() for s in out.stdout.split("|", 1))
    assert "SYFT_MPC_GEMM" in reason, reason
    if forced in INFO["available"]:
        assert chosen == forced, (chosen, reason)
    else:  # a kernel this machine lacks, or no such name: the best available, and the reason says so
        assert chosen == INFO["available"][0], (chosen, reason)


def test_cli_info_names_the_kernel() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "syft_mpc", "info"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert f"ring GEMM  {INFO['chosen']}" in out and "syft_mpc " in out and "torch " in out
    assert f"ring SIMD  {_native.simd_level_info()['chosen']}" in out
    assert f"PRG        AES-128-CTR on {_native.prg_info()['chosen']}" in out


@pytest.mark.parametrize("forced", ["portable", "avx2", "avx512", "bogus"])
def test_environment_variable_forces_the_elementwise_level(forced: str) -> None:
    """``SYFT_MPC_SIMD`` picks the vector level of the element-wise passes (and with it the PRG
    path); the results are the same wrapping arithmetic at every level, and ``native_info``
    says what runs and why."""
    simd = _native.simd_level_info()
    env = {**os.environ, "SYFT_MPC_SIMD": forced}
    code = (
        "import numpy as np, syft_mpc as sy\n"
        "from syft_mpc import _native\n"
        "rng = np.random.default_rng(5)\n"
        "a, b = (rng.integers(0, 2**64, 4099, dtype=np.uint64, endpoint=False) for _ in range(2))\n"
        "with np.errstate(over='ignore'):\n"
        "    assert (_native.ring_mul(a, b) == a * b).all() and (_native.ring_add(a, b) == a + b).all()\n"
        "x, y = rng.normal(size=(3, 70)), rng.normal(size=(70, 4))\n"
        "def product(p):\n"
        "    xs = p.input(0, sy.encode(x) if p.id == 0 else None, shape=x.shape)\n"
        "    ys = p.input(1, sy.encode(y) if p.id == 1 else None, shape=y.shape)\n"
        "    return sy.decode(p.open(p.mul(p.matmul(xs, ys, divisor=2**16), p.matmul(xs, ys, divisor=2**16), divisor=2**16)))\n"
        "outs = sy.mpc.run(product, n_parties=3, timeout_s=20.0, deadline_s=60.0)\n"
        "assert np.allclose(outs[0], (x @ y) ** 2, atol=1e-2) and all(np.array_equal(outs[0], o) for o in outs)\n"
        "i = sy.native_info()\n"
        "print(i['simd']['chosen'], '|', i['simd']['reason'], '|', i['prg']['chosen'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    chosen, reason, prg = (s.strip() for s in out.stdout.split("|"))
    assert "SYFT_MPC_SIMD" in reason, reason
    if forced in simd["available"]:
        assert chosen == forced, (chosen, reason)
    else:  # a level this machine lacks, or no such name: the best available, and the reason says so
        assert chosen == simd["available"][0] and "fell back" in reason, (chosen, reason)
    prgs = _native.prg_info()["available"]
    assert prg == ("vaes" if chosen == "avx512" and "vaes" in prgs else next(p for p in prgs if p != "vaes")), (chosen, prg)
