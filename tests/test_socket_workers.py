"""Workers in their own processes: SocketWorker against real `syft-mpc worker` processes on free ports.

Every worker process is started by `syft_mpc.net.launch.LocalWorkers` inside a fixture or a
`with` block, so it is stopped (SIGTERM, then SIGKILL) also when a test fails.
"""

from __future__ import annotations

import gc
import os
import pathlib
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest
import torch

import syft_mpc as sy
from syft_mpc import _native
from syft_mpc.remote import serde
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.errors import ObjectNotFoundError, RemoteError
from syft_mpc.remote.messages import Envelope, Err, Fetch, Store, new_id

ROOT = pathlib.Path(__file__).resolve().parents[1]
hook = sy.TorchHook(torch)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalWorkers]:
    with LocalWorkers(["bob", "alice", "secure_worker"], grace_s=1.0, quiet=True) as c:
        yield c


def connect(c: LocalWorkers, name: str, **kw: object) -> sy.SocketWorker:
    return sy.SocketWorker(hook, id=name, host="127.0.0.1", port=c.port(name), token=c.token, **kw)  # type: ignore[arg-type]


def test_tutorial_flows_over_sockets(cluster: LocalWorkers) -> None:
    bob, alice = connect(cluster, "bob"), connect(cluster, "alice")
    base_bob, base_alice = bob.sync(), alice.sync()
    # flow 1: remote execution and autograd
    x = torch.tensor([1, 2, 3, 4, 5]).send(bob)
    y = torch.tensor([1, 1, 1, 1, 1]).send(bob)
    z = x + x
    assert bob.sync() == base_bob + 3
    assert x.location == bob and x.owner == sy.local_worker and x.shape == torch.Size([5])
    assert torch.equal(x.get(), torch.tensor([1, 2, 3, 4, 5])) and torch.equal(z.get(), torch.tensor([2, 4, 6, 8, 10])) and torch.equal(y.get(), torch.ones(5, dtype=torch.long))
    assert bob.sync() == base_bob
    a = torch.tensor([1, 2, 3, 4, 5.0], requires_grad=True).send(bob)
    b = torch.tensor([1, 1, 1, 1, 1.0], requires_grad=True).send(bob)
    (a + b).sum().backward()
    assert torch.equal(a.get().grad, torch.ones(5))
    # flow 2: pointer chains and move (bob -> alice directly)
    p2p2x = torch.tensor([1, 2, 3, 4, 5]).send(bob).send(alice)
    y2 = p2p2x + p2p2x
    assert bob.sync() >= base_bob + 2 and alice.sync() == base_alice + 2
    assert torch.equal(y2.get().get(), torch.tensor([2, 4, 6, 8, 10]))
    assert torch.equal(p2p2x.get().get(), torch.tensor([1, 2, 3, 4, 5]))
    del a, b
    sy.local_worker.flush_gc()
    assert bob.sync() == base_bob and alice.sync() == base_alice
    m = torch.tensor([1, 2, 3, 4, 5]).send(bob).move(alice)
    assert m.location == alice and bob.sync() == base_bob and alice.sync() == base_alice + 1
    assert torch.equal(m.get(), torch.tensor([1, 2, 3, 4, 5]))
    # remote errors keep the worker's objects; GC of a dropped pointer
    w = torch.ones(3).send(bob)
    with pytest.raises(RuntimeError, match="on worker bob"):
        w.view(7)
    del w
    gc.collect()  # the remote error's traceback holds w in a reference cycle (as with VirtualWorker)
    sy.local_worker.flush_gc()
    assert bob.sync() == base_bob


def test_modules_and_optimizers_match_local_training(cluster: LocalWorkers) -> None:
    bob = connect(cluster, "bob")
    torch.manual_seed(1)
    data, target = torch.randn(8, 3), torch.randn(8, 1)
    local = torch.nn.Linear(3, 1)
    remote = torch.nn.Linear(3, 1)
    remote.load_state_dict(local.state_dict())
    opt_l = torch.optim.Adam(local.parameters(), lr=0.1)
    opt_r = torch.optim.Adam(remote.parameters(), lr=0.1)
    d, t = data.send(bob), target.send(bob)
    remote.send(bob)
    for _ in range(3):
        opt_l.zero_grad()
        ((local(data) - target) ** 2).sum().backward()
        opt_l.step()
        opt_r.zero_grad()
        ((remote(d) - t) ** 2).sum().backward()
        opt_r.step()
    remote.get()
    assert torch.equal(remote.weight.data, local.weight.data) and torch.equal(remote.bias.data, local.bias.data)


def test_new_empty_on_a_worker_process_is_zero_filled(cluster: LocalWorkers) -> None:
    """A worker process reuses freed memory: ``new_empty`` there still gives zeros."""
    bob = connect(cluster, "bob")
    x = torch.ones(2).send(bob)
    for _ in range(5):
        junk = [torch.full((300,), 7.5).send(bob) for _ in range(4)]
        del junk
        gc.collect()
        assert torch.equal(x.new_empty((300,)).get(), torch.zeros(300))


