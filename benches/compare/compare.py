"""syft_mpc vs CrypTen 0.4.1, side by side, in one run (issue 7). Run it with ``make compare``.

    .venv/bin/python benches/compare/compare.py [--crypten-python .venv-crypten/bin/python] [--out bench-results]

Runs, one after the other (never at the same time, so they do not compete for the cores):
plaintext torch float32, syft_mpc's protocol layer (mul, matmul, ReLU) and encrypted-tensor
layer on SocketWorkers (sigmoid, softmax, MLP) in two variants (``SYFT_VARIANTS``: the
default dealer-assisted exact truncation, then ``COMPARE_TRUNCATION=local``, the SecureML
local truncation CrypTen uses with 2 parties), then CrypTen 0.4.1 in its own virtualenv.
Every MPC process runs one thread (OMP/MKL/OpenBLAS/RAYON_NUM_THREADS=1,
``torch.set_num_threads(1)``). Prints a markdown table and writes ``compare-STAMP.json``,
``compare-STAMP.md``, ``compare-speedup.png`` and ``compare-comm.png`` into ``--out``.
If the CrypTen environment is missing or fails, the syft_mpc side is still reported.

Before the first runner and after the last, ``run_syft.py probe`` measures the host itself
(one-thread GMAC/s of the ring GEMM, torch int64 and torch float32 at 1024^3); both probes are
printed under the table and kept in the JSON, because on a shared machine the ring GEMM's
speed can move 2-3x between minutes while CrypTen's int64 matmul moves less.
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

# result key -> COMPARE_TRUNCATION of run_syft.py (protocol and tensor roles)
SYFT_VARIANTS = {"syft_mpc": "dealer", "syft_mpc_local": "local"}
TRUNCATION_NOTE = (
    "Truncation: CrypTen 0.4.1 with 2 parties truncates locally (SecureML: each party shifts its own share; "
    "no communication, a rare large error). syft_mpc's default (`syft_mpc`) is the dealer-assisted exact "
    "truncation (one extra round per truncation). `syft_mpc local-trunc.` uses the same local SecureML "
    "truncation as CrypTen (`Party.truncate_local`, `share(..., truncation=\"local\")`): the like-for-like "
    "configuration. Speed-up = CrypTen time / syft_mpc time."
)


def _run(argv: list[str], label: str, timeout_s: float, extra_env: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, str]:
    """Runs a runner; returns its RESULT object (or None) and an error text."""
    env = dict(os.environ, **ENV_ONE_THREAD, COMPARE_TIMEOUT_S=str(timeout_s), **(extra_env or {}))
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


def _speedup(res: dict[str, Any], key: str, name: str) -> float | None:
    """CrypTen time / ``key``'s time for workload ``name``, or None when one is missing."""
    s, c = res.get(key, {}).get(name, {}).get("ms"), res["crypten"].get(name, {}).get("ms")
    return c / s if s and c else None


def probe_line(probes: list[dict[str, Any]]) -> str:
    """The host probes as one line: ``kernel`` ring GEMM / torch int64 / torch f32 GMAC/s, each time."""
    if not probes:
        return "host probe: none (the probe failed; see errors)"
    cells = [f"{p['at']}: ring GEMM ({p['kernel']}) {p['ring_gemm_gmacs']:.1f}, torch int64 {p['torch_int64_gmacs']:.2f}, "
             f"torch f32 {p['torch_f32_gmacs']:.1f}" for p in probes]
    return f"host probe, one thread, {probes[0]['n']}^3, GMAC/s — " + "; ".join(cells)


