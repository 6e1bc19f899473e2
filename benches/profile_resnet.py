"""Per-layer profile of encrypted ResNet-18 inference (torchvision ``resnet18(num_classes=10)``,
one 1×3×32×32 image): 2 share holders + a crypto provider as ``syft-mpc worker`` processes (one
thread each), the driver in this process; or VirtualWorkers (``--virtual``).

    PYTHONPATH=python .venv/bin/python benches/profile_resnet.py [--virtual] [--reps 3]

Prints the end-to-end time (reveal included; min and median of ``--reps`` runs after a warm-up),
plaintext torch's time, and per layer kind: time (a run where every leaf module waits for its
results: the sum is a little above the end-to-end time), rounds and bytes per party (another run,
from the holders' session counters).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = "1"  # the workers inherit it

import argparse
import copy
import json
import statistics
import sys
import time
from collections import defaultdict
from typing import Any, Callable

import torch
import torch.nn as nn

import syft_mpc as sy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare"))
import models as compare_models  # noqa: E402  (the ResNet-18 the make-compare rows run)

torch.set_num_threads(1)


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return f"conv{m.kernel_size[0]}x{m.kernel_size[1]}"
    return type(m).__name__


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]


def _hooked(model: nn.Module, at_boundary: Callable[[], Any], record: Callable[[str, Any, Any], None]) -> list[Any]:
    """Forward pre/post hooks on every leaf module: ``record(kind, before, after)`` with what
    ``at_boundary`` returns on each side (a time after a flush, or the traffic counters)."""
    handles = []
    for _, m in _leaves(model):
        state: dict[str, Any] = {}

        def pre(mod: nn.Module, inp: Any, state: dict[str, Any] = state) -> None:
            state["t"] = at_boundary()

        def post(mod: nn.Module, inp: Any, out: Any, state: dict[str, Any] = state) -> None:
            record(_kind(mod), state["t"], at_boundary())

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def profile(ws: tuple[Any, ...], reps: int) -> dict[str, Any]:
    bob, alice, james = ws
    model = compare_models.resnet18()
    x = torch.randn(1, 3, 32, 32)
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = model(x)
    plain_s = [0.0] * 5
    for i in range(5):
        t0 = time.perf_counter()
        with torch.no_grad():
            model(x)
        plain_s[i] = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = copy.deepcopy(model).fix_precision().share(bob, alice, crypto_provider=james)
    share_model_s = time.perf_counter() - t0
    sx = x.fix_prec().share(bob, alice, crypto_provider=james)
    group = sx.group

    def infer() -> torch.Tensor:
        with torch.no_grad():
            out: Any = enc(sx)
            return out.decrypt()

    logits = infer()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        logits = infer()
        times.append(time.perf_counter() - t0)

    per_time: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def now() -> float:
        group.flush()
        return time.perf_counter()

    def rec_t(kind: str, a: float, b: float) -> None:
        per_time[kind] += b - a
        counts[kind] += 1

    hs = _hooked(enc, now, rec_t)
    t0 = time.perf_counter()
    infer()
    hooked_total = time.perf_counter() - t0
    for h in hs:
        h.remove()

    per_rounds: dict[str, int] = defaultdict(int)
    per_bytes: dict[str, int] = defaultdict(int)

    def counters() -> dict[str, dict[str, int]]:
        return group.stats()

    def rec_s(kind: str, a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> None:
        per_rounds[kind] += max(b[w]["rounds"] - a[w]["rounds"] for w in b)
        per_bytes[kind] += max(b[w]["bytes_sent"] - a[w]["bytes_sent"] for w in b)

    s0 = group.stats()
    hs = _hooked(enc, counters, rec_s)
    infer()
    for h in hs:
        h.remove()
    s_mid = group.stats()
    infer()
    s1 = group.stats()
    total_rounds = max(s1[w]["rounds"] - s_mid[w]["rounds"] for w in s1)
    total_bytes = max(s1[w]["bytes_sent"] - s_mid[w]["bytes_sent"] for w in s1)
    del s0
    return {
        "error_max_abs": float((logits - ref).abs().max()),
        "logit_scale": float(ref.abs().max()),
        "same_argmax": bool(logits.argmax() == ref.argmax()),
        "share_model_s": share_model_s,
        "plaintext_s_min": min(plain_s),
        "inference_s": times,
        "hooked_total_s": hooked_total,
        "total_rounds": total_rounds,
        "total_bytes_sent_per_party": total_bytes,
        "layers": {
            k: {"calls": counts[k], "time_s": per_time[k], "rounds": per_rounds[k], "bytes_sent": per_bytes[k]}
            for k in sorted(per_time, key=lambda k: -per_time[k])
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--virtual", action="store_true", help="VirtualWorkers in this process (parties still use loopback TCP)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    hook = sy.TorchHook(torch)
    if args.virtual:
        ws = tuple(sy.VirtualWorker(hook, id=f"prof_{n}") for n in ("bob", "alice", "james"))
        res = profile(ws, args.reps)
    else:
        from syft_mpc.net.launch import LocalWorkers

        with LocalWorkers(["bob", "alice", "james"], grace_s=1.0, quiet=True) as c, c.socket_workers(hook) as ws:
            res = profile(ws, args.reps)
    res["mode"] = "virtual" if args.virtual else "socket (3 worker processes)"
    json.dump(res, sys.stdout, indent=1)
    print()
    total = sum(v["time_s"] for v in res["layers"].values())
    print(f"\nend-to-end: min {min(res['inference_s']):.3f} s, median {statistics.median(res['inference_s']):.3f} s; "
          f"plaintext {res['plaintext_s_min'] * 1e3:.1f} ms; {res['total_rounds']} rounds, "
          f"{res['total_bytes_sent_per_party'] / 1e6:.1f} MB sent per party; error {res['error_max_abs']:.2e} (scale {res['logit_scale']:.2f})")
    print("\n| layer kind | calls | time (s) | share | rounds | MB sent / party |\n|---|--:|--:|--:|--:|--:|")
    for k, v in res["layers"].items():
        print(f"| {k} | {v['calls']} | {v['time_s']:.3f} | {100 * v['time_s'] / total:.0f} % | {v['rounds']} | {v['bytes_sent'] / 1e6:.2f} |")


if __name__ == "__main__":
    main()
