"""Connection limits an operator sets and a client relies on, against real ``syft-mpc worker``
(native TCP and ``--transport websocket``) and ``syft-mpc gateway`` processes on 127.0.0.1:

* a client's send has a deadline: a server that stops reading (a process stopped with
  SIGSTOP: its receive buffer fills, the client's send blocks) gives ``PeerTimeout`` saying so
  within the deadline, for ``SocketWorker``, ``WebsocketClientWorker`` and the ``Gateway`` driver;
* the CLI flags for the limits (``--send-deadline``, ``--handshake-deadline``,
  ``--max-handshakes``, ``--max-handshakes-per-address``, ``--max-connections``) are checked and
  take effect;
* a worker or gateway at ``--max-connections`` refuses one more connection with ``WorkerBusy``
  and keeps serving the others; once some close, new ones get in;
* a request refused because too much already waits for a tab is ``WorkerBusy`` naming the tab;
* log lines carry one prefix (``syft-mpc gateway: ...``, never ``syft-mpc gateway: gateway: ...``).
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import threading
import time
from typing import Any, Iterator

import pytest
import torch
from _worker_procs import CliGateway, CliWorker, wait_for_line
from test_gateway import FakeTab, StoreTab

import syft_mpc as sy
from syft_mpc import _native
from syft_mpc.errors import PeerDisconnected, PeerTimeout, TransportError, WorkerBusy
from syft_mpc.net.gateway import TAB_SESSION, Gateway, tab_token
from syft_mpc.net.ws_transport import client_handshake
from syft_mpc.remote import serde
from syft_mpc.remote.messages import POST, REQUEST, Envelope, Err, Fetch, Store, new_id

hook = sy.TorchHook(torch)
BIG = 1 << 24  # float32 elements: 64 MiB, far more than the kernels' buffers on loopback


def client(w: CliWorker, websocket: bool, **kw: Any) -> sy.SocketWorker:
    if websocket:
        return sy.WebsocketClientWorker(hook, "127.0.0.1", w.port, id=w.id, token=w.token, known_workers={},
                                        announce=False, **kw)
    return sy.SocketWorker(hook, id=w.id, host="127.0.0.1", port=w.port, token=w.token, known_workers={},
                           announce=False, **kw)


def stopped(pid: int) -> "Any":
    """SIGSTOP ``pid`` for the block, SIGCONT after (the worker then serves again)."""

    class _Stopped:
        def __enter__(self) -> None:
            os.kill(pid, signal.SIGSTOP)

        def __exit__(self, *exc: object) -> None:
            os.kill(pid, signal.SIGCONT)

    return _Stopped()


@pytest.fixture(params=["tcp", "websocket"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ------------------------------------------------------------------ 1. client send deadlines


def test_a_client_sending_to_a_stopped_worker_gets_peer_timeout(tmp_path: pathlib.Path, transport: str) -> None:
    """A driver sends 64 MiB to a worker process stopped with SIGSTOP (it reads nothing: the
    kernel buffers fill and the send blocks). With ``send_deadline_s=2`` (``timeout_s`` 60)
    the send fails with ``PeerTimeout`` naming the worker and saying what to check: over
    WebSocket 2–6 s later (no byte acknowledged for 2 s; before, the client waited for ever);
    over native TCP, whose deadline is the socket's write timeout (no byte taken by the kernel
    for 2 s), within 15 s (measured about 6 s: the stopped peer's kernel still takes a few
    bytes now and then while its window is probed). Once the worker runs again it serves a
    new connection."""
    ws = transport == "websocket"
    args = ("--transport", "websocket") if ws else ()
    with CliWorker("sdbob", os.urandom(32).hex(), tmp_path / "w.log", *args) as w:
        c = client(w, ws, timeout_s=60, send_deadline_s=2)
        assert (torch.tensor([1.0]).send(c) + 1).get().item() == 2.0  # connected, warm
        x = torch.ones(BIG)
        with stopped(w.pid):
            t0 = time.monotonic()
            with pytest.raises(PeerTimeout) as info:
                x.send(c)
                c.sync()
            took = time.monotonic() - t0
        msg = str(info.value)
        print(f"\n{transport}: the send to a stopped worker failed after {took:.1f} s: {msg}")
        assert 1.5 < took < (6.0 if ws else 15.0), took
        assert "sdbob" in msg and "send_deadline_s" in msg, msg
        if ws:
            assert "stopped reading" in msg and "acknowledged none of the" in msg, msg
        c.close()
        with client(w, ws, timeout_s=20) as again:
            assert (torch.tensor([2.0]).send(again) * 3).get().item() == 6.0


def test_a_driver_sending_to_a_stopped_gateway_gets_peer_timeout(tmp_path: pathlib.Path) -> None:
    """The ``Gateway`` driver sends a 64 MiB request while the gateway process is stopped:
    ``PeerTimeout`` within the driver's ``send_deadline_s`` (2 s), not a hang."""
    with CliGateway(tmp_path / "gw.log") as gw:
        tab = FakeTab(gw.ws_url, "t", tab_token(gw.token, "t"), StoreTab())
        driver = Gateway("127.0.0.1", gw.port, token=gw.token, timeout_s=60, send_deadline_s=2)
        (t,) = driver.wait_for_workers(1, timeout_s=10)
        assert torch.equal(torch.arange(3.0).send(t).get(), torch.arange(3.0))
        frame = serde.encode(Envelope("d", [], Store(new_id(), torch.ones(BIG))))
        with stopped(gw.proc.pid):
            t0 = time.monotonic()
            with pytest.raises(PeerTimeout, match="stopped reading") as info:
                driver.request("t", frame)
            took = time.monotonic() - t0
        print(f"\nthe driver's send to a stopped gateway failed after {took:.1f} s: {info.value}")
        assert 1.5 < took < 6.0, took
        assert "browser worker t" in str(info.value)
        tab.close()


