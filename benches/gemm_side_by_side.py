"""Ring GEMM kernels side by side with numpy float64 and torch int64 matmul, one thread each,
alternating in one process (best of 7 at 256^3, of 3 at 1024^3); prints GMAC/s. Run it with one
thread everywhere and OpenBLAS left to pick its own kernel:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        RAYON_NUM_THREADS=1 .venv/bin/python benches/gemm_side_by_side.py
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_info

import syft_mpc as sy
from syft_mpc import _native


def main() -> None:
    torch.set_num_threads(1)
    print("BLAS:", [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()])
    kernels = _native.gemm_kernel_info()["available"]
    for n, reps in ((256, 7), (1024, 3)):
        rng = np.random.default_rng(0)
        a, b = (rng.integers(0, 2**64, (n, n), dtype=np.uint64, endpoint=False) for _ in range(2))
        af, bf = rng.normal(size=(n, n)), rng.normal(size=(n, n))
        at, bt = torch.from_numpy(a.view(np.int64)), torch.from_numpy(b.view(np.int64))
        best: dict[str, float] = {}

        def timed(name: str, f: Callable[[], object]) -> None:
            t = time.perf_counter()
            f()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)

        for _ in range(reps):
            for k in kernels:
                _native.set_gemm_kernel(k)
                timed(k, lambda: sy.ring_matmul(a, b, threads=1))
            _native.set_gemm_kernel(None)
            timed("numpy f64", lambda: af @ bf)
            timed("torch int64", lambda: torch.matmul(at, bt))
        print(f"{n}^3:", " | ".join(f"{k} {n**3 / v / 1e9:.2f}" for k, v in best.items()))


if __name__ == "__main__":
    main()
