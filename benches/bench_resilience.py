"""Churn and attacks against a real worker process: the figures in docs/BENCHMARKS.md.

    PYTHONPATH=python python benches/bench_resilience.py [--cycles 10000]

1. Churn: ``--cycles`` connect / ``(x + 1).get()`` / close cycles in a row on one worker
   (grace period 60 s, so every departed client is still waiting out its grace at the
   end): cycles per second, the worker's most threads (``/proc/<pid>/task``) and RSS.
2. The latency of an honest client's ``(x + y).get()`` (connection already open), p50 and
   p99 of 200: alone, while another client's MpcJoin waits for a closed dealer port, and
   while another client's MPC multiplication waits for a stalled peer.
3. The latency of an honest connect + op + close (p50/p99 of 100) alone and while 1,000
   sockets trickle handshakes at the worker from another process (tests/_trickler.py; each
   socket reopened as soon as the worker closes it).

The attacks are the ones of tests/test_resilience.py (its functions are imported from there).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import threading
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402

import syft_mpc as sy  # noqa: E402
from syft_mpc import _native  # noqa: E402
from syft_mpc.net.addresses import free_port  # noqa: E402
from syft_mpc.net.launch import LocalWorkers  # noqa: E402
from syft_mpc.remote.messages import MpcJoin, MpcRun, Ok, Store, new_id  # noqa: E402
from syft_mpc.remote.serde import ObjRef  # noqa: E402
from _trickler import Trickler  # noqa: E402
from test_resilience import RawControl, add_get_latency, honest, n_threads, pct, rss_kb  # noqa: E402


def ms(xs: "list[float]") -> str:
    return f"p50 {pct(xs, 0.5) * 1e3:.2f} ms, p99 {pct(xs, 0.99) * 1e3:.2f} ms"


def churn(c: LocalWorkers, cycles: int) -> None:
    pid = c.procs["bbob"].pid
    with honest(c, "bbob") as w:
        add_get_latency(w, 5)
    base_t, base_rss = n_threads(pid), rss_kb(pid)
    most = base_t
    t0 = time.perf_counter()
    for i in range(cycles):
        with honest(c, "bbob") as w:
            assert (torch.tensor([float(i)]).send(w) + 1).get().item() == i + 1
        if i % 100 == 0:
            most = max(most, n_threads(pid))
    dt = time.perf_counter() - t0
    time.sleep(1.0)
    print(f"churn: {cycles} connect/op/close cycles in {dt:.1f} s = {cycles / dt:.0f} cycles/s; "
          f"threads {base_t} -> at most {most} -> {n_threads(pid)}; RSS {base_rss // 1024} -> {rss_kb(pid) // 1024} MB "
          f"({cycles} departed clients still in their grace period)")


def behind(c: LocalWorkers, label: str, stall: "threading.Thread") -> None:
    with honest(c, "bbob") as w:
        add_get_latency(w, 5)
        stall.start()
        time.sleep(0.5)
        assert stall.is_alive()
        times = add_get_latency(w, 200)
    print(f"(x + y).get() {label}: {ms(times)}")


def stalled_join(c: LocalWorkers) -> None:
    a = RawControl(c, "bbob")
    addrs = [f"127.0.0.1:{free_port('127.0.0.1')}" for _ in range(2)]
    join = MpcJoin("bench-join", 0, addrs, f"127.0.0.1:{free_port('127.0.0.1')}", "t" * 32, 10.0)
    t = threading.Thread(target=lambda: a.ask(join))
    behind(c, "behind an MpcJoin waiting for a closed dealer port", t)
    t.join(30)
    a.close()


def stalled_peer(c: LocalWorkers) -> None:
    a = RawControl(c, "bbob")
    token, session = "s" * 32, "bench-run"
    addrs = [f"127.0.0.1:{free_port('127.0.0.1')}" for _ in range(2)]
    dealer_addr = f"127.0.0.1:{free_port('127.0.0.1')}"
    made: dict[str, Any] = {}

    def dealer() -> None:
        made["dealer"] = d = _native.Dealer.connect(2, dealer_addr, token, session=session, timeout_s=20)
        try:
            d.serve()
        except Exception:
            pass

    threads = [threading.Thread(target=dealer),
               threading.Thread(target=lambda: made.setdefault("join", a.ask(MpcJoin(session, 0, addrs, dealer_addr, token, 10.0))))]
    for t in threads:
        t.start()
    me = _native.Party.connect(1, addrs, dealer_addr, token, session=session, timeout_s=20)
    threads[1].join(20)
    assert isinstance(made.get("join"), Ok)
    ids = [new_id(), new_id()]
    for oid in ids:
        a.ask(Store(oid, torch.tensor([5, 6], dtype=torch.int64)))
    run = MpcRun(session, "mul", tuple(ObjRef(i) for i in ids), {}, [new_id()])
    t = threading.Thread(target=lambda: a.ask(run))
    try:
        behind(c, "behind an MPC step waiting for a stalled peer", t)
    finally:
        me.abort()
        t.join(30)
        a.close()
        made["dealer"].close()
        threads[0].join(10)


def connect_op(c: LocalWorkers, n: int) -> "list[float]":
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        with honest(c, "bbob") as w:
            assert (torch.tensor([float(i)]).send(w) + 1).get().item() == i + 1
        times.append(time.perf_counter() - t0)
    return times


def trickle(c: LocalWorkers) -> None:
    pid = c.procs["bbob"].pid
    print(f"connect + op + close, alone: {ms(connect_op(c, 100))}")
    base = n_threads(pid)
    with Trickler(("127.0.0.1", c.port("bbob")), 1000) as flood:
        time.sleep(6.0)
        before, t0 = flood.counts(), time.monotonic()
        times = connect_op(c, 100)
        after = flood.counts()
        rate = (after["reopened"] - before["reopened"]) / (time.monotonic() - t0)
        most = n_threads(pid)
    print(f"connect + op + close, 1,000 sockets trickling ({after['open']} open at the end): {ms(times)}; "
          f"the worker closed {rate:.0f} flood sockets/s (reopened at once); worker threads {base} -> {most}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=10_000)
    args = ap.parse_args()
    hook = sy.TorchHook(torch)
    del hook
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs")
    with LocalWorkers(["bbob"], quiet=True, grace_s=60.0) as c:
        churn(c, args.cycles)
        with honest(c, "bbob") as w:
            print(f"(x + y).get() alone: {ms(add_get_latency(w, 200))}")
        stalled_join(c)
        stalled_peer(c)
        trickle(c)


if __name__ == "__main__":
    main()