def test_posted_requests_run_in_order_and_report_failures(cluster: LocalWorkers) -> None:
    bob = connect(cluster, "bob")
    assert bob.asynchronous
    oid = new_id()
    bob._post(serde.encode(Envelope("me", [], Store(oid, torch.ones(2)))))
    bob._post(serde.encode(Envelope("me", [], Store(oid, torch.ones(2)))))  # id in use: fails on bob
    with pytest.raises(ValueError, match="already in use.*without waiting"):
        bob.sync()
    bob._post(serde.encode(Envelope("me", [oid], None)))
    assert (torch.tensor([5]).send(bob) * 2).get().item() == 10  # the connection keeps working


def test_request_refused_for_a_posted_failure_still_applies_its_deletions(cluster: LocalWorkers) -> None:
    """A request answered with an earlier posted request's failure is not run, but the
    deletions riding on it are: the client does not send them again."""
    bob = connect(cluster, "bob")
    dropped, oid = new_id(), new_id()
    bob._post(serde.encode(Envelope("me", [], Store(dropped, torch.ones(2)))))
    bob._post(serde.encode(Envelope("me", [], Store(oid, torch.ones(2)))))
    bob._post(serde.encode(Envelope("me", [], Store(oid, torch.ones(2)))))  # id in use: fails on bob
    reply = serde.decode(bob._deliver(serde.encode(Envelope("me", [dropped], Fetch(oid, False)))))
    assert isinstance(reply, Err) and "without waiting" in reply.message, reply
    with pytest.raises(ObjectNotFoundError):
        sy.local_worker._send(bob, Fetch(dropped, False))
    assert torch.equal(sy.local_worker._send(bob, Fetch(oid, True)), torch.ones(2))


def test_ops_are_posted_with_locally_inferred_results(cluster: LocalWorkers) -> None:
    """An op returns at once (no reply awaited) with a pointer described from meta tensors;
    the driver waits only for values; a posted op's failure surfaces at the next wait."""
    bob = connect(cluster, "bob")
    x = torch.arange(12.0).reshape(3, 4).send(bob)
    w = torch.ones(4, 2, requires_grad=True).send(bob)
    bob.sync()
    conn = bob._conn
    assert conn is not None
    before = conn.stats()["messages_received"]
    h = (x @ w).relu() * 2 + 1            # four ops, none waits for an answer
    s = h.sum(dim=0)
    assert conn.stats()["messages_received"] == before
    assert h.shape == torch.Size([3, 2]) and h.dtype == torch.float32 and h.requires_grad
    assert s.shape == torch.Size([2])
    expected = (torch.arange(12.0).reshape(3, 4) @ torch.ones(4, 2)).relu() * 2 + 1
    assert torch.equal(h.get(), expected) and torch.equal(s.get(), expected.sum(dim=0))
    # Data-dependent shapes and in-place ops fall back to a synchronous call.
    nz = torch.tensor([0, 3, 0, 5]).send(bob)
    assert nz.nonzero().shape == torch.Size([2, 1])
    v = torch.ones(3).send(bob)
    assert v.add_(1) is v and torch.equal(v.get(), torch.full((3,), 2.0))
    # A failure on the worker (integer division by zero) is raised by the next wait.
    i = torch.tensor([4, 6]).send(bob)
    bad = i.div(0, rounding_mode="floor")
    assert bad.shape == torch.Size([2])
    with pytest.raises(RemoteError, match="earlier request sent without waiting"):
        i.copy().get()
    assert torch.equal(i.get(), torch.tensor([4, 6]))  # the worker kept serving
    bob.close()


def test_concurrent_clients(cluster: LocalWorkers) -> None:
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            w = sy.SocketWorker(hook, id="alice", port=cluster.port("alice"), token=cluster.token, known_workers={})
            for i in range(20):
                p = torch.full((4,), float(k)).send(w)
                assert torch.equal((p + i).get(), torch.full((4,), float(k + i)))
            w.close()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_wrong_token_fails_fast_and_worker_keeps_serving(cluster: LocalWorkers) -> None:
    t0 = time.monotonic()
    with pytest.raises(sy.AuthenticationError, match="worker bob.*token") as info:
        sy.SocketWorker(hook, id="bob", port=cluster.port("bob"), token="not-the-right-token-" + "0123456789abcdef", known_workers={})
    assert time.monotonic() - t0 < 5
    assert "different keys or tokens" in str(info.value)
    with pytest.raises(sy.AuthenticationError, match="worker carol"):  # another worker at that port
        sy.SocketWorker(hook, id="carol", port=cluster.port("bob"), token=cluster.token, known_workers={})
    bob = connect(cluster, "bob")
    assert (torch.tensor([1, 2]).send(bob) + 1).get().tolist() == [2, 3]


