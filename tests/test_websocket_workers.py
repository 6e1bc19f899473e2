"""WebSocket workers: WebsocketClientWorker against real `syft-mpc worker --transport websocket` processes.

The workers are started by `syft_mpc.net.launch.LocalWorkers` with `--transport websocket`
(stopped on exit also when a test fails); TLS uses a throwaway CA made with openssl.
"""

from __future__ import annotations

import gc
import pathlib
import socket
import time
from typing import Any, Iterator

import pytest
import torch
from websockets.sync.client import connect as ws_connect

import syft_mpc as sy
from syft_mpc.errors import AuthenticationError, TlsError, TransportError
from syft_mpc.mpc_session.driver import close_all_sessions
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.net.ws_transport import MAGIC
from syft_mpc.remote import serde
from syft_mpc.remote.messages import REQUEST, Envelope, Err, Fetch

from test_tls import make_ca, make_cert

hook = sy.TorchHook(torch)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalWorkers]:
    with LocalWorkers(["wbob", "walice", "wcarol"], grace_s=1.0, quiet=True, extra_args=["--transport", "websocket"]) as c:
        yield c


def connect(c: LocalWorkers, name: str, **kw: Any) -> sy.WebsocketClientWorker:
    return sy.WebsocketClientWorker(hook, "127.0.0.1", c.port(name), id=name, token=c.token, **kw)


def test_addresses_are_websocket_urls(cluster: LocalWorkers) -> None:
    assert all(a.startswith("ws://127.0.0.1:") for a in cluster.addresses.values())


def test_pointers_remote_execution_move_and_chains(cluster: LocalWorkers) -> None:
    bob, alice = connect(cluster, "wbob"), connect(cluster, "walice")
    base_bob, base_alice = bob.sync(), alice.sync()
    x = torch.tensor([1, 2, 3, 4, 5]).send(bob)
    z = x + x
    assert torch.equal(z.get(), torch.tensor([2, 4, 6, 8, 10])) and torch.equal(x.get(), torch.tensor([1, 2, 3, 4, 5]))
    a = torch.tensor([1, 2, 3.0], requires_grad=True).send(bob)
    (a * a).sum().backward()
    assert torch.equal(a.get().grad, torch.tensor([2, 4, 6.0]))
    # worker to worker over WebSocket: move and pointer chains
    m = torch.tensor([7, 8]).send(bob).move(alice)
    assert m.location == alice and torch.equal(m.get(), torch.tensor([7, 8]))
    p2p = torch.tensor([1, 2]).send(bob).send(alice)
    assert torch.equal((p2p + p2p).get().get(), torch.tensor([2, 4])) and torch.equal(p2p.get().get(), torch.tensor([1, 2]))
    big = torch.randn(300, 300)  # > 64 KiB: out-of-line payload, sent as a fragmented message
    assert torch.equal(big.send(bob).get(), big)
    w = torch.ones(3).send(bob)
    with pytest.raises(RuntimeError, match="on worker wbob"):
        w.view(7)
    del w
    gc.collect()
    sy.local_worker.flush_gc()
    assert bob.sync() == base_bob and alice.sync() == base_alice


def test_shares_and_encrypted_mul(cluster: LocalWorkers) -> None:
    bob, alice, carol = (connect(cluster, n) for n in ("wbob", "walice", "wcarol"))
    try:
        x = torch.tensor([1.5, -2.0, 3.25]).fix_prec().share(bob, alice, crypto_provider=carol)
        y = torch.tensor([2.0, 4.0, -1.0]).fix_prec().share(bob, alice, crypto_provider=carol)
        torch.testing.assert_close((x + y).get().float_prec(), torch.tensor([3.5, 2.0, 2.25]), atol=1e-3, rtol=0)
        torch.testing.assert_close((x * y).get().float_prec(), torch.tensor([3.0, -8.0, -3.25]), atol=1e-3, rtol=0)
    finally:
        close_all_sessions()
        gc.collect()
        sy.local_worker.flush_gc()


def test_wrong_token_and_wrong_id_fail_fast(cluster: LocalWorkers) -> None:
    port = cluster.port("wbob")
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError, match="wbob"):
        sy.WebsocketClientWorker(hook, "127.0.0.1", port, id="wbob", token="x" * 32, timeout_s=5)
    with pytest.raises(AuthenticationError, match="not served|no worker"):
        sy.WebsocketClientWorker(hook, "127.0.0.1", port, id="someone", token=cluster.token, timeout_s=5)
    assert time.monotonic() - t0 < 5
    assert connect(cluster, "wbob").sync() >= 0


