"""Leaks: a worker's memory over 100,000 remote ops, pointer garbage collection, MPC session
cleanup, and what a client that disconnects leaves behind."""

from __future__ import annotations

import gc
import secrets
import threading
import time
from typing import Any, Callable, Iterator

import pytest
import torch

import syft_mpc as sy
from syft_mpc import mpc_session
from syft_mpc.errors import ObjectNotFoundError
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.remote.messages import MpcRun
from syft_mpc.mpc_session import close_all_sessions, group_of
from syft_mpc.remote.serde import ObjRef
from syft_mpc.net.server import WorkerServer

hook = sy.TorchHook(torch)

N_OPS = 100_000
WARMUP = 10_000
# A leak of one result per op would keep (N_OPS - WARMUP) tensors of 256 float32: 90,000 x
# (1 KiB of data + ~0.3 KiB of tensor and dict overhead) ~ 120 MB; even a 100-byte record per
# op (an id in a dict) would be 9 MB. Allocator noise after the warm-up is well under 1 MB.
RSS_BOUND_KB = 6 * 1024


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def wait_until(cond: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def leaky() -> Iterator[tuple[LocalWorkers, sy.SocketWorker]]:
    with LocalWorkers(["leaky"], grace_s=1.0, quiet=True) as c:
        w = sy.SocketWorker(hook, id="leaky", port=c.port("leaky"), token=c.token, known_workers={})
        try:
            yield c, w
        finally:
            w.close()


def test_worker_rss_flat_over_100k_remote_ops(leaky: tuple[LocalWorkers, sy.SocketWorker]) -> None:
    """100,000 `x + y` on 256-element pointers (each result dropped, so its deletion rides on
    the next request) plus a `.get()` every 100: after a 10,000-op warm-up the worker's RSS
    grows by less than RSS_BOUND_KB and its object count returns exactly to where it was.

    The ops are posted (their result shapes are inferred in the driver, no reply awaited),
    so 100,000 of them fit in a test; the `.get()`s keep the pipeline bounded."""
    c, w = leaky
    pid = c.procs["leaky"].pid
    base = w.sync()
    x = torch.randn(256).send(w)
    y = torch.randn(256).send(w)
    expected = x.copy().get() + y.copy().get()
    rss0 = 0
    for i in range(N_OPS):
        z = x + y
        if i % 100 == 99:
            assert torch.equal(z.get(), expected)
        if i == WARMUP - 1:
            w.sync()
            rss0 = rss_kb(pid)
    del z
    sy.local_worker.flush_gc()
    assert w.sync() == base + 2
    growth = rss_kb(pid) - rss0
    assert growth < RSS_BOUND_KB, f"worker RSS grew by {growth} kB over {N_OPS - WARMUP} ops"
    del x, y
    sy.local_worker.flush_gc()
    assert w.sync() == base


def test_dropped_pointers_are_deleted_in_one_batch(leaky: tuple[LocalWorkers, sy.SocketWorker]) -> None:
    """Dropping pointers sends nothing by itself (no I/O in a finalizer); the deletions ride
    on the next request to that worker, or go out together with `flush_gc()`, as one message."""
    c, w = leaky
    base = w.sync()
    ptrs = [torch.full((4,), float(i)).send(w) for i in range(200)]
    assert w.sync() == base + 200
    ids = {p.id_at_location for p in ptrs}
    conn = w._conn
    assert conn is not None
    sent = conn.stats()["messages_sent"]
    del ptrs
    gc.collect()
    assert set(sy.local_worker._gc_pending[w]) == ids
    assert conn.stats()["messages_sent"] == sent  # nothing sent yet
    assert w.sync() == base + 200
    sent = conn.stats()["messages_sent"]
    sy.local_worker.flush_gc()
    assert conn.stats()["messages_sent"] == sent + 1  # all 200 in one envelope
    assert w.sync() == base
    # Riding on the next request: the deletions travel with a Store.
    ptrs = [torch.ones(2).send(w) for _ in range(10)]
    del ptrs
    keep = torch.zeros(3).send(w)
    assert w not in sy.local_worker._gc_pending
    assert w.sync() == base + 1
    # A pointer whose object is gone (got) is not deleted twice.
    assert torch.equal(keep.get(), torch.zeros(3))
    assert w not in sy.local_worker._gc_pending and w.sync() == base


# ============================================================================ MPC sessions


def _dealer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dealer-lk-james-")]


def test_mpc_sessions_closed_or_failed_leave_no_state() -> None:
    """Each worker keeps its party (or the crypto provider its dealer and serve thread) per
    session; closing the session removes them on every worker, and so does a session that
    failed mid-operation (parties aborted, dealer stopped)."""
    bob, alice, james = (sy.VirtualWorker(hook, id=f"lk-{n}") for n in ("bob", "alice", "james"))
    x = torch.tensor([1.5, -2.0]).fix_prec().share(bob, alice, crypto_provider=james)
    assert torch.allclose((x * x).get().float_prec(), torch.tensor([2.25, 4.0]), atol=1e-3)
    g = group_of([bob, alice], james)
    assert g.session is not None
    for w in (bob, alice, james):
        assert list(w._mpc_sessions) == [g.session]  # type: ignore[attr-defined]
    assert len(_dealer_threads()) == 1
    g.close()
    for w in (bob, alice, james):
        assert w._mpc_sessions == {}  # type: ignore[attr-defined]
    wait_until(lambda: not _dealer_threads(), 5, lambda: f"dealer threads {_dealer_threads()}")

    # A failure inside an interactive op: every party aborts and forgets the session.
    (x * x).get()
    session = g.session
    assert session is not None
    with pytest.raises(ObjectNotFoundError):
        g.run("mul", (ObjRef(12345), ObjRef(12345)))
    assert g.session is None
    for w in (bob, alice, james):
        assert session not in w._mpc_sessions  # type: ignore[attr-defined]
    wait_until(lambda: not _dealer_threads(), 5, lambda: f"dealer threads {_dealer_threads()}")
    assert torch.allclose((x * x).get().float_prec(), torch.tensor([2.25, 4.0]), atol=1e-3)  # a new session
    del x
    gc.collect()
    sy.local_worker.flush_gc()
    assert not bob._objects and not alice._objects and not james._objects
    close_all_sessions()


class _LosesReplies(sy.VirtualWorker):
    """Runs every request, but the reply to an `MpcRun` of op `lose` never arrives (a link
    that drops after the worker did its part)."""

    lose = ""

    def _deliver(self, data: bytes) -> bytes:
        reply = self.handle(data)
        env = sy.serde.decode(data)
        if isinstance(env.body, MpcRun) and env.body.op == self.lose:
            raise sy.PeerDisconnected(f"worker {self.id}: the connection was closed")
        return reply


def test_failed_interactive_op_leaves_no_results_behind() -> None:
    """Holders that finished an interactive op whose reply was lost elsewhere keep no
    orphan results (the driver deletes the ids it will never hand out)."""
    bob = _LosesReplies(hook, id="lk-lossy-bob")
    alice, james = sy.VirtualWorker(hook, id="lk-lossy-alice"), sy.VirtualWorker(hook, id="lk-lossy-james")
    x = torch.tensor([3, 4]).share(bob, alice, crypto_provider=james)
    before = len(bob._objects), len(alice._objects)
    bob.lose = "mul"
    with pytest.raises(sy.PeerDisconnected, match="lk-lossy-bob"):
        x * x
    bob.lose = ""
    sy.local_worker.flush_gc()
    assert (len(bob._objects), len(alice._objects)) == before
    assert torch.equal((x * x).get(), torch.tensor([9, 16]))
    close_all_sessions()


def test_fan_out_keeps_a_workers_timeout_error() -> None:
    """A worker's own PeerTimeout stays a PeerTimeout naming it (a TimeoutError too, so it
    must not be mistaken for the fan-out's own wait running out)."""

    class Hung(sy.VirtualWorker):
        def _deliver(self, data: bytes) -> bytes:
            err = sy.PeerTimeout(f"worker {self.id} at 127.0.0.1:1: a request failed: timed out after 1s")
            err.worker = self.id  # type: ignore[attr-defined]
            raise err

    hung, fine = Hung(hook, id="lk-hung"), sy.VirtualWorker(hook, id="lk-fine")
    with pytest.raises(sy.PeerTimeout, match="worker lk-hung") as info:
        mpc_session.fan_out([(fine, None), (hung, None)])
    assert info.value.worker == "lk-hung"  # type: ignore[attr-defined]


# ============================================================================ clients that leave


@pytest.fixture
def servers() -> Iterator[dict[str, WorkerServer]]:
    """Three worker servers in this process (so their stores can be inspected), grace 0.5 s."""
    token = secrets.token_hex(32)
    out: dict[str, WorkerServer] = {}
    threads = []
    try:
        for n in ("lk-s-bob", "lk-s-alice", "lk-s-carol"):
            s = WorkerServer(n, "127.0.0.1", 0, token, grace_s=0.5, timeout_s=5.0)
            out[n] = s
            t = threading.Thread(target=s.serve_forever, daemon=True)
            t.start()
            threads.append(t)
        yield out
    finally:
        for s in out.values():
            s.stop()
        for t in threads:
            t.join(10)


def test_disconnected_client_objects_and_sessions_freed_after_grace(servers: dict[str, WorkerServer]) -> None:
    """A driver that goes away without cleaning up (its process died): once its grace period
    is over, every worker has freed the objects it stored and aborted the MPC parties it
    opened, and the crypto provider's dealer has stopped."""
    ws: dict[str, Any] = {}
    for n, s in servers.items():
        ws[n] = sy.SocketWorker(hook, id=n, port=int(s.address.rpartition(":")[2]), token=s.token, timeout_s=5.0)
    bob, alice, carol = ws["lk-s-bob"], ws["lk-s-alice"], ws["lk-s-carol"]
    try:
        x = torch.tensor([2, 3]).share(bob, alice, crypto_provider=carol)
        assert torch.equal((x * x).get(), torch.tensor([4, 9]))
        p = torch.ones(3).send(bob)
        sy.local_worker.flush_gc()
        bob.sync()
        alice.sync()  # deletions may still be posted (asynchronous MPC runs)
        stores = {n: s.worker for n, s in servers.items()}
        assert len(stores["lk-s-bob"]._objects) == 2 and len(stores["lk-s-alice"]._objects) == 1  # x; p
        assert all(len(w.__dict__.get("_mpc_sessions", {})) == 1 for w in stores.values())
        for w in ws.values():  # the driver vanishes: connections close, nothing is deleted
            w.close()
        time.sleep(0.2)
        assert len(stores["lk-s-bob"]._objects) == 2  # kept during the grace period
        wait_until(
            lambda: all(not w._objects and not w.__dict__.get("_mpc_sessions") for w in stores.values()),
            10,
            lambda: str({n: (len(w._objects), w.__dict__.get("_mpc_sessions")) for n, w in stores.items()}),
        )
        wait_until(
            lambda: not [t for t in threading.enumerate() if t.name.startswith("dealer-lk-s-carol")],
            5,
            lambda: "the dealer's serve thread is still running",
        )
        for w in ws.values():  # the workers keep serving (the same client may come back)
            assert (torch.tensor([1.0]).send(w) + 1).get().item() == 2.0
        p._consume("freed by the worker")
    finally:
        # Nothing of this test's workers may stay queued in the driver.
        x = None  # type: ignore[assignment]
        gc.collect()
        for w in ws.values():
            sy.local_worker._gc_pending.pop(w, None)
        group = mpc_session.driver._GROUPS.pop(("lk-s-bob", "lk-s-alice", "|", "lk-s-carol"), None)
        if group is not None:
            group.session = None
            group._stale.clear()
        for w in ws.values():
            w.close()


def test_flush_gc_reaches_a_restarted_worker_not_its_old_address() -> None:
    """Deletions queued for a worker that was restarted (a new SocketWorker under the same
    id) go through the worker known now: they used to be sent to the old object, i.e. the
    dead address, waiting out a connect timeout and raising."""
    old = sy.VirtualWorker(hook, id="lk-restarted")
    p = torch.ones(2).send(old)

    def gone(data: bytes) -> bytes:
        raise sy.PeerDisconnected("worker lk-restarted at 127.0.0.1:1: connecting failed")

    old._deliver = gone  # type: ignore[method-assign]
    new = sy.VirtualWorker(hook, id="lk-restarted")
    seen: list[bytes] = []
    new._deliver = lambda data: (seen.append(data), sy.VirtualWorker.handle(new, data))[1]  # type: ignore[method-assign]
    del p
    assert old in sy.local_worker._gc_pending
    sy.local_worker.flush_gc()
    assert new not in sy.local_worker._gc_pending and len(seen) == 1


def test_deletions_lost_with_a_broken_link_are_sent_again() -> None:
    """Deletions riding on a request whose link broke may never have arrived: they go out
    again with the next request (after the reconnect) instead of leaking until the client
    leaves; after a failed connect (the worker is gone) they are dropped, not kept forever."""

    class Link(sy.VirtualWorker):
        """A worker behind a connection: `broken` requests are lost on the way."""

        _conn: Any = object()
        broken = 0

        def _deliver(self, data: bytes) -> bytes:
            if self.broken:
                self.broken -= 1
                self._conn = None  # what a SocketWorker does when its link fails
                raise sy.PeerDisconnected(f"worker {self.id} at 127.0.0.1:1: a request failed: closed")
            self._conn = object()  # (re)connected
            return self.handle(data)

    w = Link(hook, id="lk-link")
    ptrs = [torch.ones(2).send(w) for _ in range(3)]
    keep = torch.zeros(2).send(w)
    del ptrs
    w.broken = 1
    with pytest.raises(sy.PeerDisconnected, match="lk-link"):
        keep.get()  # the three deletions ride on this request, which is lost
    assert len(w._objects) == 4 and len(sy.local_worker._gc_pending[w]) == 3
    assert torch.equal(keep.get(), torch.zeros(2))  # reconnects; the deletions go along
    assert not w._objects and w not in sy.local_worker._gc_pending
    # A worker that is gone: flush_gc drops its deletions without failing the caller (a
    # stale queue entry must not break an unrelated flush).
    ptrs = [torch.ones(2).send(w) for _ in range(2)]
    del ptrs
    w.broken = 1
    sy.local_worker.flush_gc()
    assert w not in sy.local_worker._gc_pending


def test_a_deletion_queued_while_the_queue_is_sent_is_not_lost() -> None:
    """A finalizer on another thread queues a deletion while this thread takes the queue to
    send it: the id must go out with that request or stay queued, never be appended to a
    list that was already sent. The finalizer is paused inside its queue update (between
    looking the list up and appending to it), the widest form of the window."""
    w = sy.VirtualWorker(hook, id="lk-gc-race")
    keep = torch.ones(2).send(w)
    dead = torch.zeros(2).send(w)
    dead_id = dead.id_at_location
    inside, resume = threading.Event(), threading.Event()
    lw = sy.local_worker

    class Pausing(dict):  # type: ignore[type-arg]
        def setdefault(self, key: Any, default: Any = None) -> Any:
            got = super().setdefault(key, default)
            if threading.current_thread() is finalizer:
                inside.set()
                resume.wait(5)
            return got

    lw._gc_pending = Pausing(lw._gc_pending)
    try:
        finalizer = threading.Thread(target=lw._queue_delete, args=(w, dead_id))
        finalizer.start()
        assert inside.wait(5)
        sender = threading.Thread(target=lw.flush_gc)  # takes and sends w's queue
        sender.start()
        sender.join(0.3)  # without the queue lock it has sent (and lost the id) by now
        resume.set()
        finalizer.join(5)
        sender.join(5)
        lw.flush_gc()
        assert not finalizer.is_alive() and not sender.is_alive()
        assert dead_id not in w._objects, "the deletion was lost"
        assert keep.id_at_location in w._objects
    finally:
        resume.set()
        lw._gc_pending = dict(lw._gc_pending)
        dead.garbage_collect_data = False  # deleted above; its finalizer must not queue it again
