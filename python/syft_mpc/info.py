"""What this installation runs on: versions, the CPU features the kernels use, and the
kernels chosen — what ``syft-mpc info`` prints and what a bug report needs.

    >>> import syft_mpc as sy
    >>> info = sy.native_info()
    >>> info["gemm"]["chosen"] in info["gemm"]["available"]
    True
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

from syft_mpc import _native
from syft_mpc.net.env import ENV_TLS_CA, ENV_TOKEN

__all__ = ["CPU_FLAGS", "native_info", "report"]

CPU_FLAGS = (
    "avx2", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vnni", "amx_tile", "amx_int8",
    "aes", "vaes", "pclmulqdq", "vpclmulqdq", "sha_ni",
)
"""The ``/proc/cpuinfo`` flags the native kernels (or their candidates) use."""


def _cpu() -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (Linux; elsewhere what platform knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == platform.machine():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return model, [f for f in CPU_FLAGS if f in flags]


def _version(dist: str) -> "str | None":
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def native_info() -> dict[str, Any]:
    """Versions (syft_mpc, Python, torch, numpy — read from the installed packages, without
    importing torch), the CPU, its flags that matter, the ring GEMM kernel chosen and why
    (``gemm``: see :func:`syft_mpc._native.gemm_kernel_info`), the vector level of the
    element-wise ring passes and why (``simd``), the PRG's AES-CTR path (``prg``), the
    per-frame MAC's POLYVAL implementation (``frame_mac``), and the environment that
    changes behaviour (thread pool size, a forced kernel or level, TLS and token settings present)."""
    model, flags = _cpu()
    return {
        "syft_mpc": _native.__version__,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "platform": platform.platform(),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "cpu_flags": flags,
        "gemm": dict(_native.gemm_kernel_info()),
        "simd": dict(_native.simd_level_info()),
        "prg": dict(_native.prg_info()),
        "frame_mac": dict(_native.frame_mac_info()),
        "tls": "TLS 1.3 (rustls, ring provider) built in",
        "env": {
            name: os.environ.get(name)
            for name in ("RAYON_NUM_THREADS", "SYFT_MPC_GEMM", "SYFT_MPC_SIMD", ENV_TLS_CA)
            if os.environ.get(name) is not None
        }
        | ({ENV_TOKEN: "set"} if os.environ.get(ENV_TOKEN) else {}),
    }


def report(info: "dict[str, Any] | None" = None) -> str:
    """:func:`native_info` as text, one fact a line."""
    i = native_info() if info is None else info
    g, v = i["gemm"], i["simd"]
    lines = [
        f"syft_mpc {i['syft_mpc']}  (Python {i['python']}, torch {i['torch'] or 'not installed'}, "
        f"numpy {i['numpy'] or 'not installed'})",
        f"platform   {i['platform']}",
        f"cpu        {i['cpu']} ({i['cpu_count']} logical CPUs)",
        f"cpu flags  {' '.join(i['cpu_flags']) or 'none of ' + ', '.join(CPU_FLAGS)}",
        f"ring GEMM  {g['chosen']} (available: {', '.join(g['available'])}): {g['reason']}",
        f"ring SIMD  {v['chosen']} (available: {', '.join(v['available'])}): {v['reason']}",
        f"PRG        AES-128-CTR on {i['prg']['chosen']} (available: {', '.join(i['prg']['available'])})",
        f"frame MAC  POLYVAL on {i['frame_mac']['chosen']} (available: {', '.join(i['frame_mac']['available'])})",
        f"tls        {i['tls']}",
        "workers    `syft-mpc worker` listens on 127.0.0.1:8777 unless given --host/--port",
    ]
    if i["env"]:
        lines.append("env        " + " ".join(f"{k}={v}" for k, v in sorted(i["env"].items())))
    return "\n".join(lines)
