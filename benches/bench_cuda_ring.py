"""Z_2^64 matmul 1024^3 on float64 limbs (syft_mpc.cuda_ring) on every available device,
against the Rust CPU ring kernel and torch float64 matmul on the same device.

The limb path costs 10 float64 matmuls of the same size (16-bit limbs, K = 1024 > 512),
plus the limb split and the int64 shift-and-add, so its bound is about a tenth of the
float64 figure on the same device. CPU runs use torch's and the Rust pool's default
thread counts (recorded in extra_info). CUDA timings synchronize the device after every
call.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from bench_ring import gmacs

from syft_mpc import _native
from syft_mpc.cuda_ring import limb_plan, ring_matmul

N = 1024
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def synced(device: str, fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """fn, then wait for the device, so that the timer sees the finished kernel."""
    if device != "cuda":
        return fn

    def run() -> torch.Tensor:
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def info(benchmark: Any, device: str) -> None:
    benchmark.extra_info.update(macs=N**3, device=device)
    if device == "cuda":
        benchmark.extra_info["gpu"] = torch.cuda.get_device_name()
    else:
        benchmark.extra_info["threads"] = torch.get_num_threads()


def operands(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-(2**63), 2**63 - 1, (N, N), dtype=torch.int64, generator=g) for _ in range(2))
    return a.to(device), b.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_limb_ring_matmul_1024(benchmark: Any, device: str) -> None:
    a, b = operands(device)
    ring_matmul(a, b, device)  # warm-up (CUDA context, cuBLAS handles)
    out = benchmark.pedantic(synced(device, lambda: ring_matmul(a, b, device)), rounds=5, warmup_rounds=1)
    assert out.device.type == device
    ref = _native.ring_matmul(a[:2].cpu().numpy().view(np.uint64), b.cpu().numpy().view(np.uint64))
    assert np.array_equal(out[:2].cpu().numpy().view(np.uint64), ref)  # spot check
    width, _ = limb_plan(N)
    info(benchmark, device)
    benchmark.extra_info.update(limb_bits=width, float64_matmuls=10 if width == 16 else 6)
    gmacs(benchmark, N**3)


def test_rust_ring_matmul_1024_cpu(benchmark: Any) -> None:
    a, b = (t.numpy().view(np.uint64) for t in operands("cpu"))
    benchmark.pedantic(_native.ring_matmul, args=(a, b), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(macs=N**3, device="cpu", threads="all (Rust pool)")
    gmacs(benchmark, N**3)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_float64_matmul_1024(benchmark: Any, device: str) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn((N, N), dtype=torch.float64, generator=g).to(device) for _ in range(2))
    torch.matmul(a, b)
    benchmark.pedantic(synced(device, lambda: torch.matmul(a, b)), rounds=5, warmup_rounds=1)
    info(benchmark, device)
    gmacs(benchmark, N**3)