def test_malformed_messages_close_only_that_connection(cluster: LocalWorkers) -> None:
    addr = cluster.addresses["bob"]
    for bad in (b"Znonsense", b"R" + b"garbage", b"A" + serde.encode([1, 2])):
        conn = _native.Connection.connect(addr, cluster.token, "bob", timeout_s=5)
        conn.send(bad)
        reply = serde.decode(conn.recv(5))
        assert reply.err_type == "SerializationError" and "connection was closed" in reply.message
        with pytest.raises(sy.PeerDisconnected):
            conn.recv(5)
    bob = connect(cluster, "bob")
    assert (torch.tensor([3]).send(bob) * 3).get().tolist() == [9]


def test_disconnected_client_objects_freed_after_grace(cluster: LocalWorkers) -> None:
    observer = sy.SocketWorker(hook, id="alice", port=cluster.port("alice"), token=cluster.token, known_workers={})
    driver = sy.SocketWorker(hook, id="alice", port=cluster.port("alice"), token=cluster.token, known_workers={})
    ptrs = [torch.ones(3).send(driver) for _ in range(3)]
    driver.sync()

    def held() -> int:
        n = 0
        for p in ptrs:
            try:
                sy.local_worker._send(observer, Fetch(p.id_at_location, False))
                n += 1
            except ObjectNotFoundError:
                pass
        return n

    assert held() == 3  # other clients see them (ids are the capability)
    driver.close()  # the driver goes away without deleting anything (grace: 1 s)
    assert held() == 3
    deadline = time.monotonic() + 10
    while held() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert held() == 0
    for p in ptrs:
        p._consume("test")  # nothing left to delete


def test_killed_or_hung_worker_gives_bounded_error() -> None:
    with LocalWorkers(["victim", "hung"], quiet=True) as c:
        # A generous timeout: a killed worker must be reported at once, not when it expires.
        victim = sy.SocketWorker(hook, id="victim", port=c.port("victim"), token=c.token, timeout_s=20.0)
        x = torch.ones(3).send(victim)
        assert (x + 1).get().tolist() == [2.0, 2.0, 2.0]
        c.kill("victim")
        t0 = time.monotonic()
        with pytest.raises(sy.TransportError, match="worker victim") as info:
            (x + 1).get()
        assert time.monotonic() - t0 < 5
        assert info.value.worker == "victim"  # type: ignore[attr-defined]

        hung = sy.SocketWorker(hook, id="hung", port=c.port("hung"), token=c.token, timeout_s=2.0)
        y = torch.ones(3).send(hung)
        os.kill(c.procs["hung"].pid, 19)  # SIGSTOP: alive but silent
        try:
            t0 = time.monotonic()
            r = y + 1  # posted (its shape is inferred here); the wait is in .get()
            with pytest.raises(sy.PeerTimeout, match="worker hung"):
                r.get()
            assert time.monotonic() - t0 < 8
        finally:
            os.kill(c.procs["hung"].pid, 18)  # SIGCONT, so SIGTERM can stop it
        for p in (x, y, r):
            p._consume("test")
        # Results of posted ops on the dead workers queued deletions: they cannot be sent.
        del info
        gc.collect()
        for w in (victim, hung):
            sy.local_worker._gc_pending.pop(w, None)


def test_port_in_use_gives_a_clear_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {**os.environ, "SYFT_MPC_TOKEN": secrets.token_hex(32)}
        out = subprocess.run(
            [sys.executable, "-m", "syft_mpc", "worker", "--id", "bob", "--port", str(port)],
            capture_output=True, text=True, timeout=60, env=env,
        )
    assert out.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr


def test_launch_runs_the_tutorial_doc_propagates_exit_code_and_stops_workers(tmp_path: pathlib.Path) -> None:
    """`syft-mpc launch` runs every code block of docs/TUTORIAL_POINTERS.md, with its
    VirtualWorkers replaced by SocketWorkers; the script's exit code comes back and the
    workers are gone afterwards."""
    doc = (ROOT / "docs" / "TUTORIAL_POINTERS.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", doc, flags=re.S))
    code, n = re.subn(r'sy\.VirtualWorker\(hook, id="(\w+)"\)', r'_socket_worker(hook, "\1")', code)
    assert n == 3
    prelude = (
        "import os, sys, syft_mpc as sy\n"
        "_addrs = {n: (h, p) for n, h, p in sy.socket_worker.parse_workers(os.environ['SYFT_MPC_WORKERS'])}\n"
        "def _socket_worker(hook, name):\n"
        "    h, p = _addrs[name]\n"
        "    return sy.SocketWorker(hook, id=name, host=h, port=p)\n"
    )
    tail = "\nprint('workers', os.environ['SYFT_MPC_WORKERS'])\nsys.exit(3)\n"
    script = tmp_path / "driver.py"
    script.write_text(prelude + code + tail)
    out = subprocess.run(
        [sys.executable, "-m", "syft_mpc", "launch", "--workers", "bob,alice,secure_worker", str(script)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 3, out.stderr
    assert "tensor(25)" in out.stdout and "tensor([2, 4, 6])" in out.stdout
    spec = out.stdout.split("workers ")[-1].strip()
    for _, host, port in sy.socket_worker.parse_workers(spec):
        with pytest.raises(OSError):
            socket.create_connection((host, port), timeout=2).close()
