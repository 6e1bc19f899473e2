"""Secure matrix products between separate processes over TCP.

A dealer (the crypto provider) and two parties run as separate processes on
127.0.0.1 and authenticate to each other with a random session token that is
handed over through the environment, never on a command line.

1. Real data: party 0 (the data owner) holds scikit-learn's handwritten digits
   (1797 x 64, pixels scaled to [0, 1]); party 1 (the model owner) holds a
   64 x 10 weight matrix. Each fixed-point encodes and secret-shares its own
   input, the parties multiply the shares with a Beaver triple, truncate the
   product back to 16 fractional bits, and reveal only the result.
2. A random (size x size) @ (size x size) secure matmul (default 1024^3).

For each, prints the max abs error against numpy float64, the time, and the
bytes and rounds each party used. Exits nonzero on any error or timeout.

    python examples/mpc_matmul_demo.py [--size 1024] [--timeout 120]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import secrets
import socket
import sys
import time
from typing import Any

import numpy as np

TOKEN_ENV = "SYFT_MPC_TOKEN"
FRAC_BITS = 16
SESSION = "syft-mpc-matmul-demo"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float64) / 16.0


def weights() -> np.ndarray:
    return np.random.default_rng(7).normal(0.0, 0.1, (64, 10))


def random_matrix(seed: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, (size, size))


def secure_matmul(p: Any, x: np.ndarray | None, y: np.ndarray | None, x_shape: tuple[int, int], y_shape: tuple[int, int]) -> tuple[np.ndarray, float, dict[str, int]]:
    """Party 0 owns x, party 1 owns y; both learn x @ y (and nothing else)."""
    import syft_mpc as sy

    p.open(np.zeros(1, np.uint64))  # a barrier, so the clock does not count waiting for the peer's data loading
    before = p.stats()
    start = time.perf_counter()
    xs = p.input(0, sy.encode(x, precision=FRAC_BITS) if x is not None else None, shape=x_shape)
    ys = p.input(1, sy.encode(y, precision=FRAC_BITS) if y is not None else None, shape=y_shape)
    z = p.truncate(p.matmul(xs, ys), 1 << FRAC_BITS)  # the product carries 2 * FRAC_BITS
    result = sy.decode(p.open(z), precision=FRAC_BITS)
    elapsed = time.perf_counter() - start
    after = p.stats()
    return result, elapsed, {k: after[k] - before[k] for k in after}


def party_main(party_id: int, addrs: list[str], dealer_addr: str, size: int, timeout_s: float, out: Any) -> None:
    import syft_mpc as sy

    try:
        token = os.environ[TOKEN_ENV]
        report: dict[str, Any] = {"role": f"party {party_id}"}
        with sy.Party.connect(party_id, addrs, dealer_addr, token, session=SESSION, timeout_s=timeout_s) as p:
            x = digits() if party_id == 0 else None
            w = weights() if party_id == 1 else None
            report["digits"] = secure_matmul(p, x, w, (1797, 64), (64, 10))
            a = random_matrix(1, size) if party_id == 0 else None
            b = random_matrix(2, size) if party_id == 1 else None
            report["random"] = secure_matmul(p, a, b, (size, size), (size, size))
        if party_id != 0:  # one copy of the revealed results is enough
            report["digits"] = (None,) + report["digits"][1:]
            report["random"] = (None,) + report["random"][1:]
        out.put(report)
    except BaseException as e:
        out.put({"role": f"party {party_id}", "error": f"{type(e).__name__}: {e}"})
        raise SystemExit(1) from e


def dealer_main(n_parties: int, dealer_addr: str, timeout_s: float, out: Any) -> None:
    import syft_mpc as sy

    try:
        dealer = sy.Dealer.connect(n_parties, dealer_addr, os.environ[TOKEN_ENV], session=SESSION, timeout_s=timeout_s, idle_timeout_s=timeout_s)
        served = dealer.serve()
        out.put({"role": "dealer", "served": served, "stats": dealer.stats()})
        dealer.close()
    except BaseException as e:
        out.put({"role": "dealer", "error": f"{type(e).__name__}: {e}"})
        raise SystemExit(1) from e


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="side of the random square matmul (default 1024)")
    ap.add_argument("--timeout", type=float, default=120.0, help="bound on every wait, seconds (default 120)")
    args = ap.parse_args()

    n = 2
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(n)]
    dealer_addr = f"127.0.0.1:{free_port()}"
    # Children started with "spawn" inherit the environment, not the command line.
    os.environ[TOKEN_ENV] = secrets.token_hex(32)

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=dealer_main, args=(n, dealer_addr, args.timeout, out), name="dealer")]
    procs += [ctx.Process(target=party_main, args=(i, addrs, dealer_addr, args.size, args.timeout, out), name=f"party-{i}") for i in range(n)]
    print(f"dealer on {dealer_addr}, parties on {', '.join(addrs)}; {len(procs)} processes")
    for p in procs:
        p.start()

    reports: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 4 * args.timeout + 60
    failed = False
    try:
        while len(reports) < len(procs):
            try:
                r = out.get(timeout=0.5)
                reports[r["role"]] = r
                if "error" in r:
                    failed = True
                    break
            except queue.Empty:
                if time.monotonic() > deadline:
                    print("error: the demo did not finish in time", file=sys.stderr)
                    failed = True
                    break
                if any(p.exitcode not in (None, 0) for p in procs):
                    # A process died without reporting; wait briefly for late reports.
                    time.sleep(0.5)
                    if out.empty():
                        failed = True
                        break
        for p in procs:
            p.join(timeout=10 if not failed else 1)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)

    for r in reports.values():
        if "error" in r:
            print(f"error in {r['role']}: {r['error']}", file=sys.stderr)
    for p in procs:
        if p.exitcode != 0:
            print(f"error: {p.name} exited with code {p.exitcode}", file=sys.stderr)
            failed = True
    if failed:
        return 1

    refs = {
        "digits": ("digits (1797x64) @ weights (64x10)", digits() @ weights()),
        "random": (f"random {args.size}x{args.size} @ {args.size}x{args.size}", random_matrix(1, args.size) @ random_matrix(2, args.size)),
    }
    for key, (title, ref) in refs.items():
        revealed = reports["party 0"][key][0]
        err = float(np.abs(revealed - ref).max())
        print(f"\n{title}: max abs error vs numpy float64 = {err:.3g}")
        for i in range(n):
            _, secs, st = reports[f"party {i}"][key]
            print(
                f"  party {i}: {secs:7.3f} s, sent {fmt_bytes(st['bytes_sent'])}, received {fmt_bytes(st['bytes_received'])}, "
                f"from dealer {fmt_bytes(st['dealer_bytes_received'])}, {st['rounds']} rounds"
            )
        if not err < 1e-2 * max(1.0, float(np.abs(ref).max())):
            print(f"error: {title} is wrong", file=sys.stderr)
            return 1
    d = reports["dealer"]
    print(f"\ndealer: served {d['served']} requests, sent {fmt_bytes(d['stats']['bytes_sent'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
