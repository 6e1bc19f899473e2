"""TLS between drivers and workers, between workers, and on the MPC data plane.

A throwaway CA and worker certificate are made at test time with the ``openssl`` command
(the same commands as in ``docs/WORKERS.md``); no private key lives in the repository.
Worker processes are started by ``LocalWorkers`` inside ``with`` blocks or fixtures, so they
stop also when a test fails.
"""

from __future__ import annotations

import gc
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import numpy as np
import pytest
import torch

import syft_mpc as sy
from syft_mpc import _native
from syft_mpc.net.env import ENV_TLS_CA
from syft_mpc.net.launch import LocalWorkers, release_socket_workers
from syft_mpc.mpc_session import close_all_sessions

from conftest import free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]
hook = sy.TorchHook(torch)
TOKEN = "tls-test-token-0123456789"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: pathlib.Path, name: str) -> None:
    """``name.pem`` (self-signed CA certificate) and ``name.key``."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def make_cert(d: pathlib.Path, name: str, ca: str, san: str) -> None:
    """``name.pem`` and ``name.key``: a server certificate for ``san``, signed by ``ca``."""
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


class Pki:
    def __init__(self, d: pathlib.Path) -> None:
        self.dir = d
        self.ca, self.cert, self.key = (str(d / n) for n in ("ca.pem", "worker.pem", "worker.key"))
        self.other_ca = str(d / "other-ca.pem")
        self.named_cert, self.named_key = str(d / "named.pem"), str(d / "named.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "worker", "ca", "DNS:localhost,IP:127.0.0.1")
    make_cert(d, "named", "ca", "DNS:bob.example")
    return Pki(d)


_made: "list[sy.SocketWorker]" = []


@pytest.fixture(scope="module")
def cluster(pki: Pki) -> Iterator[LocalWorkers]:
    with LocalWorkers(
        ["bob", "alice", "carol"], grace_s=1.0, quiet=True, tls_cert=pki.cert, tls_key=pki.key, tls_ca=pki.ca
    ) as c:
        try:
            yield c
        finally:
            release_socket_workers(_made)  # what the tests left, while the workers still run
            _made.clear()


def connect(c: LocalWorkers, name: str, **kw: Any) -> sy.SocketWorker:
    w = sy.SocketWorker(hook, id=name, host="127.0.0.1", port=c.port(name), token=c.token, **kw)
    _made.append(w)
    return w


def test_driver_and_worker_to_worker_over_tls(cluster: LocalWorkers, pki: Pki) -> None:
    assert cluster.env[ENV_TLS_CA] == pki.ca
    bob, alice = connect(cluster, "bob", tls_ca=pki.ca), connect(cluster, "alice", tls_ca=pki.ca)
    assert bob._conn is not None and bob._conn.tls and "TLS" in repr(bob._conn)
    x = torch.tensor([1.0, 2.0, 3.0]).send(bob)
    y = (x * 2 + 1).sum()
    assert y.get().item() == 15.0
    big = torch.randn(1 << 20)  # 4 MB each way, spread over many TLS records
    assert torch.equal(big.send(bob).get(), big)
    # bob -> alice directly: bob connects to alice as a TLS client with its --tls-ca
    m = torch.tensor([4, 5, 6]).send(bob).move(alice)
    assert m.location == alice and torch.equal(m.get(), torch.tensor([4, 5, 6]))
    chain = torch.tensor([1, 2]).send(bob).send(alice)
    assert torch.equal((chain + chain).get().get(), torch.tensor([2, 4]))


def test_ca_from_the_environment(cluster: LocalWorkers, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TLS_CA, pki.ca)
    bob = connect(cluster, "bob")
    assert bob.tls_ca == pki.ca and bob._conn is not None and bob._conn.tls
    assert torch.equal(torch.tensor([1]).send(bob).get(), torch.tensor([1]))


def test_encrypted_mul_between_tls_workers(cluster: LocalWorkers, pki: Pki) -> None:
    bob, alice, carol = (connect(cluster, n, tls_ca=pki.ca) for n in ("bob", "alice", "carol"))
    try:
        x = torch.tensor([1.5, -2.0, 3.25]).fix_prec().share(bob, alice, crypto_provider=carol)
        y = torch.tensor([2.0, 4.0, -1.0]).fix_prec().share(bob, alice, crypto_provider=carol)
        torch.testing.assert_close((x * y).get().float_prec(), torch.tensor([3.0, -8.0, -3.25]), atol=1e-3, rtol=0)
        # sharing from a pointer: the data owner (bob) sends the shares to the holders itself
        p = torch.tensor([7, -8]).send(bob).share(alice, carol, crypto_provider=bob)
        assert torch.equal((p * p).get(), torch.tensor([49, 64]))
    finally:
        close_all_sessions()
        gc.collect()
        sy.local_worker.flush_gc()


def test_wrong_ca_is_a_clear_error(cluster: LocalWorkers, pki: Pki) -> None:
    t0 = time.monotonic()
    with pytest.raises(sy.TlsError) as info:
        connect(cluster, "bob", tls_ca=pki.other_ca, timeout_s=5.0)
    assert time.monotonic() - t0 < 5.0
    msg = str(info.value)
    assert "worker bob" in msg and "UnknownIssuer" in msg and "tls_ca" in msg, msg
    assert isinstance(info.value, sy.TransportError) and info.value.worker == "bob"  # type: ignore[attr-defined]
    # the worker keeps serving
    assert torch.equal(torch.tensor([3]).send(connect(cluster, "bob", tls_ca=pki.ca)).get(), torch.tensor([3]))


def test_plaintext_client_against_tls_worker(cluster: LocalWorkers, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TLS_CA, raising=False)
    t0 = time.monotonic()
    with pytest.raises(sy.TlsError, match="speaks TLS.*tls_ca"):
        connect(cluster, "alice", timeout_s=5.0)
    assert time.monotonic() - t0 < 5.0
    with pytest.raises(sy.TlsError):
        connect(cluster, "alice", tls_ca="", timeout_s=5.0)  # "" forces plaintext


def test_tls_client_against_plaintext_listener_and_wrong_name(pki: Pki) -> None:
    plain = _native.Listener("127.0.0.1:0", TOKEN, "plain")
    try:
        t0 = time.monotonic()
        with pytest.raises(sy.TlsError, match="answered without TLS"):
            _native.Connection.connect(plain.local_addr, TOKEN, "plain", timeout_s=5.0, tls_ca=pki.ca)
        assert time.monotonic() - t0 < 5.0
        with pytest.raises(sy.TlsError, match="speaks TLS but this side does not"):
            plain.accept(5.0)  # the listener reports the rejected attempt once
    finally:
        plain.close()
    named = _native.Listener("127.0.0.1:0", TOKEN, "bob", tls_cert=pki.named_cert, tls_key=pki.named_key)
    try:
        assert named.tls
        with pytest.raises(sy.TlsError, match="tls_server_name"):
            _native.Connection.connect(named.local_addr, TOKEN, "bob", timeout_s=5.0, tls_ca=pki.ca)
        conn = _native.Connection.connect(
            named.local_addr, TOKEN, "bob", timeout_s=5.0, tls_ca=pki.ca, tls_server_name="bob.example"
        )
        server = None
        for _ in range(10):
            try:
                server = named.accept(1.0)
            except sy.TlsError:
                continue  # the failed attempt above
            if server is not None:
                break
        assert server is not None and server.tls and conn.tls
        conn.send(b"hello over TLS")
        assert server.recv(5.0) == b"hello over TLS"
        conn.close()
        server.close()
    finally:
        named.close()


def test_wrong_token_inside_tls_is_an_authentication_error(cluster: LocalWorkers, pki: Pki) -> None:
    with pytest.raises(sy.AuthenticationError, match="token"):
        sy.SocketWorker(
            hook, id="bob", host="127.0.0.1", port=cluster.port("bob"), token="another-token-0123456789", tls_ca=pki.ca
        )


def test_bad_tls_arguments_are_clear(pki: Pki) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        _native.Listener("127.0.0.1:0", TOKEN, "x", tls_cert=pki.cert)
    with pytest.raises(sy.TransportError, match="cannot read the TLS CA certificate file /nonexistent.pem"):
        _native.Connection.connect("127.0.0.1:1", TOKEN, "x", tls_ca="/nonexistent.pem")
    with pytest.raises(sy.TransportError, match="no usable private key"):
        _native.Listener("127.0.0.1:0", TOKEN, "x", tls_cert=pki.cert, tls_key=pki.ca)
    with pytest.raises(ValueError, match="all three"):
        _native.Party.connect(0, ["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:3", TOKEN, tls_ca=pki.ca)
    r = subprocess.run(
        [sys.executable, "-m", "syft_mpc", "worker", "--id", "x", "--port", "0", "--tls-cert", pki.cert],
        env={**os.environ, "SYFT_MPC_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "--tls-cert and --tls-key go together" in r.stderr


def test_party_and_dealer_over_tls(pki: Pki) -> None:
    """The raw data plane: two parties and a dealer on threads, every connection TLS."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    dealer_addr = f"127.0.0.1:{free_port()}"
    tls = {"tls_cert": pki.cert, "tls_key": pki.key}
    out: dict[str, Any] = {}

    def dealer() -> None:
        d = _native.Dealer.connect(2, dealer_addr, TOKEN, timeout_s=20.0, **tls)
        d.serve()
        d.close()

    def party(i: int) -> None:
        try:
            with _native.Party.connect(i, addrs, dealer_addr, TOKEN, timeout_s=20.0, tls_ca=pki.ca, **tls) as p:
                x = p.input(0, sy.encode(np.array([1.5, -2.0])) if i == 0 else None, shape=(2,))
                y = p.input(1, sy.encode(np.array([4.0, 0.5])) if i == 1 else None, shape=(2,))
                out[f"p{i}"] = sy.decode(p.open(p.truncate(p.mul(x, y), 1 << 16)))
        except BaseException as e:
            out[f"e{i}"] = e

    threads = [threading.Thread(target=dealer, daemon=True)] + [
        threading.Thread(target=party, args=(i,), daemon=True) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert "e0" not in out and "e1" not in out, out
    np.testing.assert_allclose(out["p0"], [6.0, -1.0], atol=1e-3)
    np.testing.assert_allclose(out["p1"], out["p0"])


def test_launch_passes_tls_to_workers_and_script(pki: Pki, tmp_path: pathlib.Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "import os, torch, syft_mpc as sy\n"
        "hook = sy.TorchHook(torch)\n"
        "(bob,) = sy.workers_from_env(hook)\n"
        "assert bob.tls_ca == os.environ['SYFT_MPC_TLS_CA'] and bob._conn.tls\n"
        "print('sum', int(torch.tensor([20, 22]).send(bob).sum().get()))\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "syft_mpc", "launch", "--workers", "bob",
         "--tls-cert", pki.cert, "--tls-key", pki.key, "--tls-ca", pki.ca, str(script)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "sum 42" in r.stdout


def test_torchrun_rendezvous_over_tls(pki: Pki) -> None:
    """Ranks as separate processes (as torchrun starts them), TLS files from the environment."""
    from datetime import timedelta

    import torch.distributed as dist
    from test_rendezvous import run_ranks

    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60))
    world = 3
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_", "LOCAL_"))}
    base.update(
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(store.port),
        TORCHELASTIC_USE_AGENT_STORE="True",
        SYFT_MPC_TOKEN=TOKEN,
        SYFT_MPC_TLS_CERT=pki.cert,
        SYFT_MPC_TLS_KEY=pki.key,
        SYFT_MPC_TLS_CA=pki.ca,
        JOB_SESSION="tls-job",
    )
    run_ranks(base, world)