def table(res: dict[str, Any]) -> str:
    rows = [TRUNCATION_NOTE, "",
            "| workload | syft_mpc ms | syft_mpc local-trunc. ms | CrypTen ms | speed-up (CrypTen / syft_mpc) | speed-up (local) "
            "| plaintext torch f32 ms | syft_mpc overhead vs plaintext |",
            "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name, w in WORKLOADS.items():
        s, sl, c, p = (res.get(k, {}).get(name, {}).get("ms") for k in ("syft_mpc", "syft_mpc_local", "crypten", "plaintext"))
        sp, spl = (f"**{v:.2f}×**" if v else "–" for v in (_speedup(res, k, name) for k in SYFT_VARIANTS))
        ov = f"{s / p:,.0f}×" if s and p else "–"
        cc = "import fails (see errors)" if "error" in res["crypten"].get(name, {}) else _fmt(c)
        rows.append(f"| {name} — {w['desc']} | {_fmt(s)} | {_fmt(sl)} | {cc} | {sp} | {spl} | {_fmt(p)} | {ov} |")
    return "\n".join(rows)


def comm_table(res: dict[str, Any]) -> str:
    rows = ["| workload | syft_mpc MB / party | syft_mpc rounds | syft_mpc local-trunc. MB / party | syft_mpc local-trunc. rounds "
            "| CrypTen MB / party | CrypTen rounds |", "|---|--:|--:|--:|--:|--:|--:|"]
    for name in WORKLOADS:
        cells = []
        for key, bytes_key in (("syft_mpc", "traffic_per_party"), ("syft_mpc_local", "traffic_per_party"), ("crypten", "bytes_per_party")):
            r = res.get(key, {}).get(name, {})
            b = r.get(bytes_key)
            cells += [_fmt(b / 1e6) if b is not None else "–", str(r.get("rounds", "–"))]
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(rows)


def plots(res: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        print("[compare] matplotlib not installed: no PNG", file=sys.stderr)
        return []
    written = []
    names = [n for n in WORKLOADS if any(_speedup(res, k, n) for k in SYFT_VARIANTS)]
    if names:
        fig, ax = plt.subplots(figsize=(10, 4.8))
        xs = np.arange(len(names))
        width = 0.8 / len(SYFT_VARIANTS)
        labels = {"dealer": "syft_mpc default (dealer truncation, exact)", "local": "syft_mpc local truncation (like CrypTen)"}
        for i, (key, trunc) in enumerate(SYFT_VARIANTS.items()):
            sp = [_speedup(res, key, n) or 0.0 for n in names]  # 0: no bar (missing result)
            pos = xs + (i - (len(SYFT_VARIANTS) - 1) / 2) * width
            colors = ["tab:green" if v >= 1 else "tab:red" for v in sp]
            ax.bar(pos, sp, width, color=colors, alpha=1.0 if trunc == "dealer" else 0.55, hatch="" if trunc == "dealer" else "//",
                   edgecolor="black", linewidth=0.5, label=labels[trunc])
            for x, v in zip(pos, sp):
                if v:
                    ax.annotate(f"{v:.2f}×", (x, v), ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel("speed-up = CrypTen time / syft_mpc time (log)")
        ax.set_title("syft_mpc (2 truncation modes) vs CrypTen 0.4.1 (local truncation): 2 parties + dealer/TTP, 1 thread each, loopback", fontsize=9)
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=25, ha="right")
        ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.3))
        fig.tight_layout()
        fig.savefig(out / "compare-speedup.png", dpi=110)
        plt.close(fig)
        written.append(str(out / "compare-speedup.png"))
    series = (("syft_mpc", "traffic_per_party", "syft_mpc (dealer trunc.)"), ("syft_mpc_local", "traffic_per_party", "syft_mpc (local trunc.)"),
              ("crypten", "bytes_per_party", "CrypTen 0.4.1 (TTP)"))
    cn = [n for n in WORKLOADS if any(bk in res.get(k, {}).get(n, {}) for k, bk, _ in series)]
    if cn:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
        xs = np.arange(len(cn))
        width = 0.8 / len(series)
        for i, (key, bk, label) in enumerate(series):
            pos = xs + (i - (len(series) - 1) / 2) * width
            a1.bar(pos, [res.get(key, {}).get(n, {}).get(bk, 0) / 1e6 for n in cn], width, label=label)
            a2.bar(pos, [res.get(key, {}).get(n, {}).get("rounds", 0) for n in cn], width, label=label)
        for ax, title in ((a1, "MB sent + received per party (log)"), (a2, "communication rounds")):
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
    res: dict[str, Any] = {"plaintext": {}, **{k: {} for k in SYFT_VARIANTS}, "crypten": {}, "errors": []}
    run_syft = str(HERE / "run_syft.py")
    runs: list[tuple[str, list[str], str, dict[str, str]]] = [("plaintext", [me, run_syft, "plaintext"], "plaintext torch float32", {})]
    for key, trunc in SYFT_VARIANTS.items():  # one variant: both syft_mpc layers with COMPARE_TRUNCATION=trunc
        runs += [(key, [me, run_syft, "protocol"], f"syft_mpc protocol layer (mul, matmul, relu), {trunc} truncation", {"COMPARE_TRUNCATION": trunc}),
                 (key, [me, run_syft, "tensor"], f"syft_mpc tensor layer (sigmoid, softmax, MLP, ResNet-18, BERT, transformer step), {trunc} truncation", {"COMPARE_TRUNCATION": trunc})]
    runs.append(("crypten", [crypten_py or "", str(HERE / "run_crypten.py"), "launch"], "CrypTen 0.4.1", {}))
    probe = ("probe", [me, run_syft, "probe"], "host probe (one-thread GEMMs)", {})
    runs = [probe, *runs, probe]
    probes: list[dict[str, Any]] = []
    for key, argv, label, extra_env in runs:
        if key == "probe":
            r, err = _run(argv, label, 300.0)
            if r is None:
                res["errors"].append(err)
            else:
                probes.append(r)
            continue
        if key == "crypten" and crypten_py is None:
            res["errors"].append(f"CrypTen: {args.crypten_python} not found (make compare creates it)")
            continue
        r, err = _run(argv, label, args.timeout, extra_env)
        if r is None:
            res["errors"].append(err)
            print(f"[compare] {err}", file=sys.stderr)
        else:
            res[key].update(r)
            for name, v in r.items():  # a workload that could not run there (CrypTen's model import)
                if isinstance(v, dict) and "error" in v:
                    res["errors"].append(f"{label}, {name}: {v['error']}")
    for r in (r for k in SYFT_VARIANTS for r in res[k].values()):  # comparable with CrypTen's count (sent + received, TTP traffic included)
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
        "host_probe": probes,
        "syft_mpc_variants": {k: f"COMPARE_TRUNCATION={v}" for k, v in SYFT_VARIANTS.items()},
        "truncation_note": TRUNCATION_NOTE,
        "workloads": WORKLOADS,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"compare-{stamp}.json").write_text(json.dumps(res, indent=1))
    md = table(res) + "\n\n" + probe_line(probes) + "\n\n" + comm_table(res)
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