def test_hostile_input_closes_only_that_connection(cluster: LocalWorkers) -> None:
    url = cluster.addresses["wbob"]
    # not a handshake at all
    with ws_connect(url) as ws:
        ws.send(b"garbage" * 10)
        with pytest.raises(Exception):
            ws.recv(timeout=5)
            ws.recv(timeout=5)
    # a client that opens the WebSocket and says nothing is dropped after the handshake timeout
    # (30 s): not waited for here; a plain TCP client that never upgrades gets nothing either
    s = socket.create_connection(("127.0.0.1", cluster.port("wbob")))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(200).startswith(b"HTTP/1.1 4")  # a plain HTTP request is refused, nothing is served
    s.close()
    # authenticated, then a malformed frame: answered with an error, connection closed
    bob = connect(cluster, "wbob")
    with bob._io:
        conn = bob._connection()
        reply = serde.decode(conn.request(REQUEST + b"SYMP\x01\xff", 5))
    assert isinstance(reply, Err) and "closed" in reply.message
    bob._conn = None
    # the worker serves others (and this driver again, on a new connection)
    assert torch.equal(torch.tensor([3]).send(connect(cluster, "wbob")).get(), torch.tensor([3]))
    assert bob.sync() >= 0
    e = Envelope("me", [], Fetch(1, False))
    with pytest.raises(Exception, match="not on worker"):
        bob._send(bob, e.body)


def test_killed_worker_gives_bounded_error() -> None:
    with LocalWorkers(["wdead"], quiet=True, extra_args=["--transport", "websocket"]) as c:
        w = connect(c, "wdead", timeout_s=3)
        x = torch.ones(2).send(w)
        c.kill("wdead")
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="wdead"):
            x.get()
        assert time.monotonic() - t0 < 5


def test_wss_with_a_checked_certificate(tmp_path: pathlib.Path) -> None:
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "worker", "ca", "DNS:localhost,IP:127.0.0.1")
    make_ca(tmp_path, "other")
    cert, key, ca = (str(tmp_path / n) for n in ("worker.pem", "worker.key", "ca.pem"))
    with LocalWorkers(["sbob", "salice"], quiet=True, tls_cert=cert, tls_key=key, tls_ca=ca,
                      extra_args=["--transport", "websocket"]) as c:
        assert all(a.startswith("wss://") for a in c.addresses.values())
        bob, alice = (connect(c, n, secure=True, tls_ca=ca) for n in ("sbob", "salice"))
        m = torch.tensor([1.0, 2.0]).send(bob).move(alice)  # worker to worker over wss too
        assert torch.equal(m.get(), torch.tensor([1.0, 2.0]))
        with pytest.raises(TlsError):
            connect(c, "sbob", secure=True, tls_ca=str(tmp_path / "other.pem"), timeout_s=5)
        with pytest.raises(TransportError):
            connect(c, "sbob", timeout_s=5)  # plaintext client against a wss worker


def test_socket_and_websocket_workers_in_one_deployment() -> None:
    with LocalWorkers(["tcpw"], quiet=True) as tcp:
        server = sy.WebsocketServerWorker(hook, "127.0.0.1", 0, id="wsw", token=tcp.token, grace_s=1.0)
        server.start_in_thread()
        try:
            a = sy.SocketWorker(hook, id="tcpw", host="127.0.0.1", port=tcp.port("tcpw"), token=tcp.token)
            b = sy.WebsocketClientWorker(hook, "127.0.0.1", int(server.address.rpartition(":")[2]), id="wsw", token=tcp.token)
            x = torch.tensor([1.0, 2.0, 3.0]).send(a).move(b)  # the TCP worker process reaches ws://
            assert x.location == b
            y = x.move(a)  # and back over native TCP
            assert torch.equal(y.get(), torch.tensor([1.0, 2.0, 3.0]))
            a.close()
            b.close()
        finally:
            server.stop()


def test_huge_declared_length_closes_only_that_connection(cluster: LocalWorkers) -> None:
    from test_gateway import huge_frame_is_refused

    rest = huge_frame_is_refused("127.0.0.1", cluster.port("wbob"), "/")
    assert rest[:1] == b"\x88" and int.from_bytes(rest[2:4], "big") == 1009
    assert torch.equal(torch.tensor([4]).send(connect(cluster, "wbob")).get(), torch.tensor([4]))
