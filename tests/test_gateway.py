"""The gateway without a browser: its relay, authentication and hostile input, with tabs played
by Python clients speaking the tab protocol (``b"R" seq Envelope`` / ``b"r" seq reply``).

The real page in real Chromium tabs is tested in tests/test_browser_workers.py.
"""

from __future__ import annotations

import pathlib
import secrets
import threading
import time
from typing import Any, Callable, Iterator

import pytest
import torch
from websockets.sync.client import connect

import syft_mpc as sy
from syft_mpc.errors import AuthenticationError, PeerDisconnected, PeerTimeout, RemoteTypeError, SerializationError
from syft_mpc.net.gateway import TAB_SESSION, GatewayServer, tab_token
from syft_mpc.net.ws_transport import client_handshake
from syft_mpc.remote import serde
from syft_mpc.plans import graph
from syft_mpc.remote.messages import Envelope, Err, Fetch, Ok, PlanRun, PlanStore, PointerDesc, Store

from test_tls import make_ca, make_cert

hook = sy.TorchHook(torch)


class FakeTab:
    """A tab played by Python: answers each request with ``answer(envelope bytes) -> reply bytes``."""

    def __init__(self, url: str, tab_id: str, token: str, answer: Callable[[bytes], bytes], **kw: Any) -> None:
        self.ws = connect(url + "/tab", **kw).__enter__()
        client_handshake(self.ws, token, tab_id, TAB_SESSION, 10)
        self.answer = answer
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            while True:
                msg = self.ws.recv()
                assert isinstance(msg, bytes)
                self.ws.send(b"r" + msg[1:5] + self.answer(msg[5:]))
        except Exception:
            pass

    def close(self) -> None:
        self.ws.close()


class StoreTab:
    """A minimal honest tab: Store and Fetch."""

    def __init__(self) -> None:
        self.objects: dict[int, Any] = {}

    def __call__(self, data: bytes) -> bytes:
        env = serde.decode(data)
        assert isinstance(env, Envelope)
        if isinstance(env.body, Store):
            self.objects[env.body.obj_id] = env.body.obj
            return serde.encode(Ok(None))
        if isinstance(env.body, Fetch):
            return serde.encode(Ok(self.objects.pop(env.body.obj_id)))
        return serde.encode(Ok(None))


class PlanTab(StoreTab):
    """A tab that also keeps and runs plans (with the reference interpreter), refusing plans that
    name an op outside ``ops``, as the browser's interpreter does."""

    def __init__(self, tab_id: str, ops: set[str]) -> None:
        super().__init__()
        self.id, self.ops, self.runs = tab_id, ops, 0

    def __call__(self, data: bytes) -> bytes:
        env = serde.decode(data)
        assert isinstance(env, Envelope)
        for d in env.deletes:
            self.objects.pop(d, None)
        body = env.body
        if isinstance(body, PlanStore):
            bad = [op for op, _, _ in body.obj.nodes if op not in self.ops]
            if bad:
                return serde.encode(Err("UnsupportedOperationError", f"plan node names operation {bad[0]}, which this browser worker does not run"))
            self.objects[body.obj_id] = body.obj
            return serde.encode(Ok(None))
        if isinstance(body, PlanRun):
            self.runs += 1
            out = graph.flat_outputs(graph.run(self.objects[body.plan_id], [self.objects[a.id] for a in body.args]))
            descs = []
            for rid, t in zip(body.return_ids, out):
                self.objects[rid] = t
                descs.append(PointerDesc(self.id, rid, t.shape, t.dtype, False))
            return serde.encode(Ok(descs))
        return super().__call__(data)


def test_plans_go_to_a_tab_through_the_relay(server: GatewayServer) -> None:
    tab = PlanTab("p", {"aten.mm.default", "aten.add.Tensor", "aten.relu.default"})
    t = FakeTab(ws_url(server), "p", tab_token(server.token, "p"), tab)
    gw = driver(server)
    try:
        (w,) = gw.wait_for_workers(1, timeout_s=10)

        @sy.func2plan(args_shape=[(2, 3), (3, 2)])
        def layer(x: torch.Tensor, w_: torch.Tensor) -> torch.Tensor:
            return torch.relu(x @ w_)

        ptr_plan = layer.send(w)  # the same PlanStore a socket worker gets, relayed to the tab
        x, m = torch.randn(2, 3), torch.randn(3, 2)
        y = ptr_plan(x.send(w), m.send(w))
        assert torch.equal(y.get(), torch.relu(x @ m)) and tab.runs == 1

        @sy.func2plan(args_shape=[(2,)])
        def ab(x: torch.Tensor) -> torch.Tensor:
            return torch.abs(x)

        with pytest.raises(RemoteTypeError, match=r"on worker p: .*aten\.abs\.default"):
            ab.send(w)
        assert torch.equal(ptr_plan(x.send(w), m.send(w)).get(), torch.relu(x @ m))  # the tab goes on
    finally:
        gw.close()
        t.close()


