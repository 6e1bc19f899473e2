"""``make compare``'s host probe (benches/compare): one-thread GEMM speeds next to every table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

COMPARE = Path(__file__).resolve().parent.parent / "benches" / "compare"


def test_probe_measures_the_chosen_kernel_and_torch() -> None:
    sys.path.insert(0, str(COMPARE))
    try:
        from compare import probe_line
        from workloads import ENV_ONE_THREAD
    finally:
        sys.path.remove(str(COMPARE))
    from syft_mpc import _native

    env = dict(os.environ, **ENV_ONE_THREAD)
    cp = subprocess.run([sys.executable, str(COMPARE / "run_syft.py"), "probe"], env=env, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    (line,) = [ln for ln in cp.stdout.splitlines() if ln.startswith("RESULT ")]
    probe = json.loads(line[len("RESULT ") :])
    assert probe["kernel"] == _native.gemm_kernel_info()["chosen"]
    assert probe["n"] == 1024
    for key in ("ring_gemm_gmacs", "torch_int64_gmacs", "torch_f32_gmacs"):
        assert 0.05 < probe[key] < 10_000, (key, probe[key])
    text = probe_line([probe, probe])
    assert text.count(f"ring GEMM ({probe['kernel']})") == 2 and f"{probe['torch_int64_gmacs']:.2f}" in text
    assert probe_line([]).startswith("host probe: none")
