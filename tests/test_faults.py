"""Fault injection on real worker processes: SIGKILL a party, the crypto provider or the driver
mid-training, stall or drop a driver-worker link, and checkpoint / resume after restarting every worker.

Expected everywhere: an error within a bounded time that names the failed worker, no hang,
and survivors that keep serving with consistent object stores (the failed MPC session's
state is gone: their objects and open file descriptors return to where they were).

Only driver-worker links go through the proxy (`tests/_proxy.py`): party-to-party and
party-to-dealer addresses are picked by the driver for each MPC session and used both to
listen and to connect, so nothing can sit between two parties without changing the product.
Stalling a party's own links is covered by stopping its process (SIGSTOP) in
`test_stalled_party_times_out_naming_it`.

Bounds: the driver's `SocketWorker(timeout_s=SOCKET_TIMEOUT)` bounds each wait for a worker
(`STALL_TIMEOUT` for the one a test stalls, set once training runs), `group_of(...).timeout_s
= MPC_TIMEOUT` each wait of a party for a peer or the dealer. They are generous for a loaded
machine; a kill must be noticed long before any of them.
"""

from __future__ import annotations

import gc
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

import syft_mpc as sy
from syft_mpc import _native, checkpoint
from syft_mpc.checkpoint import worker as checkpoint_worker
from syft_mpc.remote import messages, serde
from syft_mpc.errors import RemoteError, SerializationError
from syft_mpc.net.env import ENV_TOKEN, ENV_WORKERS
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.remote.messages import Envelope, Fetch
from syft_mpc.mpc_session import close_all_sessions, group_of

from _proxy import Proxy

hook = sy.TorchHook(torch)

SOCKET_TIMEOUT = 6.0
MPC_TIMEOUT = 4.0
STALL_TIMEOUT = 3.0
# A stall costs the wait of the op (the stalled worker's timeout, or a party's MPC timeout when
# its peer never got the request), then one probe of the stalled worker.
STALL_BOUND = MPC_TIMEOUT + 2 * STALL_TIMEOUT + 2
GRACE = 1.0
NAMES = ("bob", "alice", "carol")  # bob and alice hold shares, carol is the crypto provider


# ============================================================================ helpers


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(cond: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what()}")
        time.sleep(0.1)


class Cluster:
    """One `LocalWorkers` per worker, all with one token, so that any worker can be SIGKILLed
    and started again (same name, new port) on its own, in the background."""

    def __init__(self, names: "tuple[str, ...]" = NAMES, state_dirs: "dict[str, Path] | None" = None) -> None:
        self.names = names
        self.state_dirs = state_dirs or {}
        self.token = secrets.token_hex(32)
        self.workers: dict[str, LocalWorkers] = {}
        self._starting: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def _start(self, lw: LocalWorkers) -> None:
        try:
            lw.start()
        except BaseException as e:  # noqa: BLE001 - raised by ready()
            self._errors.append(e)

    def spawn(self, *names: str) -> None:
        """Starts these workers (default: all) without waiting; see :meth:`ready`."""
        for n in names or self.names:
            old = self.workers.get(n)
            if old is not None:
                old.stop()
            extra = ["--timeout", str(SOCKET_TIMEOUT)]
            if n in self.state_dirs:
                extra += ["--state-dir", str(self.state_dirs[n])]
            lw = LocalWorkers([n], grace_s=GRACE, quiet=True, extra_args=extra)
            lw.token = self.token
            self.workers[n] = lw
            t = threading.Thread(target=self._start, args=(lw,))
            t.start()
            self._starting.append(t)

    def ready(self) -> None:
        """Waits until every worker started by :meth:`spawn` listens."""
        for t in self._starting:
            t.join()
        self._starting.clear()
        if self._errors:
            raise self._errors.pop()

    def kill(self, name: str, respawn: bool = True) -> None:
        """SIGKILLs a worker; a replacement starts at once in the background (a new port)."""
        self.workers[name].kill(name)
        if respawn:
            self.spawn(name)

    def pid(self, name: str) -> int:
        return int(self.workers[name].procs[name].pid)

    def port(self, name: str) -> int:
        return self.workers[name].port(name)

    @property
    def env(self) -> dict[str, str]:
        spec = ",".join(f"{n}=127.0.0.1:{self.port(n)}" for n in self.names)
        return {ENV_WORKERS: spec, ENV_TOKEN: self.token}

    def stop(self) -> None:
        for t in self._starting:
            t.join()
        for lw in self.workers.values():  # SIGTERM them all first: they exit in parallel
            for proc in lw.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        for lw in self.workers.values():
            lw.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("worker-state")
    c = Cluster(state_dirs={n: state / n for n in NAMES})
    try:
        c.spawn()
        c.ready()
        yield c
    finally:
        c.stop()


