"""Load: 50 concurrent clients running small remote ops on one worker process.

Each client is a `SocketWorker` with its own connection to one `syft-mpc worker`, running
`(x + y).get()` on 10-element pointers in a loop (the add is posted, the get waits) for
`SYFT_MPC_LOAD_SECONDS` (default: 60 s with timing on, i.e. `make bench`; 2 s in a plain
test run). Recorded in `extra_info`: ops/s over all clients, p50/p99/max latency of one op,
and the worker's RSS and object count before and after.

The clients are 5 processes x 10 threads (`SYFT_MPC_LOAD_PROCS` changes the split), not 50
threads of one process: a large part of an op's client-side cost is Python under the GIL
(meta-tensor shape inference, encoding), so one process would measure its own GIL rather
than the worker; 50 processes would each import torch (~0.5 GB, ~4 s of CPU) for nothing. The clients still
share the machine's cores with the worker, as real clients on one host would.

After the clients disconnect (half delete their pointers first, half just go away), the
worker must be back where it was: the same object count once the grace period has freed
the abandoned objects, the same number of open files and threads, and its RSS within
RSS_SLACK_MB of the value before the load.

    python benches/bench_load.py --client PORT THREADS SECONDS    (one client process; internal)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import numpy as np
import pytest

N_CLIENTS = 50
RSS_SLACK_MB = 64  # 50 connection threads' stacks and malloc arenas may stay mapped; a leak per op would be GBs
GRACE_S = 1.0
WORKER = "load"


def _seconds(benchmark: Any) -> float:
    raw = os.environ.get("SYFT_MPC_LOAD_SECONDS")
    if raw:
        return float(raw)
    return 2.0 if getattr(benchmark, "disabled", True) else 60.0


def _proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(scope="module")
def worker() -> Iterator[Any]:
    from syft_mpc.net.launch import LocalWorkers

    with LocalWorkers([WORKER], grace_s=GRACE_S, quiet=True) as c:
        yield c


def _run_clients(port: int, token: str, procs: int, seconds: float) -> list[dict[str, Any]]:
    threads = N_CLIENTS // procs
    env = {**os.environ, "SYFT_MPC_TOKEN": token}
    cmd = [sys.executable, __file__, "--client", str(port), str(threads), str(seconds)]
    ps = [
        subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    try:
        for p in ps:  # every client connected and warmed up...
            assert p.stdout is not None and p.stdout.readline().strip() == "ready", "a client failed to start"
        for p in ps:  # ...then all start at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        out = []
        for p in ps:
            stdout, _ = p.communicate(timeout=seconds + 120)
            assert p.returncode == 0, f"a client process failed (exit {p.returncode})"
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_load_50_clients_one_worker(benchmark: Any, worker: Any) -> None:
    import torch

    import syft_mpc as sy

    seconds = _seconds(benchmark)
    procs = int(os.environ.get("SYFT_MPC_LOAD_PROCS", "5"))
    pid = worker.procs[WORKER].pid
    hook = sy.TorchHook(torch)
    obs = sy.SocketWorker(hook, id=WORKER, port=worker.port(WORKER), token=worker.token, known_workers={}, announce=False)
    try:
        # Warm the worker up (lazy imports, meta kernels, allocator) before the baseline.
        x = torch.randn(10).send(obs)
        for _ in range(200):
            (x + x).get()
        del x
        sy.local_worker.flush_gc()
        base = {"objects": obs.sync(), "rss_kb": _proc_status(pid, "VmRSS"), "fds": _fds(pid), "threads": _proc_status(pid, "Threads")}

        results = benchmark.pedantic(_run_clients, args=(worker.port(WORKER), worker.token, procs, seconds), rounds=1, iterations=1)
        peak_rss = _proc_status(pid, "VmHWM")  # the high-water mark: the peak under load

        errors = [e for r in results for e in r["errors"]]
        assert not errors, errors[:5]
        lat = np.concatenate([np.asarray(r["lat_us"], dtype=np.float64) for r in results])
        wall = max(r["wall_s"] for r in results)
        ops = int(lat.size)
        assert ops > 0

        # After they leave: the abandoned objects go after the grace period, and the
        # connection threads and sockets are gone.
        deadline = time.monotonic() + GRACE_S + 15
        now: dict[str, int] = {}
        while time.monotonic() < deadline:
            now = {"objects": obs.sync(), "fds": _fds(pid), "threads": _proc_status(pid, "Threads")}
            if all(now[k] == base[k] for k in now):
                break
            time.sleep(0.2)
        now["rss_kb"] = _proc_status(pid, "VmRSS")
        info = {
            "clients": N_CLIENTS,
            "client_processes": procs,
            "seconds": seconds,
            "ops": ops,
            "ops_per_s": ops / wall,
            "p50_us": float(np.percentile(lat, 50)),
            "p99_us": float(np.percentile(lat, 99)),
            "max_us": float(lat.max()),
            "worker_rss_mb_before": base["rss_kb"] / 1024,
            "worker_rss_mb_peak": peak_rss / 1024,
            "worker_rss_mb_after": now["rss_kb"] / 1024,
        }
        benchmark.extra_info.update(info)
        print("\n" + json.dumps(info, indent=1))
        assert now["objects"] == base["objects"], f"objects left on the worker: {now} vs {base}"
        assert now["fds"] == base["fds"] and now["threads"] == base["threads"], f"{now} vs {base}"
        assert now["rss_kb"] - base["rss_kb"] < RSS_SLACK_MB * 1024, f"RSS {now['rss_kb']} kB vs {base['rss_kb']} kB"
    finally:
        obs.close()


# ============================================================================ a client process


def _client(port: int, n_threads: int, seconds: float) -> None:
    import torch

    import syft_mpc as sy

    hook = sy.TorchHook(torch)
    token = os.environ["SYFT_MPC_TOKEN"]
    workers = [
        sy.SocketWorker(hook, id=WORKER, port=port, token=token, known_workers={}, announce=False, timeout_s=60.0)
        for _ in range(n_threads)
    ]
    pairs = [(torch.randn(10).send(w), torch.randn(10).send(w)) for w in workers]
    for x, y in pairs:
        for _ in range(5):
            (x + y).get()
    lat: list[list[int]] = [[] for _ in workers]
    errors: list[str] = []
    print("ready", flush=True)
    sys.stdin.readline()

    def run(k: int) -> None:
        x, y = pairs[k]
        out = lat[k]
        clock = time.perf_counter
        end = clock() + seconds
        try:
            while True:
                t0 = clock()
                if t0 >= end:
                    break
                (x + y).get()  # the result is moved here: nothing left to delete
                out.append(int((clock() - t0) * 1e6))
        except Exception as e:  # noqa: BLE001 - reported to the parent
            errors.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    ts = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    # Half delete their pointers before leaving, half just disconnect (freed after the grace period).
    for k in range(1, n_threads, 2):
        for p in pairs[k]:
            p._consume("abandoned")
    pairs.clear()  # the other half's deletions are queued...
    sy.local_worker.flush_gc()  # ...and sent
    for w in workers:
        w.sync()
        w.close()
    print(json.dumps({"lat_us": [v for vs in lat for v in vs], "errors": errors, "wall_s": wall}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        _client(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
