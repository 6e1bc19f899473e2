"""syft_mpc vs CrypTen 0.4.1, side by side, in one run (issue 7). Run it with ``make compare``.

    .venv/bin/python benches/compare/compare.py [--crypten-python .venv-crypten/bin/python] [--out bench-results]

Runs, one after the other (never at the same time, so they do not compete for the cores):
plaintext torch float32, syft_mpc's protocol layer (mul, matmul, ReLU), syft_mpc's
encrypted-tensor layer on SocketWorkers (sigmoid, softmax, MLP), then CrypTen 0.4.1 in its
own virtualenv. Every MPC process runs one thread (OMP/MKL/OpenBLAS/RAYON_NUM_THREADS=1,
``torch.set_num_threads(1)``). Prints a markdown table and writes ``compare-STAMP.json``,
``compare-STAMP.md``, ``compare-speedup.png`` and ``compare-comm.png`` into ``--out``.
If the CrypTen environment is missing or fails, the syft_mpc side is still reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workloads import ENV_ONE_THREAD, WORKLOADS  # noqa: E402


def _run(argv: list[str], label: str, timeout_s: float) -> tuple[dict[str, Any] | None, str]:
    """Runs a runner; returns its RESULT object (or None) and an error text."""
    env = dict(os.environ, **ENV_ONE_THREAD, COMPARE_TIMEOUT_S=str(timeout_s))
    print(f"[compare] {label} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        cp = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s + 60)
    except subprocess.TimeoutExpired:
        return None, f"{label}: timed out after {timeout_s + 60:.0f} s"
    print(f"[compare] {label} done in {time.perf_counter() - t:.1f} s (exit {cp.returncode})", file=sys.stderr, flush=True)
    for line in cp.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :]), ""
    tail = (cp.stderr or cp.stdout).strip().splitlines()[-15:]
    return None, f"{label} failed (exit {cp.returncode}):\n" + "\n".join(tail)


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def _versions(crypten_python: str | None) -> dict[str, str]:
    import torch

    import syft_mpc

    v = {"syft_mpc": syft_mpc.__version__, "torch": torch.__version__}
    if crypten_python:
        try:
            cp = subprocess.run([crypten_python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, timeout=120)
            v["torch (crypten venv)"] = cp.stdout.strip()
            cp = subprocess.run([crypten_python, "-m", "pip", "show", "crypten"], capture_output=True, text=True, timeout=120)
            v["crypten"] = next((ln.split(":", 1)[1].strip() for ln in cp.stdout.splitlines() if ln.startswith("Version:")), "?")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return v


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if x < 10 else f"{x:,.0f}" if x >= 1000 else f"{x:.1f}"


def table(res: dict[str, Any]) -> str:
    rows = ["| workload | syft_mpc ms | CrypTen ms | speed-up (CrypTen / syft_mpc) | plaintext torch f32 ms | syft_mpc overhead vs plaintext |",
            "|---|--:|--:|--:|--:|--:|"]
    for name, w in WORKLOADS.items():
        s = res["syft_mpc"].get(name, {}).get("ms")
        c = res["crypten"].get(name, {}).get("ms")
        p = res["plaintext"].get(name, {}).get("ms")
        sp = f"**{c / s:.2f}×**" if s and c else "–"
        ov = f"{s / p:,.0f}×" if s and p else "–"
        rows.append(f"| {name} — {w['desc']} | {_fmt(s)} | {_fmt(c)} | {sp} | {_fmt(p)} | {ov} |")
    return "\n".join(rows)


def comm_table(res: dict[str, Any]) -> str:
    rows = ["| workload | syft_mpc MB / party | syft_mpc rounds | CrypTen MB / party | CrypTen rounds |", "|---|--:|--:|--:|--:|"]
    for name in WORKLOADS:
        s, c = res["syft_mpc"].get(name, {}), res["crypten"].get(name, {})
        sb = s.get("traffic_per_party")
        cb = c.get("bytes_per_party")
        rows.append(
            f"| {name} | {_fmt(sb / 1e6) if sb is not None else '–'} | {s.get('rounds', '–')} | "
            f"{_fmt(cb / 1e6) if cb is not None else '–'} | {c.get('rounds', '–')} |"
        )
    return "\n".join(rows)


def plots(res: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[compare] matplotlib not installed: no PNG", file=sys.stderr)
        return []
    written = []
    names = [n for n in WORKLOADS if res["syft_mpc"].get(n, {}).get("ms") and res["crypten"].get(n, {}).get("ms")]
    if names:
        sp = [res["crypten"][n]["ms"] / res["syft_mpc"][n]["ms"] for n in names]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        colors = ["tab:green" if v >= 1 else "tab:red" for v in sp]
        bars = ax.bar(names, sp, color=colors)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel("speed-up = CrypTen time / syft_mpc time (log)")
        ax.set_title("syft_mpc vs CrypTen 0.4.1: 2 parties + dealer/TTP, 1 thread each, loopback")
        for b, v in zip(bars, sp):
            ax.annotate(f"{v:.2f}×", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
        plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
        fig.tight_layout()
        fig.savefig(out / "compare-speedup.png", dpi=110)
        plt.close(fig)
        written.append(str(out / "compare-speedup.png"))
    cn = [n for n in WORKLOADS if "traffic_per_party" in res["syft_mpc"].get(n, {}) or "bytes_per_party" in res["crypten"].get(n, {})]
    if cn:
        import numpy as np

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
        xs = np.arange(len(cn))
        sb = [res["syft_mpc"].get(n, {}).get("traffic_per_party", 0) / 1e6 for n in cn]
        cb = [res["crypten"].get(n, {}).get("bytes_per_party", 0) / 1e6 for n in cn]
        sr = [res["syft_mpc"].get(n, {}).get("rounds", 0) for n in cn]
        cr = [res["crypten"].get(n, {}).get("rounds", 0) for n in cn]
        for ax, a, b, title in ((a1, sb, cb, "MB sent + received per party (log)"), (a2, sr, cr, "communication rounds")):
            ax.bar(xs - 0.2, a, 0.4, label="syft_mpc")
            ax.bar(xs + 0.2, b, 0.4, label="CrypTen 0.4.1 (TTP)")
            ax.set_xticks(xs)
            ax.set_xticklabels(cn, rotation=25, ha="right")
            ax.set_title(title)
            ax.legend()
        a1.set_yscale("log")
        fig.suptitle("per op, max over the 2 parties", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "compare-comm.png", dpi=110)
        plt.close(fig)
        written.append(str(out / "compare-comm.png"))
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crypten-python", default=".venv-crypten/bin/python")
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--timeout", type=float, default=900.0, help="per runner, seconds")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    me = sys.executable
    crypten_py = args.crypten_python if Path(args.crypten_python).exists() else None
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_before = os.getloadavg()
    res: dict[str, Any] = {"plaintext": {}, "syft_mpc": {}, "crypten": {}, "errors": []}
    for key, argv, label in (
        ("plaintext", [me, str(HERE / "run_syft.py"), "plaintext"], "plaintext torch float32"),
        ("syft_mpc", [me, str(HERE / "run_syft.py"), "protocol"], "syft_mpc protocol layer (mul, matmul, relu)"),
        ("syft_mpc", [me, str(HERE / "run_syft.py"), "tensor"], "syft_mpc tensor layer (sigmoid, softmax, MLP)"),
        ("crypten", [crypten_py or "", str(HERE / "run_crypten.py"), "launch"], "CrypTen 0.4.1"),
    ):
        if key == "crypten" and crypten_py is None:
            res["errors"].append(f"CrypTen: {args.crypten_python} not found (make compare creates it)")
            continue
        r, err = _run(argv, label, args.timeout)
        if r is None:
            res["errors"].append(err)
            print(f"[compare] {err}", file=sys.stderr)
        else:
            res[key].update(r)
    for r in res["syft_mpc"].values():  # comparable with CrypTen's count (sent + received, TTP traffic included)
        st = r.get("party_stats")
        if st:
            r["traffic_per_party"] = max(s["bytes_sent"] + s["bytes_received"] + s["dealer_bytes_received"] for s in st)
    res["meta"] = {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": _machine(),
        "versions": _versions(crypten_py),
        "command": "make compare",
        "threads": ENV_ONE_THREAD,
        "workloads": WORKLOADS,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"compare-{stamp}.json").write_text(json.dumps(res, indent=1))
    md = table(res) + "\n\n" + comm_table(res)
    (out / f"compare-{stamp}.md").write_text(md + "\n")
    pngs = plots(res, out)
    print(md)
    m = res["meta"]
    print(f"\n{m['machine']['cpu']}, {m['machine']['cores']} cores; {m['versions']}; load average "
          f"{m['load_average_before'][0]:.2f} before, {m['load_average_after'][0]:.2f} after; {started} – {m['finished']}")
    print(f"wrote {out / f'compare-{stamp}.json'}, {out / f'compare-{stamp}.md'}" + "".join(f", {p}" for p in pngs))
    for e in res["errors"]:
        print(f"\nERROR {e}")
    return 1 if not res["syft_mpc"] else 0


if __name__ == "__main__":
    sys.exit(main())
