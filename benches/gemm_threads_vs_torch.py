"""The AVX-512 ring GEMMs (IFMA, vpmullq) against torch's int64 matmul at 1024^3, on one thread
each and at each one's default thread count (``sy.ring_matmul`` uses every core; torch's int64
matmul runs on one thread whatever ``torch.set_num_threads`` says). Alternating rounds, best of 3
per cell after a warm-up; needs a CPU with AVX-512 IFMA:

    .venv/bin/python benches/gemm_threads_vs_torch.py [ROUNDS]
"""

import os
import sys
import time

import numpy as np
import torch

import syft_mpc as sy
from syft_mpc import _native

n = 1024
rng = np.random.default_rng(0)
a, b = (rng.integers(0, 2**64, (n, n), dtype=np.uint64, endpoint=False) for _ in range(2))
at, bt = torch.from_numpy(a.view(np.int64)), torch.from_numpy(b.view(np.int64))
cores = os.cpu_count()
def best(f, reps=3):
    f(); t = float("inf")
    for _ in range(reps):
        s = time.perf_counter(); f(); t = min(t, time.perf_counter() - s)
    return n**3 / t / 1e9
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
for r in range(rounds):
    row = {}
    for k in ("avx512ifma", "avx512"):
        _native.set_gemm_kernel(k)
        row[f"{k} 1t"] = best(lambda: sy.ring_matmul(a, b, threads=1))
        row[f"{k} {cores}t"] = best(lambda: sy.ring_matmul(a, b))
    _native.set_gemm_kernel(None)
    torch.set_num_threads(1); row["torch 1t"] = best(lambda: at @ bt)
    torch.set_num_threads(cores); row[f"torch {cores}t"] = best(lambda: at @ bt)
    print(time.strftime("%H:%M:%S"), " | ".join(f"{k} {v:.2f}" for k, v in row.items()),
          f"| ifma/torch 1t {row['avx512ifma 1t']/row['torch 1t']:.2f} | ifma/torch default {row[f'avx512ifma {cores}t']/row[f'torch {cores}t']:.2f}", flush=True)
