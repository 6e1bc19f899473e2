"""Integrity without TLS: a man in the middle on 127.0.0.1 between a driver and a real worker
process alters, replays, reorders, drops and injects frames after the handshake. Every one is
detected (the frame's MAC fails, rust/transport/src/frame.rs), the connection closes with a
clear error, nothing tampered with is acted on, and the worker keeps serving other clients.

The relay (`TamperingRelay`) parses the stream into frames: the handshake's three frames
each way are untagged, every later frame carries a 16-byte tag. It knows no key.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator, Optional

import pytest
import torch

import syft_mpc as sy
from syft_mpc import _native
from syft_mpc.errors import SerializationError
from syft_mpc.info import report
from syft_mpc.net.sealing import PREFIX, open_envelope, seal_envelope
from syft_mpc.remote import serde
from syft_mpc.remote.messages import Envelope, MpcJoin

from _worker_procs import stop_process
from _wire import HANDSHAKE_FRAMES, HEADER_LEN, TAG_LEN, header

Frame = tuple[bytes, bytes, bytes]  # header, payload, tag (b"" in the handshake)
#: Called for each frame after the handshake: (direction "c2w"/"w2c", index, frame) -> bytes to forward.
Policy = Callable[[str, int, Frame], bytes]

BIG = 1 << 16  # frames at least this long carry tensor data


def _read_exact(s: socket.socket, n: int) -> Optional[bytes]:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class TamperingRelay:
    """Forwards TCP connections to ``target`` frame by frame, passing each post-handshake frame
    through ``policy`` (set per test)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.policy: Policy = lambda d, i, f: b"".join(f)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.closed = threading.Event()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                c, _ = self.listener.accept()
            except OSError:
                continue
            w = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [c, w]
            for src, dst, d in ((c, w, "c2w"), (w, c, "w2c")):
                threading.Thread(target=self._pump, args=(src, dst, d), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        n = 0
        try:
            while True:
                h = _read_exact(src, HEADER_LEN)
                if h is None:
                    break
                payload = _read_exact(src, struct.unpack("<I", h[6:])[0])
                tag = _read_exact(src, TAG_LEN) if n >= HANDSHAKE_FRAMES else b""
                if payload is None or tag is None:
                    break
                f = (h, payload, tag)
                out = b"".join(f) if n < HANDSHAKE_FRAMES else self.policy(direction, n - HANDSHAKE_FRAMES, f)
                dst.sendall(out)
                n += 1
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for s in self.socks:
            s.close()


class Worker:
    """One real worker process; its log (stderr, warnings only) is collected in ``log``."""

    def __init__(self, name: str, token: "str | None" = None) -> None:
        self.name, self.token = name, token or secrets.token_hex(32)
        env = {**os.environ, "SYFT_MPC_TOKEN": self.token}
        cmd = [sys.executable, "-m", "syft_mpc", "worker", "--id", name, "--port", "0", "--quiet"]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline().decode().strip()
        assert line.startswith("listening on "), line
        self.port = int(line.rpartition(":")[2])
        self.lines: list[str] = []
        err = self.proc.stderr
        threading.Thread(target=lambda: self.lines.extend(l.decode("utf-8", "replace") for l in err), daemon=True).start()

    def log(self) -> str:
        return "".join(self.lines)

    def wait_log(self, text: str, since: int = 0, timeout_s: float = 20.0) -> str:
        """The log from line ``since`` on, once it holds ``text`` (or after the timeout)."""
        deadline = time.monotonic() + timeout_s
        while text not in "".join(self.lines[since:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return "".join(self.lines[since:])

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    w = Worker("ibob")
    yield w
    w.stop()


@pytest.fixture
def relay(worker: Worker) -> Iterator[TamperingRelay]:
    r = TamperingRelay(worker.port)
    yield r
    r.close()


@pytest.fixture(scope="module")
def hook() -> sy.TorchHook:
    return sy.TorchHook(torch)


def client(hook: sy.TorchHook, worker: Worker, port: int) -> sy.SocketWorker:
    return sy.SocketWorker(hook, id=worker.name, host="127.0.0.1", port=port, token=worker.token,
                           known_workers={}, timeout_s=10.0)


def still_serving(hook: sy.TorchHook, worker: Worker) -> None:
    """An honest client connected directly gets right answers."""
    w = client(hook, worker, worker.port)
    try:
        x, y = torch.tensor([1.5, 2.0]).send(w), torch.tensor([10.0, 20.0]).send(w)
        assert torch.equal((x + y).get(), torch.tensor([11.5, 22.0]))
    finally:
        w.close()
    assert worker.proc.poll() is None


def once(select: Callable[[str, int, Frame], bool], act: Callable[[Frame], bytes]) -> Policy:
    """A policy that applies ``act`` to the first frame ``select`` picks, and forwards the rest."""
    done = [False]

    def policy(direction: str, i: int, f: Frame) -> bytes:
        if not done[0] and select(direction, i, f):
            done[0] = True
            return act(f)
        return b"".join(f)

    return policy


def big(direction: str) -> Callable[[str, int, Frame], bool]:
    return lambda d, i, f: d == direction and len(f[1]) >= BIG


def flip_last_bytes(f: Frame) -> bytes:
    """1234.5 (float64) -> -999.0: the issue's rewrite of the last tensor element."""
    h, p, t = f
    return h + p[:-8] + struct.pack("<d", -999.0) + t


# A tensor of 3 MiB: three 1 MiB frames and a fourth, all in flight at once (reordering
# and replays within one message need several frames on the wire together).
def payload() -> torch.Tensor:
    return torch.full((3 * (1 << 17) + 7,), 1234.5, dtype=torch.float64)


def test_a_flipped_tensor_byte_from_the_worker_is_an_integrity_error(
    hook: sy.TorchHook, worker: Worker, relay: TamperingRelay
) -> None:
    w = client(hook, worker, relay.port)
    x = payload().send(w)
    relay.policy = once(big("w2c"), flip_last_bytes)
    with pytest.raises(sy.IntegrityError, match=r"integrity check failed.*frame \d+") as e:
        x.get()
    assert e.value.peer is not None and "ibob" in e.value.peer
    w.close()
    still_serving(hook, worker)


@pytest.mark.parametrize(
    "attack",
    ["flip", "replay", "reorder", "drop", "inject"],
)
def test_tampering_from_the_client_side_is_detected_and_nothing_is_stored(
    hook: sy.TorchHook, worker: Worker, relay: TamperingRelay, attack: str
) -> None:
    held: list[bytes] = []

    def replay(f: Frame) -> bytes:
        return b"".join(f) * 2

    def reorder(f: Frame) -> bytes:
        held.append(b"".join(f))
        return b""

    def inject(f: Frame) -> bytes:
        # A whole request, framed and with a made-up tag (no key): a `mul_(-1)` on the wire.
        forged = b"R" + serde.encode(Envelope("mallory", [], None))
        return header(len(forged)) + forged + secrets.token_bytes(TAG_LEN) + b"".join(f)

    acts = {"flip": flip_last_bytes, "replay": replay, "reorder": reorder, "drop": lambda f: b"", "inject": inject}
    first = once(big("c2w"), acts[attack])

    def policy(d: str, i: int, f: Frame) -> bytes:
        out = first(d, i, f)
        if held and out == b"".join(f) and d == "c2w":  # the frame after the held one goes first
            out += held.pop()
        return out

    before = len(worker.lines)
    w = client(hook, worker, relay.port)
    assert isinstance(w.sync(), int)  # connected and greeted through the relay, untouched
    relay.policy = policy
    with pytest.raises(sy.TransportError) as e:
        x = payload().send(w)
        x.get()
    # The worker closed at the first bad frame and said why in its log; the client gets
    # the worker's alert (IntegrityError) or, when still sending the rest of the tensor,
    # a closed connection (PeerDisconnected).
    log = worker.wait_log("integrity check failed", since=before)
    assert "integrity check failed" in log, (log, e.value)
    assert isinstance(e.value, (sy.IntegrityError, sy.PeerDisconnected)), e.value
    assert "ibob" in str(e.value)
    w.close()
    still_serving(hook, worker)


def test_a_tampered_request_comes_back_as_an_integrity_error_from_the_worker(
    hook: sy.TorchHook, worker: Worker, relay: TamperingRelay
) -> None:
    """A small request altered on the way: the worker rejects it and says so in a last,
    tagged alert frame, so the waiting client gets an IntegrityError too, not just a
    closed connection."""
    w = client(hook, worker, relay.port)
    assert isinstance(w.sync(), int)
    before = len(worker.lines)

    def flip_kind(f: Frame) -> bytes:
        h, p, t = f
        return h + bytes([p[0] ^ 0x01]) + p[1:] + t  # "S" (sync) becomes "R" (request)

    relay.policy = once(lambda d, i, f: d == "c2w", flip_kind)
    with pytest.raises(sy.IntegrityError, match="found a frame from this side altered"):
        w.sync()
    assert "integrity check failed" in worker.wait_log("integrity check failed", since=before)
    w.close()
    still_serving(hook, worker)


def test_the_mpc_session_secret_never_crosses_the_wire_in_clear(worker: Worker) -> None:
    """``MpcJoin``'s token is sealed for the connection it travels on: what a sniffer sees is
    neither the token nor usable on another connection."""
    c1 = _native.Connection.connect(f"127.0.0.1:{worker.port}", worker.token, worker.name, timeout_s=10)
    c2 = _native.Connection.connect(f"127.0.0.1:{worker.port}", worker.token, worker.name, timeout_s=10)
    try:
        token = secrets.token_hex(16)
        join = Envelope("driver", [], MpcJoin("syft-x", 0, ["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:3", token, 5.0))
        sealed = seal_envelope(join, c1)
        assert isinstance(sealed.body, MpcJoin) and sealed.body.token.startswith(PREFIX)
        wire = serde.encode(sealed)
        assert token.encode() not in wire and bytes.fromhex(token) not in wire
        assert seal_envelope(join, c1).body.token != sealed.body.token  # fresh salt every time
        # Both ends of c1 compute the same exporter secret; c2 (another connection) does not.
        assert c1.export_secret(b"ctx") != c2.export_secret(b"ctx")
        assert c1.export_secret(b"ctx") != c1.export_secret(b"other")
        with pytest.raises(SerializationError, match="another connection"):
            open_envelope(sealed, c2)
        with pytest.raises(SerializationError, match="unsealed"):
            open_envelope(join, c1)
    finally:
        c1.close()
        c2.close()


def test_an_mpc_session_through_sealed_joins_computes_right(hook: sy.TorchHook) -> None:
    """End to end: joins sealed by the driver, opened by each worker process, and the
    parties and crypto provider authenticate each other with the opened token."""
    token = secrets.token_hex(32)
    ws = [Worker(n, token) for n in ("ialice", "icarol", "idave")]
    try:
        a, c, d = (client(hook, w, w.port) for w in ws)
        x = torch.tensor([1.25, -2.5, 3.0])
        y = torch.tensor([4.0, 0.5, -1.0])
        xs = x.fix_prec().share(a, c, crypto_provider=d)
        ys = y.fix_prec().share(a, c, crypto_provider=d)
        got = (xs * ys).get().float_prec()
        assert torch.allclose(got, x * y, atol=1e-2)
        for w in (a, c, d):
            w.close()
        for w in ws:
            assert "Error" not in w.log(), w.log()
    finally:
        for w in ws:
            w.stop()


def test_weak_tokens_are_refused_everywhere(tmp_path: "os.PathLike[str]") -> None:
    """A token that one recorded handshake would let an attacker guess offline is refused by
    every entry point, with an error that says how to make a good one."""
    for weak in ("secret", "not-the-right-token", "ab" * 40, "0123456789abcdef0123456789abcde"):
        with pytest.raises(sy.ShapeError, match="too weak.*token_hex"):
            _native.check_token(weak)
        with pytest.raises(sy.ShapeError, match="too weak"):
            _native.Connection.connect("127.0.0.1:9", weak, "bob", timeout_s=1)
        with pytest.raises(sy.ShapeError, match="too weak"):
            _native.Listener("127.0.0.1:0", weak, "bob")
        with pytest.raises(sy.ShapeError, match="too weak"):
            _native.Party.connect(0, ["127.0.0.1:9", "127.0.0.1:10"], "127.0.0.1:11", weak, timeout_s=1)
    for good in (secrets.token_hex(16), secrets.token_hex(32), secrets.token_urlsafe(32)):
        _native.check_token(good)
    env = {**os.environ, "SYFT_MPC_TOKEN": "password-password"}
    r = subprocess.run([sys.executable, "-m", "syft_mpc", "worker", "--id", "w", "--port", "0"], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert r.returncode != 0 and b"too weak" in r.stderr, r.stderr


def test_the_frame_mac_runs_on_the_fastest_path_this_cpu_has() -> None:
    """`sy.native_info()` names the POLYVAL path the tags are computed on, and it is the fastest
    one the CPU's flags allow (all paths give the same tags: rust/transport/src/frame.rs tests)."""
    info = sy.native_info()["frame_mac"]
    assert info["chosen"] == info["available"][0] and "portable" in info["available"]
    flags = set(sy.native_info()["cpu_flags"])
    if {"avx512f", "vpclmulqdq"} <= flags:
        assert info["chosen"] == "vpclmulqdq"
    elif "pclmulqdq" in flags:
        assert info["chosen"] == "pclmulqdq"
    assert "frame MAC  POLYVAL on " + info["chosen"] in report()
