"""Prints a markdown table of a pytest-benchmark JSON file.

    python benches/report.py [FILE.json | DIR]     (default DIR: bench-results/, newest file)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def throughput(info: dict) -> str:
    if "GMAC/s" in info:
        s = f"{info['GMAC/s']:.2f} GMAC/s"
        if "ratio_vs_numpy_f64" in info:
            s += f" ({100 * info['ratio_vs_numpy_f64']:.0f}% of numpy f64)"
        return s
    if "elements_per_s" in info:
        return f"{info['elements_per_s'] / 1e6:.1f} M elem/s"
    return "–"


def ms(seconds: float) -> str:
    v = 1e3 * seconds
    return f"{v:.1f}" if v >= 10 else f"{v:.3g}"


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "bench-results"
    if path.is_dir():
        files = sorted(path.glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not files:
            print(f"no JSON in {path}; run `make bench` first", file=sys.stderr)
            return 1
        path = files[-1]
    data = json.loads(path.read_text())
    print(f"{path.name} ({data.get('datetime', '?')[:19]})\n")
    print("| benchmark | median ms | throughput | bytes sent / party | rounds |")
    print("|---|--:|--:|--:|--:|")
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        sent = f"{info['bytes_per_party'] / 1e6:.2f} MB" if "bytes_per_party" in info else "–"
        print(f"| {b['name'].removeprefix('test_')} | {ms(b['stats']['median'])} | {throughput(info)} | {sent} | {info.get('rounds', '–')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