@pytest.fixture()
def server() -> Iterator[GatewayServer]:
    s = GatewayServer("127.0.0.1", 0, secrets.token_hex(32), timeout_s=5, ping_s=1).start_in_thread()
    try:
        yield s
    finally:
        s.stop()


def ws_url(s: GatewayServer) -> str:
    return "ws://" + s.address


def driver(s: GatewayServer, **kw: Any) -> sy.Gateway:
    return sy.Gateway("127.0.0.1", int(s.address.rpartition(":")[2]), token=s.token, **kw)


def test_relay_round_trip_and_tab_leaving(server: GatewayServer) -> None:
    t1 = FakeTab(ws_url(server), "one", tab_token(server.token, "one"), StoreTab())
    t2 = FakeTab(ws_url(server), "two", tab_token(server.token, "two"), StoreTab())
    gw = driver(server)
    one, two = gw.wait_for_workers(2, timeout_s=10)
    assert [one.id, two.id] == ["one", "two"]
    x = torch.arange(10_000.0)  # > 64 KiB
    assert torch.equal(x.send(one).get(), x)
    p = torch.ones(2).send(one)
    t1.close()
    t0 = time.monotonic()
    with pytest.raises(PeerDisconnected, match="browser worker one"):
        for _ in range(50):
            p.get()
            time.sleep(0.05)
    assert time.monotonic() - t0 < 5
    assert torch.equal(torch.ones(3).send(two).get(), torch.ones(3))
    # the same id may come back once the first tab left
    FakeTab(ws_url(server), "one", tab_token(server.token, "one"), StoreTab())
    assert "one" in [w.id for w in gw.wait_for_workers(2)]
    t2.close()
    gw.close()


def test_a_second_tab_with_the_same_id_is_refused(server: GatewayServer) -> None:
    FakeTab(ws_url(server), "dup", tab_token(server.token, "dup"), StoreTab())
    second = FakeTab(ws_url(server), "dup", tab_token(server.token, "dup"), StoreTab())
    time.sleep(0.5)
    assert server.tabs() == ["dup"]
    second.close()


def test_wrong_tokens_are_refused(server: GatewayServer) -> None:
    with pytest.raises(AuthenticationError):
        FakeTab(ws_url(server), "x", "0" * 40, StoreTab())
    with pytest.raises(AuthenticationError):  # another tab's token
        FakeTab(ws_url(server), "x", tab_token(server.token, "y"), StoreTab())
    with pytest.raises(AuthenticationError):  # a tab token is not the driver's
        sy.Gateway("127.0.0.1", int(server.address.rpartition(":")[2]), token=tab_token(server.token, "x"), timeout_s=5)
    with pytest.raises(AuthenticationError):  # bad tab id
        FakeTab(ws_url(server), "../etc", tab_token(server.token, "../etc"), StoreTab())
    assert server.tabs() == []


def test_malformed_replies_and_silent_tabs_name_the_tab(server: GatewayServer) -> None:
    FakeTab(ws_url(server), "garbage", tab_token(server.token, "garbage"), lambda d: b"SYMP\x01\x14\xff")
    FakeTab(ws_url(server), "wrongtype", tab_token(server.token, "wrongtype"), lambda d: serde.encode([1, 2]))
    FakeTab(ws_url(server), "silent", tab_token(server.token, "silent"), lambda d: (time.sleep(30), b"")[1])
    gw = driver(server, timeout_s=2)
    ws = {w.id: w for w in gw.wait_for_workers(3)}
    with pytest.raises(SerializationError, match="browser worker garbage sent a malformed reply"):
        torch.ones(2).send(ws["garbage"])
    with pytest.raises(SerializationError, match="browser worker wrongtype"):
        torch.ones(2).send(ws["wrongtype"])
    t0 = time.monotonic()
    with pytest.raises(PeerTimeout, match="browser worker silent"):
        torch.ones(2).send(ws["silent"])
    assert time.monotonic() - t0 < 4
    # a tab answering out of turn is dropped, the driver told
    bad = FakeTab(ws_url(server), "liar", tab_token(server.token, "liar"), StoreTab())
    liar = [w for w in gw.wait_for_workers(4) if w.id == "liar"][0]
    bad.ws.send(b"r\x99\x99\x99\x99" + serde.encode(Ok(None)))
    time.sleep(0.5)
    with pytest.raises(PeerDisconnected, match="liar"):
        torch.ones(2).send(liar)
    gw.close()


