"""The workloads of the syft_mpc vs CrypTen race (issue 7), shared by every runner.

Pure Python (no torch, syft_mpc or CrypTen import), so that both virtual environments
load the same definitions. Sizes follow the issue; ``reps`` is how many timed runs each
workload gets after one untimed warm-up (every workload, both libraries: matmul 1024³
once went without, when CrypTen took 15 s per run; it takes ≈ 1.2 s on an AVX-512
machine, and a cold first run there measures page faults and lazy set-up, not the
protocol); the median is reported.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

# name -> description, layer (which syft_mpc API runs it), reps
WORKLOADS: dict[str, dict[str, Any]] = {
    "mul_1e6": {"desc": "element-wise mul, 10^6 (fixed point, with truncation)", "layer": "protocol", "n": 10**6, "reps": 5},
    "matmul_256": {"desc": "matmul 256x256x256 (fixed point, with truncation)", "layer": "protocol", "m": 256, "reps": 5},
    "matmul_1024": {"desc": "matmul 1024x1024x1024 (fixed point, with truncation)", "layer": "protocol", "m": 1024, "reps": 3},
    "relu_1e6": {"desc": "ReLU, 10^6", "layer": "protocol", "n": 10**6, "reps": 3},
    "sigmoid_1e5": {"desc": "sigmoid, 10^5", "layer": "tensor", "n": 10**5, "reps": 3},
    "softmax_1000x100": {"desc": "softmax 1000x100, dim 1", "layer": "tensor", "shape": [1000, 100], "reps": 3},
    "mlp_inference_b64": {"desc": "MLP 784-128-128-10 inference, batch 64", "layer": "tensor", "batch": 64, "reps": 5},
    "mlp_train_step_b64": {"desc": "MLP 784-128-128-10 training step (fwd, cross-entropy, bwd, SGD), batch 64", "layer": "tensor", "batch": 64, "reps": 5},
    # Real models (issue 19; built in models.py): shared weights, shared input (BERT: public token ids).
    "resnet18_inference": {"desc": "torchvision ResNet-18 (10 classes) inference, 1x3x32x32", "layer": "tensor", "model": True, "reps": 3},
    "bert_inference": {"desc": "BERT (2 layers, hidden 128, 2 heads) sequence classification, sequence 32", "layer": "tensor", "model": True, "reps": 3},
    "transformer_train_step": {"desc": "small transformer (1 encoder layer, d 32, seq 8) training step, batch 32, SGD", "layer": "tensor", "model": True, "reps": 3},
}


def _override_reps(spec: str) -> None:
    """``COMPARE_REPS="matmul_1024=10,matmul_256=100"`` sets those workloads' reps (longer runs
    for profiles and before/after comparisons; ``make compare`` leaves it unset)."""
    for item in filter(None, spec.split(",")):
        name, _, reps = item.partition("=")
        if name not in WORKLOADS or not reps.isdigit() or int(reps) < 1:
            raise SystemExit(f"COMPARE_REPS: {item!r} is not <workload>=<reps ≥ 1> (workloads: {', '.join(WORKLOADS)})")
        WORKLOADS[name]["reps"] = int(reps)


_override_reps(os.environ.get("COMPARE_REPS", ""))

MLP_SIZES = (784, 128, 128, 10)
LR = 0.1
ENV_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def emit(tag: str, obj: Any) -> None:
    """One result line on stdout that the orchestrator picks out of the noise: ``TAG {json}``."""
    sys.stdout.write(f"{tag} {json.dumps(obj)}\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_processes(argvs: list[list[str]], envs: list[dict[str, str]], timeout_s: float, what: str) -> list[list[str]]:
    """Runs the processes together and returns each one's stdout lines. Every process
    is killed if they do not all finish within ``timeout_s``; a non-zero exit raises."""
    procs = [
        subprocess.Popen(a, env=e, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        for a, e in zip(argvs, envs)
    ]
    outs: list[list[str]] = [[] for _ in procs]

    def drain(proc: "subprocess.Popen[str]", sink: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.append(line.rstrip("\n"))

    pumps = [threading.Thread(target=drain, args=(p, o), daemon=True) for p, o in zip(procs, outs)]
    for t in pumps:
        t.start()
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for t in pumps:
            t.join(5)
    if any(p.returncode for p in procs):
        raise RuntimeError(f"{what} failed: exit codes {[p.returncode for p in procs]}")
    return outs


def merge_party_results(outs: list[list[str]], world: int, bytes_key: str, api: str) -> dict[str, Any]:
    """Combines the ``PARTY {json}`` lines of the parties: a run takes as long as its
    slowest party, and bytes/rounds are the maximum over parties."""
    parties = [json.loads(line[len("PARTY ") :]) for o in outs for line in o if line.startswith("PARTY ")]
    if len(parties) != world:
        raise RuntimeError(f"{len(parties)} of {world} parties reported results")
    merged: dict[str, Any] = {}
    for name in parties[0]["results"]:
        per = [q["results"][name] for q in parties]
        times = [max(ts) for ts in zip(*(r["times_ms"] for r in per))]
        merged[name] = {
            "times_ms": times,
            "ms": median(times),
            "bytes_per_party": max(r["stats"][bytes_key] for r in per),
            "rounds": max(r["stats"]["rounds"] for r in per),
            "party_stats": [r["stats"] for r in per],
            "api": api,
        }
    return merged
