"""Smoke test of an installed syft_mpc wheel, run by ``make wheel-check`` in a fresh virtualenv
from outside the source tree (so ``import syft_mpc`` can only find the installed wheel).

    python wheel_smoke.py SOURCE_TREE

Checks: the package comes from site-packages, ``syft-mpc --version`` names the package's
version, a pointer round trip, the browser-worker page served from the installed package, and a 2-party secure matmul over worker processes (bob and
alice hold the shares, carol deals; each its own process started by ``syft-mpc worker``).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import torch

import syft_mpc as sy
from syft_mpc.net.launch import LocalWorkers

source = pathlib.Path(sys.argv[1]).resolve()
installed = pathlib.Path(sy.__file__).resolve()
assert source not in installed.parents, f"syft_mpc was imported from the source tree: {installed}"

cli = shutil.which("syft-mpc", path=str(pathlib.Path(sys.executable).parent))
assert cli is not None, "the wheel installed no syft-mpc command"
version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True, timeout=60).stdout.strip()
assert version == f"syft-mpc {sy.__version__}", (version, sy.__version__)

hook = sy.TorchHook(torch)
bob = sy.VirtualWorker(hook, id="smoke-bob")
x = torch.tensor([1.5, -2.0, 3.25])
assert torch.equal((x.send(bob) * 2).get(), x * 2)

a, w = torch.randn(8, 16), torch.randn(16, 4)
with LocalWorkers(["bob", "alice", "carol"], quiet=True) as cluster, cluster.socket_workers(hook) as (b, al, c):
    shared = a.fix_prec().share(b, al, crypto_provider=c) @ w.fix_prec().share(b, al, crypto_provider=c)
    err = float((shared.decrypt() - a @ w).abs().max())
    assert err < 1e-2, err

# the browser-worker page and its JavaScript are in the wheel, and the gateway serves them
import secrets
import urllib.request

from syft_mpc.net.gateway import GatewayServer

gw = GatewayServer("127.0.0.1", 0, secrets.token_hex(32)).start_in_thread()
try:
    for name in ("", "static/tab.mjs", "static/ring.mjs", "static/serde.mjs", "static/secagg.mjs", "static/plan.mjs"):
        with urllib.request.urlopen(f"{gw.url}/{name}", timeout=10) as r:
            assert r.status == 200 and len(r.read()) > 500, name
finally:
    gw.stop()

info = sy.native_info()
print(
    f"wheel smoke test passed: {version} from {installed.parent}, torch {torch.__version__}, "
    f"numpy {info['numpy']}, GEMM kernel {info['gemm']['chosen']}, secure matmul error {err:.1e}"
)