def test_hostile_driver_frames_and_slow_handshakes(server: GatewayServer) -> None:
    for path in ("/tab", "/driver"):
        with connect(ws_url(server) + path) as ws:
            ws.send(b"SMWS\x01" + b"\x00" * 5000)  # over the handshake bound
            with pytest.raises(Exception):
                ws.recv(timeout=5)
                ws.recv(timeout=5)
    t0 = time.monotonic()
    with connect(ws_url(server) + "/driver") as ws:  # says nothing: dropped at the handshake deadline
        with pytest.raises(Exception):
            ws.recv(timeout=15)
    assert time.monotonic() - t0 < 10
    gw = driver(server)
    gw._conn.send(b"not a frame")
    time.sleep(0.5)
    with pytest.raises(PeerDisconnected):
        gw.workers()
    FakeTab(ws_url(server), "ok", tab_token(server.token, "ok"), StoreTab())
    assert [w.id for w in driver(server).wait_for_workers(1)] == ["ok"]


def test_wss(tmp_path: pathlib.Path) -> None:
    make_ca(tmp_path, "ca")
    make_cert(tmp_path, "gw", "ca", "DNS:localhost,IP:127.0.0.1")
    s = GatewayServer("127.0.0.1", 0, secrets.token_hex(32), tls_cert=str(tmp_path / "gw.pem"),
                      tls_key=str(tmp_path / "gw.key")).start_in_thread()
    try:
        import ssl

        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        assert s.url.startswith("https://")
        FakeTab("wss://" + s.address, "sec", tab_token(s.token, "sec"), StoreTab(), ssl=ctx)
        gw = sy.Gateway("127.0.0.1", int(s.address.rpartition(":")[2]), token=s.token, secure=True,
                        tls_ca=str(tmp_path / "ca.pem"))
        (w,) = gw.wait_for_workers(1)
        assert torch.equal(torch.tensor([5, 6]).send(w).get(), torch.tensor([5, 6]))
        gw.close()
    finally:
        s.stop()


def huge_frame_is_refused(host: str, port: int, path: str) -> bytes:
    """Opens a WebSocket by hand and sends a frame header declaring 2^40 payload bytes;
    returns what the server sent back before closing (the upgrade response and a close frame)."""
    import base64
    import socket

    s = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    assert b" 101 " in got.split(b"\r\n", 1)[0]
    s.sendall(bytes([0x82, 0x80 | 127]) + (1 << 40).to_bytes(8, "big") + b"\x00\x00\x00\x00" + b"x" * 100)
    rest = b""
    try:
        while chunk := s.recv(4096):
            rest += chunk
    except OSError:
        pass
    s.close()
    return rest


def test_huge_declared_lengths_close_only_that_connection(server: GatewayServer) -> None:
    host, _, port = server.address.rpartition(":")
    for path in ("/tab", "/driver"):
        t0 = time.monotonic()
        rest = huge_frame_is_refused(host, int(port), path)
        assert time.monotonic() - t0 < 5
        assert rest[:1] == b"\x88" and int.from_bytes(rest[2:4], "big") == 1009  # close: message too big
    FakeTab(ws_url(server), "after", tab_token(server.token, "after"), StoreTab())
    assert [w.id for w in driver(server).wait_for_workers(1)] == ["after"]


@pytest.mark.parametrize("argv", [["gateway", "--tabs", "alice,bob"], ["worker", "--transport", "websocket", "--id", "wsx"]])
def test_cli_prints_where_it_listens_and_stops_on_sigterm(argv: list[str]) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ, SYFT_MPC_TOKEN=secrets.token_hex(32))
    p = subprocess.Popen([sys.executable, "-m", "syft_mpc", *argv, "--port", "0", "--quiet"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        first = p.stdout.readline().decode()  # type: ignore[union-attr]
        assert first.startswith("gateway on http://") or first.startswith("listening on ws://"), first
        if argv[0] == "gateway":
            links = [p.stdout.readline().decode() for _ in range(2)]  # type: ignore[union-attr]
            assert links[0].startswith("tab alice: http://") and "#id=alice&token=" in links[0]
            assert env["SYFT_MPC_TOKEN"] not in "".join(links)  # the tab token is derived, not the gateway's
        p.terminate()
        assert p.wait(5) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
