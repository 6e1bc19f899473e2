"""Before/after runs of the protocol runner, alternating two builds (A B A B ...).

    python benches/compare/ab_protocol.py --a /path/to/python_A --b /path/to/python_B \\
        --pairs 4 --only matmul_256,matmul_1024 --reps matmul_256=100,matmul_1024=10

Each run is ``run_syft.py protocol`` (dealer and two parties, one process each) with the
build's package directory first on ``PYTHONPATH``. Per run it records the median time of
each workload, the 1-minute load average before it, and the CPU time (user + system) and
minor page faults of the three processes together (``getrusage(RUSAGE_CHILDREN)``: they are
the runner's children, waited for). On a shared machine the CPU per run moves much less
than the wall time, and with three processes on two cores it is what decides the latter.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workloads import median  # noqa: E402


def one_run(pythonpath: str, only: str, reps: str, timeout_s: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=pythonpath, COMPARE_ONLY=only, COMPARE_REPS=reps)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, str(HERE / "run_syft.py"), "protocol"],
        env=env, capture_output=True, text=True, timeout=timeout_s, check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    return {
        "load": load,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "minflt": after.ru_minflt - before.ru_minflt,
        "ms": {name: r["ms"] for name, r in result.items()},
        "dealer_bytes": {name: max(s["dealer_bytes_received"] for s in r["party_stats"]) for name, r in result.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="package directory of build A (holds syft_mpc/)")
    ap.add_argument("--b", required=True, help="package directory of build B")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--only", default="matmul_256,matmul_1024", help="COMPARE_ONLY for the runner")
    ap.add_argument("--reps", default="matmul_256=100,matmul_1024=10", help="COMPARE_REPS for the runner")
    ap.add_argument("--timeout-s", type=float, default=600.0)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for i in range(args.pairs):
        for build in ("AB" if i % 2 == 0 else "BA"):
            r = one_run(args.a if build == "A" else args.b, args.only, args.reps, args.timeout_s)
            runs[build].append(r)
            print(json.dumps({"pair": i, "build": build, **r}), flush=True)
    for build, rs in runs.items():
        names = rs[0]["ms"].keys()
        summary = {n: round(median([r["ms"][n] for r in rs]), 2) for n in names}
        print(
            f"{build}: median ms {summary}; CPU s/run median {median([r['cpu_s'] for r in rs]):.2f}; "
            f"minor faults/run median {median([float(r['minflt']) for r in rs]):.0f}; "
            f"load {min(r['load'] for r in rs):.2f}-{max(r['load'] for r in rs):.2f}; "
            f"dealer bytes {rs[0]['dealer_bytes']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