def test_send_deadlines_are_checked() -> None:
    for bad in (0, -1, float("nan"), 3601):
        with pytest.raises(ValueError, match="send_deadline_s must be more than 0 and at most 3600"):
            sy.SocketWorker(hook, id="x", port=1, token="t" * 40, connect=False, send_deadline_s=bad)


# ------------------------------------------------------------------ 2. CLI flags


@pytest.mark.parametrize(
    "cmd, args, says",
    [
        ("worker", ["--max-connections", "0"], "argument --max-connections: must be from 1 to 65536, got 0"),
        ("gateway", ["--max-connections", "-5"], "argument --max-connections: must be from 1 to 65536, got -5"),
        ("worker", ["--max-connections", "many"], "argument --max-connections: expected a whole number"),
        ("worker", ["--send-deadline", "0"], "argument --send-deadline: the send deadline must be more than 0 and at most 3600"),
        ("gateway", ["--send-deadline", "-1"], "argument --send-deadline: the send deadline must be more than 0"),
        ("worker", ["--send-deadline", "inf"], "argument --send-deadline: the send deadline must be more than 0"),
        ("worker", ["--handshake-deadline", "0"], "argument --handshake-deadline: must be more than 0 and at most 60 s"),
        ("gateway", ["--handshake-deadline", "61"], "argument --handshake-deadline: must be more than 0 and at most 60 s"),
        ("gateway", ["--max-handshakes", "0"], "argument --max-handshakes: must be from 1 to 65536"),
        ("worker", ["--max-handshakes-per-address", "-1"], "argument --max-handshakes-per-address: must be from 1 to 65536"),
        ("worker", ["--transport", "websocket", "--max-handshakes", "8", "--max-handshakes-per-address", "9"],
         "--max-handshakes-per-address (9) cannot exceed --max-handshakes (8)"),
        ("gateway", ["--max-handshakes", "8", "--max-handshakes-per-address", "9"],
         "--max-handshakes-per-address (9) cannot exceed --max-handshakes (8)"),
        ("worker", ["--max-handshakes", "8", "--max-handshakes-per-address", "9"],
         "--max-handshakes-per-address (9) cannot exceed --max-handshakes (8)"),
    ],
)
def test_cli_limits_refuse_nonsense(
    cmd: str, args: "list[str]", says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad value ends the command before it listens, with a message naming the flag and the range."""
    from syft_mpc.net.cli import main

    monkeypatch.setenv("SYFT_MPC_TOKEN", os.urandom(32).hex())
    argv = [cmd, *(["--id", "bob"] if cmd == "worker" else []), "--port", "0", *args]
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = f"{info.value.code} {capsys.readouterr().err}"
    assert info.value.code != 0 and says in out, out


def test_cli_handshake_limits_take_effect(tmp_path: pathlib.Path) -> None:
    """``--max-handshakes-per-address 4``: a fifth silent socket from one address evicts the
    first at once (its socket ends long before any deadline); ``--handshake-deadline 1``: a
    silent stranger alone is cut after about 1 s (default 5 s). On a native TCP worker
    (``rust/python/src/listener.rs``), a WebSocket worker and the gateway (which share
    ``net/admission.py``)."""

    def eof_within(s: socket.socket, within_s: float) -> "float | None":
        s.settimeout(within_s)
        t0 = time.monotonic()
        try:
            s.recv(1)  # b"" (EOF) or a reset: the server closed it
        except socket.timeout:
            return None
        except OSError:
            pass
        return time.monotonic() - t0

    limits = ("--max-handshakes", "8", "--max-handshakes-per-address", "4", "--handshake-deadline", "1")
    t = CliWorker("hstcp", os.urandom(32).hex(), tmp_path / "t.log", *limits)
    w = CliWorker("hsbob", os.urandom(32).hex(), tmp_path / "w.log", "--transport", "websocket", *limits)
    g = CliGateway(tmp_path / "g.log", *limits)
    with t, w, g:
        for port in (t.port, w.port, g.port):
            socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
            time.sleep(0.2)
            fifth = socket.create_connection(("127.0.0.1", port))
            evicted = eof_within(socks[0], 0.6)  # well before the 1 s deadline
            assert evicted is not None, "a fifth handshake of one address evicted none of the four"
            alone = eof_within(fifth, 5.0)
            print(f"\nport {port}: first socket evicted after {evicted:.2f} s; a lone silent one cut after {alone}")
            assert alone is not None and alone < 2.0, alone
            for s in (*socks, fifth):
                s.close()


def test_cli_send_deadline_cuts_a_client_that_stops_reading(tmp_path: pathlib.Path, transport: str) -> None:
    """``--send-deadline 2``: an authenticated client that asks for 64 MiB and reads none of it
    is cut about 2 s later (native TCP: the reply's write timeout; WebSocket: the listener's
    watch), logged in one line with one prefix; another client is served meanwhile and after."""
    ws = transport == "websocket"
    args = ["--send-deadline", "2"] + (["--transport", "websocket"] if ws else [])
    with CliWorker("deafbob", os.urandom(32).hex(), tmp_path / "w.log", *args) as w:
        obj = new_id()
        store = serde.encode(Envelope("deaf", [], Store(obj, torch.ones(BIG))))
        fetch = serde.encode(Envelope("deaf", [], Fetch(obj, False)))
        if ws:
            from syft_mpc.net.ws_transport import open_connection

            deaf: Any = open_connection(w.address, w.token, w.id, "syft-mpc-control", 10.0)
        else:
            deaf = _native.Connection.connect(w.address, w.token, w.id, timeout_s=10.0)
        deaf.send(POST + store)
        for _ in range(4):
            deaf.send(REQUEST + fetch)  # 4 answers of 64 MiB, never read
        with client(w, ws, timeout_s=20) as honest:
            t0 = time.monotonic()
            line = None
            while line is None and time.monotonic() - t0 < 20:
                assert (torch.tensor([1.0]).send(honest) + 1).get().item() == 2.0
                line = wait_for_line(w, "cut off", 0.2)
            took = time.monotonic() - t0
            print(f"\n{transport}: {line} (after {took:.1f} s)")
            assert line is not None and took < 8.0, (took, w.log_lines()[-5:])
            assert re.search(r"syft-mpc worker deafbob: cut off \S+: it (took|acknowledged) none of", line), line
            assert (torch.tensor([5.0]).send(honest) * 2).get().item() == 10.0
        deaf.close()


# ------------------------------------------------------------------ 3. --max-connections


def test_connections_over_the_cap_get_worker_busy(tmp_path: pathlib.Path, transport: str) -> None:
    """``--max-connections 3``: three clients are served; two more get ``WorkerBusy`` naming the
    limit (one log line for both); the three keep working; after one closes, a new one gets in."""
    ws = transport == "websocket"
    args = ["--max-connections", "3"] + (["--transport", "websocket"] if ws else [])
    with CliWorker("capbob", os.urandom(32).hex(), tmp_path / "w.log", *args) as w:
        first = [client(w, ws, timeout_s=20) for _ in range(3)]
        xs = [torch.tensor([float(i)]).send(c) for i, c in enumerate(first)]
        for k in range(2):
            t0 = time.monotonic()
            with pytest.raises(WorkerBusy) as info:
                client(w, ws, timeout_s=20)
            took = time.monotonic() - t0
            msg = str(info.value)
            assert "capbob" in msg and "--max-connections 3" in msg and "retry later" in msg, msg
            assert took < 3.0, took
        print(f"\n{transport}: {msg}")
        for i, (c, x) in enumerate(zip(first, xs)):
            assert (x + 1).get().item() == i + 1
        lines = [ln for ln in w.log_lines() if "refused a connection from" in ln]
        assert len(lines) == 1 and "syft-mpc worker capbob: refused a connection" in lines[0], lines
        first[0].close()
        deadline = time.monotonic() + 10
        while True:  # the worker sees the close as soon as its connection thread does
            try:
                late = client(w, ws, timeout_s=20)
                break
            except WorkerBusy:
                assert time.monotonic() < deadline, "no room after a client closed"
                time.sleep(0.1)
        assert (torch.tensor([7.0]).send(late) * 2).get().item() == 14.0
        for c in (*first[1:], late):
            c.close()
        assert w.proc.poll() is None


def test_gateway_connections_over_the_cap_get_worker_busy(tmp_path: pathlib.Path) -> None:
    """``syft-mpc gateway --max-connections 3``: a tab and two drivers are served; a third driver
    gets ``WorkerBusy`` on its first request, a second tab an error on its connection; the
    others keep working; once a driver leaves, a new one gets in."""
    with CliGateway(tmp_path / "gw.log", "--max-connections", "3") as gw:
        tab = FakeTab(gw.ws_url, "t", tab_token(gw.token, "t"), StoreTab())
        drivers = [Gateway("127.0.0.1", gw.port, token=gw.token, timeout_s=20) for _ in range(2)]
        tabs = [d.wait_for_workers(1, timeout_s=10)[0] for d in drivers]
        extra = Gateway("127.0.0.1", gw.port, token=gw.token, timeout_s=20)
        t0 = time.monotonic()
        with pytest.raises(WorkerBusy, match=r"--max-connections 3\).*retry later") as info:
            extra.workers()
        assert time.monotonic() - t0 < 3.0
        print(f"\ngateway: {info.value}")
        # A tab over the cap is told on its connection (b"E" + reason), then closed.
        from websockets.sync.client import connect

        with connect(gw.ws_url + "/tab") as ws:
            client_handshake(ws, tab_token(gw.token, "u"), "u", TAB_SESSION, 10)
            refusal = ws.recv(timeout=5)
        assert isinstance(refusal, bytes) and refusal.startswith(b"E") and b"--max-connections 3" in refusal
        for t in tabs:
            assert torch.equal(torch.arange(4.0).send(t).get(), torch.arange(4.0))
        assert wait_for_line(gw, "syft-mpc gateway: refused a driver from", 2) is not None
        drivers[0].close()
        deadline = time.monotonic() + 10
        while True:
            late = Gateway("127.0.0.1", gw.port, token=gw.token, timeout_s=20)
            try:
                (t,) = late.wait_for_workers(1, timeout_s=10)
                break
            except WorkerBusy:
                assert time.monotonic() < deadline, "no room after a driver left"
                time.sleep(0.1)
        assert torch.equal(torch.ones(2).send(t).get(), torch.ones(2))
        tab.close()


# ------------------------------------------------------------------ 4. a tab's queue is full


def test_a_request_to_a_tab_with_a_full_queue_is_worker_busy(tmp_path: pathlib.Path) -> None:
    """A tab that stops reading gets 24 requests of 4 MiB from a driver's threads: those over
    the 64 MiB the gateway queues for it fail at once with ``WorkerBusy`` naming the tab and
    saying to retry later (not ``PeerDisconnected``: the tab is still there); the rest fail
    with ``PeerDisconnected`` when the tab is cut (``--send-deadline 2``). The gateway logs the
    refusals and the cut with one prefix."""
    with CliGateway(tmp_path / "gw.log", "--send-deadline", "2") as gw:
        stuck = FakeTab(gw.ws_url, "stuck", tab_token(gw.token, "stuck"), lambda d: (time.sleep(3600), b"")[1],
                        max_size=None, max_queue=(2, 0))
        driver = Gateway("127.0.0.1", gw.port, token=gw.token, timeout_s=30)
        driver.wait_for_workers(1, timeout_s=10)
        frame = serde.encode(Envelope("a", [], Store(new_id(), torch.zeros(1 << 20))))  # 4 MiB
        errors: list[tuple[float, BaseException]] = []
        t0 = time.monotonic()

        def post() -> None:
            try:
                driver.request("stuck", frame)
            except BaseException as e:  # expected; checked below
                errors.append((time.monotonic() - t0, e))

        ts = [threading.Thread(target=post) for _ in range(24)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        busy = [(at, e) for at, e in errors if isinstance(e, WorkerBusy)]
        gone = [(at, e) for at, e in errors if isinstance(e, PeerDisconnected)]
        print(f"\n{len(busy)} refused at once (max {max(at for at, _ in busy):.2f} s), {len(gone)} failed when the "
              f"tab was cut: {busy[0][1]}")
        assert len(errors) == 24 and len(busy) + len(gone) == 24, errors
        assert busy and gone, errors
        for at, e in busy:
            assert isinstance(e, TransportError) and not isinstance(e, PeerDisconnected)
            assert "browser worker stuck" in str(e) and "retry later" in str(e), e
        assert max(at for at, _ in busy) < min(at for at, _ in gone), errors  # at once, not when the tab was cut
        assert all("browser worker stuck" in str(e) for _, e in gone), gone
        log = gw.log_lines()
        assert any("syft-mpc gateway: refused a request to browser worker stuck" in ln for ln in log), log[-10:]
        assert any(re.search(r"syft-mpc gateway: cut off \S+: it acknowledged none of", ln) for ln in log), log[-10:]
        stuck.close()
        driver.close()


# ------------------------------------------------------------------ 5. log prefixes


def test_log_lines_carry_one_prefix(tmp_path: pathlib.Path) -> None:
    """Every line a gateway and a WebSocket worker log begins with the process's prefix once:
    no ``syft-mpc gateway: gateway:`` nor ``syft-mpc worker bob: worker bob``."""
    with CliGateway(tmp_path / "gw.log") as gw, CliWorker(
        "logbob", os.urandom(32).hex(), tmp_path / "w.log", "--transport", "websocket"
    ) as w:
        d = Gateway("127.0.0.1", gw.port, token=gw.token, timeout_s=20)
        d.workers()
        d.close()
        with client(w, True, timeout_s=20) as c:
            assert (torch.tensor([1.0]).send(c) + 1).get().item() == 2.0
        for proc, prefix in ((gw, "syft-mpc gateway: "), (w, "syft-mpc worker logbob: ")):
            time.sleep(0.3)
            lines = [ln for ln in proc.log_lines() if prefix in ln]
            assert len(lines) >= 2, proc.log_lines()
            for ln in lines:
                rest = ln.split(prefix, 1)[1]
                assert not rest.startswith(("gateway:", "worker ")), ln


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"max_handshakes": 0}, "max_handshakes must be from 1 to 65536, got 0"),
        ({"max_handshakes_per_address": 70_000}, "max_handshakes_per_address must be from 1 to 65536"),
        ({"max_handshakes": 8, "max_handshakes_per_address": 9}, "cannot exceed max_handshakes (8)"),
        ({"handshake_deadline_s": 0.0}, "handshake_deadline_s must be more than 0 and at most 60"),
        ({"handshake_deadline_s": float("nan")}, "handshake_deadline_s must be more than 0"),
    ],
)
def test_native_listener_refuses_nonsense_limits(kwargs: "dict[str, Any]", says: str) -> None:
    """The native listener checks its admission limits itself (it is public API), before binding."""
    from syft_mpc import _native

    with pytest.raises(ValueError) as info:
        _native.Listener("127.0.0.1:0", os.urandom(32).hex(), "limits", **kwargs)
    assert says in str(info.value), info.value


# ------------------------------------------------------------------ 6. dead pointers to a stalled worker


def test_dead_pointers_to_a_stopped_worker_do_not_hold_up_the_driver(tmp_path: pathlib.Path, transport: str) -> None:
    """Deletions of dead pointers go out only over open connections: ``flush_gc`` (which request
    handlers run too, e.g. the driver's own dealer) does not dial a worker whose connection is
    closed. Dialling a stopped worker (SIGSTOP: its kernel accepts the TCP connection and nobody
    answers the handshake) held the caller for the whole connect timeout, 30 s in the test suite.
    The deletion waits for the next request to that worker, which carries it."""
    import gc

    ws = transport == "websocket"
    args = ("--transport", "websocket") if ws else ()
    with CliWorker("gcbob", os.urandom(32).hex(), tmp_path / "w.log", *args) as w:
        bob = client(w, ws, timeout_s=20)
        x = torch.ones(3).send(bob)
        assert bob.sync() == 1
        bob.close()
        with stopped(w.pid):
            del x
            gc.collect()
            t0 = time.monotonic()
            sy.local_worker.flush_gc()
            took = time.monotonic() - t0
            assert took < 2.0, f"flush_gc waited {took:.1f} s for a stopped worker"
            assert sy.local_worker._gc_pending.get(bob), "the deletion was dropped, not kept for the next request"
        y = torch.zeros(2).send(bob)  # reconnects; the deletion rides on this request
        assert not sy.local_worker._gc_pending.get(bob)
        assert bob.sync() == 1  # y only
        assert torch.equal(y.get(), torch.zeros(2))
        bob.close()


def test_closing_sessions_with_a_stopped_worker_does_not_hold_up_the_driver(tmp_path: pathlib.Path) -> None:
    """Closing an MPC session sends each member a leave, but not over a connection that is closed:
    dialling a stopped share holder held ``close_all_sessions`` (test teardowns, a driver's exit)
    for the whole connect timeout. The stopped member ends the session itself when its grace
    period for this client ends."""
    from syft_mpc.mpc_session.driver import close_all_sessions

    token = os.urandom(32).hex()
    names = ("lvbob", "lvalice", "lvcarol")
    with CliWorker(names[0], token, tmp_path / "b.log") as b, CliWorker(names[1], token, tmp_path / "a.log") as a, \
            CliWorker(names[2], token, tmp_path / "c.log") as c:
        bob, alice, carol = (client(w, False, timeout_s=20) for w in (b, a, c))
        x = torch.tensor([1.5, -2.0]).fix_prec().share(bob, alice, crypto_provider=carol)
        assert torch.allclose((x * x).get().float_precision(), torch.tensor([2.25, 4.0]), atol=1e-3)
        bob.close()
        with stopped(b.pid):
            t0 = time.monotonic()
            close_all_sessions()
            took = time.monotonic() - t0
        assert took < 3.0, f"closing the sessions waited {took:.1f} s for a stopped worker"
        del x
        for w in (bob, alice, carol):
            w.close()