def connect(c: Cluster, name: str, port: "int | None" = None, timeout_s: float = SOCKET_TIMEOUT) -> sy.SocketWorker:
    return sy.SocketWorker(
        hook, id=name, host="127.0.0.1", port=port or c.port(name), token=c.token, timeout_s=timeout_s
    )


class Driver:
    """The test process as the driver: SocketWorkers for the cluster and observers that
    measure each worker (object count, open fds) from another connection."""

    def __init__(self, c: Cluster, ports: "dict[str, int] | None" = None) -> None:
        self.c = c
        self.ws = {n: connect(c, n, (ports or {}).get(n)) for n in c.names}
        # Observers: other clients, kept apart from the driver's registry.
        self.obs = {
            n: sy.SocketWorker(hook, id=n, port=c.port(n), token=c.token, timeout_s=10.0, known_workers={}, announce=False)
            for n in c.names
        }

    def state(self, name: str) -> tuple[int, int]:
        """(objects held, open file descriptors): a session left open keeps its sockets. (Thread
        counts are no measure: torch starts its pools on a worker's first large op.)"""
        return self.obs[name].sync(), fds(self.c.pid(name))

    def close(self) -> None:
        close_all_sessions()
        gc.collect()
        for w in self.ws.values():
            sy.local_worker._gc_pending.pop(w, None)
        for w in (*self.ws.values(), *self.obs.values()):
            w.close()


@pytest.fixture
def driver(cluster: Cluster) -> Iterator[Driver]:
    cluster.ready()
    d = Driver(cluster)
    try:
        yield d
    finally:
        d.close()


def settle(d: Driver, names: "tuple[str, ...]") -> dict[str, tuple[int, int]]:
    """Each worker's (objects, fds) once earlier clients' objects and sessions are gone."""
    base: dict[str, tuple[int, int]] = {}
    for n in names:
        wait_until(lambda: d.obs[n].sync() == 0, 10 + GRACE, lambda: f"{n} still holds objects of earlier tests")
        base[n] = d.state(n)
    return base


def expect_back(d: Driver, base: dict[str, tuple[int, int]], timeout_s: float = 10.0) -> None:
    for n, b in base.items():
        wait_until(lambda: d.state(n) == b, timeout_s, lambda: f"{n}: (objects, fds) {d.state(n)} != {b}")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 4, generator=g)
    y = F.one_hot(torch.randint(0, 2, (8,), generator=g), 2).float()
    return x, y


def shared_training(ws: dict[str, sy.SocketWorker], seed: int = 0) -> tuple[Net, optim.SGD, Any, Any]:
    bob, alice, carol = ws["bob"], ws["alice"], ws["carol"]
    group_of([bob, alice], carol).timeout_s = MPC_TIMEOUT
    torch.manual_seed(seed)
    model = Net()
    model.fix_precision().share(bob, alice, crypto_provider=carol, requires_grad=True)
    opt = optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    x, y = data(seed)
    xs = x.fix_prec().share(bob, alice, crypto_provider=carol)
    ys = y.fix_prec().share(bob, alice, crypto_provider=carol)
    return model, opt, xs, ys


def step(model: nn.Module, opt: optim.Optimizer, xs: Any, ys: Any, loss_fn: Callable[..., Any] = F.cross_entropy) -> float:
    opt.zero_grad()
    loss = loss_fn(model(xs), ys)
    loss.backward()
    opt.step()
    return float(loss.get().float_precision())


def train_until_failure(model: nn.Module, opt: optim.Optimizer, xs: Any, ys: Any, deadline_s: float = 60.0) -> BaseException:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            step(model, opt, xs, ys)
        except Exception as e:  # noqa: BLE001 - the failure under test
            return e
    raise AssertionError("training kept running: the fault was not noticed")


