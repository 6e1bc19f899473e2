"""Sessions over TCP on 127.0.0.1: parties and dealer on threads, and as processes (the demo)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from conftest import free_port, rand_u64

import syft_mpc as sy

ROOT = Path(__file__).resolve().parents[1]


def tcp_session(n: int, fns: list[Callable[[sy.Party], Any]], timeout_s: float = 20.0, token: str | None = None) -> list[Any]:
    """Dealer and n parties on threads of this process, connected over TCP."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(n)]
    dealer_addr = f"127.0.0.1:{free_port()}"
    token = token or secrets.token_hex(32)
    session = f"test-{secrets.token_hex(4)}"
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def dealer_main() -> None:
        try:
            d = sy.Dealer.connect(n, dealer_addr, token, session=session, timeout_s=timeout_s)
            d.serve()
            d.close()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def party_main(i: int) -> None:
        try:
            with sy.Party.connect(i, addrs, dealer_addr, token, session=session, timeout_s=timeout_s) as p:
                results[i] = fns[i](p)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=dealer_main, daemon=True)]
    threads += [threading.Thread(target=party_main, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "TCP session did not finish"
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("n", [2, 3])
def test_tcp_mul_matmul(n: int, rng: np.random.Generator) -> None:
    x, y = rand_u64(rng, (40, 30)), rand_u64(rng, (30, 20))
    xs, ys = sy.share(x, n), sy.share(y, n)
    out = tcp_session(n, [lambda p: (p.mul(xs[p.id], xs[p.id]), p.matmul(xs[p.id], ys[p.id]))] * n)
    np.testing.assert_array_equal(sy.reconstruct([o[0] for o in out]), x * x)
    np.testing.assert_array_equal(sy.reconstruct([o[1] for o in out]), x @ y)


def test_tcp_large_tensor(rng: np.random.Generator) -> None:
    """Two million elements (16 MB per share): multi-frame messages, full-duplex exchange."""
    n_elems = 2_000_000
    a = rng.normal(0, 10, n_elems)
    b = rng.normal(0, 10, n_elems)
    ea, eb = sy.encode(a), sy.encode(b)

    def fn(p: sy.Party) -> tuple[np.ndarray, dict[str, int]]:
        xa = p.input(0, ea if p.id == 0 else None, shape=ea.shape)
        xb = p.input(1, eb if p.id == 1 else None, shape=eb.shape)
        prod = p.truncate(p.mul(xa, xb), 1 << 16)
        return sy.decode(p.open(prod)), p.stats()

    (r0, s0), (r1, s1) = tcp_session(2, [fn, fn], timeout_s=60)
    np.testing.assert_array_equal(r0, r1)
    exact = sy.decode(ea) * sy.decode(eb)
    assert np.abs(r0 - exact).max() <= 2.0 / 2**16
    assert s0["rounds"] == 3  # mul, truncate, open
    payload = 8 * n_elems * (2 + 1 + 1)  # ε and δ, the masked truncation input, the opening
    assert payload <= s0["bytes_sent"] <= payload + 64  # + set-up (pairwise seed)


def test_tcp_wrong_token_is_rejected() -> None:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    dealer_addr = f"127.0.0.1:{free_port()}"
    good, bad = secrets.token_hex(32), secrets.token_hex(32)
    errors: dict[str, BaseException] = {}

    def run(name: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            errors[name] = e

    threads = [
        threading.Thread(target=run, args=("dealer", lambda: sy.Dealer.connect(2, dealer_addr, good, timeout_s=2))),
        threading.Thread(target=run, args=("p0", lambda: sy.Party.connect(0, addrs, dealer_addr, bad, timeout_s=2))),
        threading.Thread(target=run, args=("p1", lambda: sy.Party.connect(1, addrs, dealer_addr, good, timeout_s=2))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(errors.get("p0"), sy.TransportError), errors
    assert isinstance(errors.get("dealer"), sy.TransportError), errors
    assert any(isinstance(e, sy.AuthenticationError) for e in errors.values()), errors


def test_short_token_is_refused() -> None:
    with pytest.raises(sy.ShapeError, match="token"):
        sy.Party.connect(0, ["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:3", "short")


def test_tcp_peer_vanishes_mid_protocol() -> None:
    """Party 0 drops its connections after one operation; party 1's next round fails fast, naming it."""
    x = np.arange(100, dtype=np.uint64)
    seen: dict[str, Any] = {}

    def p0(p: sy.Party) -> None:
        p.open(x)
        p.abort()

    def p1(p: sy.Party) -> None:
        p.open(x)
        start = time.monotonic()
        try:
            p.open(x)
        except sy.TransportError as e:
            seen["err"], seen["elapsed"] = e, time.monotonic() - start
        p.abort()

    tcp_session(2, [p0, p1], timeout_s=3.0)
    err = seen["err"]
    assert "party 0" in str(err) and err.peer == "party 0", err
    assert seen["elapsed"] < 3.5


def test_demo_runs_as_separate_processes() -> None:
    """The demo: dealer and two parties as separate processes (spawn), over TCP."""
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mpc_matmul_demo.py"), "--size", "128"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "max abs error" in proc.stdout