def small_op(w: sy.SocketWorker) -> None:
    assert (torch.tensor([1.0, 2.0]).send(w) + 1).get().tolist() == [2.0, 3.0]


def names_worker(err: BaseException, name: str) -> None:
    assert f"worker {name}" in str(err) or f"{name} cannot be reached" in str(err), err
    assert getattr(err, "worker", None) == name, (getattr(err, "worker", None), err)


# ============================================================================ SIGKILL


@pytest.mark.parametrize("victim,seed", [("bob", 1), ("alice", 2), ("carol", 3)])
def test_sigkill_mid_training(cluster: Cluster, driver: Driver, victim: str, seed: int) -> None:
    """A party or the crypto provider is SIGKILLed at a random point of an encrypted training
    loop: the driver's next step fails at once (long before any timeout), naming the dead
    worker; the survivors answer, keep the model's shares, and drop the failed session."""
    survivors = tuple(n for n in NAMES if n != victim)
    base = settle(driver, NAMES)
    model, opt, xs, ys = shared_training(driver.ws, seed)
    step(model, opt, xs, ys)  # the session is up
    delay = random.Random(seed).uniform(0.0, 1.0)  # lands anywhere in forward, backward, step or get
    killed_at: list[float] = []

    def kill() -> None:
        cluster.kill(victim)
        killed_at.append(time.monotonic())

    timer = threading.Timer(delay, kill)
    timer.start()
    try:
        err = train_until_failure(model, opt, xs, ys)
    finally:
        timer.join()
    elapsed = time.monotonic() - killed_at[0]
    assert elapsed < SOCKET_TIMEOUT, f"noticed after {elapsed:.1f} s: {err}"
    assert isinstance(err, sy.TransportError), repr(err)
    names_worker(err, victim)

    for n in survivors:
        small_op(driver.ws[n])
    holders = [n for n in ("bob", "alice") if n != victim]
    for n in holders:  # the model's shares are intact where they survived
        for p in model.parameters():
            share = sy.local_worker._send(driver.ws[n], Fetch(p.share_id, False))
            assert share.dtype == torch.int64 and share.shape == p.shape
    # Once the driver lets go of everything, the survivors are back where they started:
    # no objects, and the failed session's sockets are closed.
    del model, opt, xs, ys, err, p
    close_all_sessions()
    gc.collect()
    sy.local_worker._gc_pending.pop(driver.ws[victim], None)
    sy.local_worker.flush_gc()
    expect_back(driver, {n: base[n] for n in survivors})


def test_stalled_party_times_out_naming_it(cluster: Cluster, driver: Driver) -> None:
    """A share holder that stops answering (SIGSTOP: alive, connections open, silent) is
    reported within the bounds, by name; once it resumes, everything is as before."""
    base = settle(driver, NAMES)
    model, opt, xs, ys = shared_training(driver.ws, 5)
    step(model, opt, xs, ys)
    driver.ws["alice"].timeout_s = STALL_TIMEOUT
    pid = cluster.pid("alice")
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        err = train_until_failure(model, opt, xs, ys)
        elapsed = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert elapsed < STALL_BOUND, f"{elapsed:.1f} s: {err}"
    assert isinstance(err, sy.PeerTimeout) and isinstance(err, TimeoutError), repr(err)
    names_worker(err, "alice")
    for n in NAMES:
        small_op(driver.ws[n])
    del model, opt, xs, ys, err
    close_all_sessions()
    gc.collect()
    sy.local_worker.flush_gc()
    expect_back(driver, base)


# ============================================================================ the driver dies

DRIVER = """
import sys, torch, torch.nn.functional as F
import syft_mpc as sy
from syft_mpc.mpc_session import group_of
hook = sy.TorchHook(torch)
bob, alice, carol = sy.workers_from_env(hook, timeout_s=float(sys.argv[1]))
group_of([bob, alice], carol).timeout_s = float(sys.argv[2])
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
model.fix_precision().share(bob, alice, crypto_provider=carol, requires_grad=True)
opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
x, y = torch.randn(8, 4), F.one_hot(torch.randint(0, 2, (8,)), 2).float()
xs, ys = x.fix_prec().share(bob, alice, crypto_provider=carol), y.fix_prec().share(bob, alice, crypto_provider=carol)
i = 0
while True:
    opt.zero_grad()
    loss = F.cross_entropy(model(xs), ys)
    loss.backward()
    opt.step()
    print("step", i, float(loss.get().float_precision()), flush=True)
    i += 1
"""


def test_sigkill_driver_frees_its_objects_and_sessions(cluster: Cluster, driver: Driver, tmp_path: Path) -> None:
    """The driver (another process) is SIGKILLed mid-training: after the grace period the
    workers have freed its objects and closed its MPC parties (sockets, dealer thread), and
    they keep serving."""
    base = settle(driver, NAMES)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, **cluster.env}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(SOCKET_TIMEOUT), str(MPC_TIMEOUT)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
        reader.start()
        wait_until(lambda: len(lines) >= 2 or proc.poll() is not None, 60, lambda: "the driver did not train")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert all(driver.obs[n].sync() > 0 for n in ("bob", "alice"))
        time.sleep(random.Random(7).uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(5)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    # Grace, plus a party that got half a step waiting out its MPC timeout.
    expect_back(driver, base, timeout_s=GRACE + MPC_TIMEOUT + 10)
    for n in NAMES:
        small_op(driver.ws[n])


# ============================================================================ stalled or dropped links


def test_stalled_link_times_out_naming_worker(cluster: Cluster) -> None:
    """The driver-bob link stops forwarding mid-training (both ends still open): a timeout
    error naming bob within the bounds; after the link resumes, bob is back and the
    stranded session is closed everywhere."""
    cluster.ready()
    with Proxy(("127.0.0.1", cluster.port("bob"))) as proxy:
        d = Driver(cluster, ports={"bob": proxy.port})
        try:
            base = settle(d, NAMES)
            model, opt, xs, ys = shared_training(d.ws, 8)
            step(model, opt, xs, ys)
            d.ws["bob"].timeout_s = STALL_TIMEOUT
            timer = threading.Timer(random.Random(8).uniform(0.0, 0.8), proxy.stall)
            t0 = time.monotonic()
            timer.start()
            try:
                err = train_until_failure(model, opt, xs, ys)
            finally:
                timer.join()
            elapsed = time.monotonic() - t0
            assert elapsed < STALL_BOUND + 1, f"{elapsed:.1f} s: {err}"
            assert isinstance(err, sy.PeerTimeout), repr(err)
            names_worker(err, "bob")
            proxy.resume()
            for n in NAMES:
                small_op(d.ws[n])
            del model, opt, xs, ys, err
            close_all_sessions()  # also the leave bob missed while cut off
            gc.collect()
            sy.local_worker.flush_gc()
            expect_back(d, base)
        finally:
            d.close()


def test_dropped_link_names_worker_and_recovers(cluster: Cluster) -> None:
    """The driver-bob link is closed mid-training: a disconnection error naming bob at
    once; the next computation reconnects and works."""
    cluster.ready()
    with Proxy(("127.0.0.1", cluster.port("bob"))) as proxy:
        d = Driver(cluster, ports={"bob": proxy.port})
        try:
            base = settle(d, NAMES)
            model, opt, xs, ys = shared_training(d.ws, 9)
            step(model, opt, xs, ys)
            timer = threading.Timer(random.Random(9).uniform(0.0, 0.8), proxy.drop)
            t0 = time.monotonic()
            timer.start()
            try:
                err = train_until_failure(model, opt, xs, ys)
            finally:
                timer.join()
            assert time.monotonic() - t0 < SOCKET_TIMEOUT, err
            assert isinstance(err, sy.PeerDisconnected), repr(err)
            names_worker(err, "bob")
            # A fresh computation over the same workers works (bob is reached again).
            a = torch.tensor([1.5, -2.0]).fix_prec().share(d.ws["bob"], d.ws["alice"], crypto_provider=d.ws["carol"])
            assert torch.allclose((a * a).get().float_precision(), torch.tensor([2.25, 4.0]), atol=1e-3)
            del model, opt, xs, ys, err, a
            close_all_sessions()
            gc.collect()
            sy.local_worker.flush_gc()
            expect_back(d, base)
        finally:
            d.close()


# ============================================================================ checkpoint / resume


def test_checkpoint_restart_all_workers_and_resume(cluster: Cluster) -> None:
    """Train 3 steps encrypted, checkpoint, SIGKILL every worker, restart them (same names,
    new ports, new token), restore into a fresh model and optimizer, train 3 more steps: the
    losses and parameters match an uninterrupted run within fixed-point error. (MSE loss:
    it needs no approximation, so two runs differ only by truncation, a few 2^-16; the
    approximations behind cross-entropy would add ~3e-3 of noise per run.)"""
    cluster.ready()
    dirs = cluster.state_dirs
    d = Driver(cluster)
    try:
        model, opt, xs, ys = shared_training(d.ws, 11)
        for _ in range(3):
            step(model, opt, xs, ys, F.mse_loss)
        saved = checkpoint.save("run1.step-3", model=model, optimizer=opt)
        assert len(saved["names"]) == 8  # 4 parameters + their 4 momentum buffers
        for n in ("bob", "alice"):
            assert [p.name for p in dirs[n].iterdir()] == ["run1.step-3.npz"]  # nothing else, no temp file
        assert not dirs["carol"].exists()  # the crypto provider holds no share
        ref = [step(model, opt, xs, ys, F.mse_loss) for _ in range(3)]  # the uninterrupted run
        ref_params = [p.decrypt() for p in model.parameters()]
        del model, opt, xs, ys
    finally:
        d.close()
    for n in NAMES:
        cluster.kill(n, respawn=False)
    cluster.token = secrets.token_hex(32)
    cluster.spawn()
    cluster.ready()
    d = Driver(cluster)
    try:
        torch.manual_seed(123)  # a fresh model: restore must overwrite every parameter
        model2 = Net()
        opt2 = optim.SGD(model2.parameters(), lr=0.2, momentum=0.9)
        bob, alice, carol = (d.ws[n] for n in NAMES)
        group_of([bob, alice], carol).timeout_s = MPC_TIMEOUT
        restored = checkpoint.restore("run1.step-3", bob, alice, crypto_provider=carol, model=model2, optimizer=opt2)
        assert set(restored) == set(saved["names"])
        assert all(isinstance(p, sy.SharedTensor) for p in model2.parameters())
        assert all("momentum_buffer" in opt2.state[p] for p in model2.parameters())
        x, y = data(11)
        xs2 = x.fix_prec().share(bob, alice, crypto_provider=carol)
        ys2 = y.fix_prec().share(bob, alice, crypto_provider=carol)
        got = [step(model2, opt2, xs2, ys2, F.mse_loss) for _ in range(3)]
        assert got == pytest.approx(ref, abs=1e-3), (got, ref)
        for p, q in zip(model2.parameters(), ref_params):
            assert torch.allclose(p.decrypt(), q, atol=1e-3)
        # The momentum buffers matter: without them the resumed run would differ by far more.
        bufs = [opt2.state[p]["momentum_buffer"].decrypt() for p in model2.parameters()]
        assert max(float(b.abs().max()) for b in bufs) > 1e-2
        del model2, opt2, xs2, ys2, restored, p
    finally:
        d.close()


def test_checkpoint_tags_cannot_leave_the_state_dir(cluster: Cluster, driver: Driver, tmp_path: Path) -> None:
    """A tag from the wire is a file name in the worker's state directory, never a path:
    bad tags are refused by the decoder (and by the handler itself), nothing is written
    elsewhere, and the worker keeps serving."""
    bob = driver.ws["bob"]
    bad_tags = ["../evil", "..", ".hidden", "/tmp/evil", "a/b", "a\\b", "", "x" * 129, "a\x00b", "-rf", "ok\n"]
    for tag in bad_tags:
        with pytest.raises(ValueError, match="bad checkpoint tag"):
            checkpoint.check_tag(tag)
        for msg in (
            messages.CheckpointSave(tag, "0" * 32, [], b""),
            messages.CheckpointInfo(tag),
            messages.CheckpointLoad(tag, "0" * 32, []),
        ):
            with pytest.raises(SerializationError, match="bad checkpoint tag"):
                serde.decode(serde.encode(Envelope("me", [], msg)))
    # The real worker refuses them too (a malformed message closes that connection, so one each).
    addr = f"127.0.0.1:{cluster.port('bob')}"
    for msg in (
        messages.CheckpointSave("../evil", "0" * 32, [], b""),
        messages.CheckpointInfo("/etc/passwd"),
        messages.CheckpointLoad("a/../../b", "0" * 32, []),
    ):
        conn = _native.Connection.connect(addr, cluster.token, "bob", timeout_s=5)
        try:
            conn.send(b"R" + serde.encode(Envelope("me", [], msg)))
            reply = serde.decode(conn.recv(5))
        finally:
            conn.close()
        assert reply.err_type == "SerializationError" and "bad checkpoint tag" in reply.message
    small_op(bob)
    # The handlers check again (a caller that skipped the decoder), before touching the disk.
    w = sy.VirtualWorker(hook, id="ck-direct")
    w.state_dir = str(tmp_path / "state")  # type: ignore[attr-defined]
    for tag in ("../evil", "/tmp/evil", "a/b"):
        for handler, msg in (
            (checkpoint_worker.HANDLERS[messages.CheckpointSave], messages.CheckpointSave(tag, "0" * 32, [], b"")),
            (checkpoint_worker.HANDLERS[messages.CheckpointInfo], messages.CheckpointInfo(tag)),
        ):
            with pytest.raises(ValueError, match="bad checkpoint tag"):
                handler(w, msg)  # type: ignore[operator]
    assert not (tmp_path / "evil").exists() and not (tmp_path / "evil.npz").exists()
    # The API checks before sending anything.
    with pytest.raises(ValueError, match="bad checkpoint tag"):
        checkpoint.save("../x", t=torch.tensor([1]).share(driver.ws["bob"], driver.ws["alice"], crypto_provider=driver.ws["carol"]))


def test_checkpoint_refuses_mixed_or_foreign_files(tmp_path: Path) -> None:
    """Restore checks that every holder has the same save (a save that reached only some
    holders is refused), that the holders are the ones that saved, and that a file was
    written by the worker reading it."""
    bob, alice, third, james = (sy.VirtualWorker(hook, id=f"ckm-{n}") for n in ("bob", "alice", "third", "james"))
    for w in (bob, alice, third):
        w.state_dir = str(tmp_path / w.id)  # type: ignore[attr-defined]
    t = torch.tensor([1.0, -2.0]).fix_prec().share(bob, alice, crypto_provider=james)
    checkpoint.save("a", t=t)
    u = torch.tensor([3.0, 4.0]).fix_prec().share(bob, alice, crypto_provider=james)
    checkpoint.save("b", t=u)
    assert torch.equal(checkpoint.restore("a", bob, alice)["t"].decrypt(), torch.tensor([1.0, -2.0]))
    # bob's "a" replaced by another save: the holders disagree.
    os.replace(tmp_path / bob.id / "b.npz", tmp_path / bob.id / "a.npz")
    with pytest.raises(sy.ProtocolError, match="differs between workers"):
        checkpoint.restore("a", bob, alice)
    with pytest.raises(ValueError, match="was shared among"):
        checkpoint.restore("b", alice)
    # A file copied from another worker's directory is refused.
    (tmp_path / third.id).mkdir(exist_ok=True)
    os.replace(tmp_path / alice.id / "b.npz", tmp_path / third.id / "b.npz")
    with pytest.raises(RemoteError, match="written by worker ckm-alice"):
        sy.local_worker._send(third, messages.CheckpointInfo("b"))
    with pytest.raises(RemoteError, match="no checkpoint 'zz'"):
        sy.local_worker._send(bob, messages.CheckpointInfo("zz"))
    # In place: a shared tensor gets the checkpoint's shares back.
    checkpoint.save("c", t=t)
    t2 = t * 2
    checkpoint.restore("c", t=t2)
    assert torch.equal(t2.decrypt(), torch.tensor([1.0, -2.0]))


def test_checkpoint_docstring_example() -> None:
    import doctest

    res = doctest.testmod(checkpoint.driver, verbose=False)
    assert res.failed == 0 and res.attempted > 0
