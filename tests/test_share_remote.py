"""``ptr.share(...)`` / ``ptr.fix_prec().share(...)``: the owner splits its data and sends the shares
to the holders itself; the plaintext never passes through the driver (issue 5)."""

from __future__ import annotations

import gc
from typing import Any, Iterator

import pytest
import torch

import syft_mpc as sy
from syft_mpc import mpc_session
from syft_mpc.remote import serde
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.mpc_session import close_all_sessions

hook = sy.TorchHook(torch)


def _spy(worker: Any) -> list[str]:
    """Records the request types the driver sends to ``worker`` (and every reply's payload type)."""
    seen: list[str] = []
    orig = worker._deliver

    def deliver(data: bytes) -> bytes:
        seen.append(type(serde.decode(data).body).__name__)
        reply = orig(data)
        seen.append("reply:" + type(serde.decode(reply).value).__name__)
        return reply

    worker._deliver = deliver
    return seen


@pytest.fixture
def virtual() -> Iterator[tuple[Any, ...]]:
    ws = tuple(sy.VirtualWorker(hook, id=f"rs_{n}") for n in ("bob", "alice", "carol", "james", "owner"))
    yield ws
    close_all_sessions()


def test_pointer_fix_prec_share_virtual(virtual: tuple[Any, ...]) -> None:
    bob, alice, carol, james, owner = virtual
    x = torch.randn(4, 5)
    p = x.send(owner)
    seen = _spy(owner)
    s = p.fix_prec().share(bob, alice, crypto_provider=james, requires_grad=True)
    assert seen == ["MpcShareOut", "reply:list"]  # no Fetch: only the shape comes back
    assert "SharedTensor(shape=(4, 5), parties=(rs_bob, rs_alice), crypto_provider=rs_james" in repr(s)
    assert s.requires_grad and s.dtype == torch.float32
    assert s.share_id in bob._objects and s.share_id in alice._objects and s.share_id not in owner._objects
    assert not torch.equal(bob._objects[s.share_id], torch.zeros(4, 5, dtype=torch.int64))
    assert p.id_at_location in owner._objects  # the owner keeps its tensor
    torch.testing.assert_close(((s * s) + 1).get().float_prec(), x * x + 1, atol=1e-3, rtol=0)
    # 3 parties, owner among the holders, an integer tensor, encrypt() shortcut
    i = torch.tensor([[3, -4], [5, 2**40]]).send(owner)
    si = i.share(bob, owner, carol, crypto_provider=james)
    assert si.dtype == torch.int64 and torch.equal((si + si).get(), 2 * torch.tensor([[3, -4], [5, 2**40]]))
    e = p.encrypt(workers=[alice, owner], crypto_provider=james)
    torch.testing.assert_close(e.decrypt(), x, atol=2e-5, rtol=0)
    assert torch.equal(p.fix_prec(base=10, precision_fractional=3).get().encoded, torch.round(x * 1000).long())
    # a parameter of a sent module is a remote tensor too
    lin = torch.nn.Linear(3, 2)
    w = lin.weight.detach().clone()
    lin.send(owner)
    sw = lin.weight.fix_prec().share(bob, alice, crypto_provider=james)
    torch.testing.assert_close(sw.decrypt(), w, atol=2e-5, rtol=0)


def test_pointer_share_errors(virtual: tuple[Any, ...]) -> None:
    bob, alice, carol, james, owner = virtual
    p = torch.randn(3).send(owner)
    with pytest.raises(TypeError, match="fix_precision"):
        p.share(bob, alice, crypto_provider=james)
    with pytest.raises(ValueError, match="distinct"):
        p.fix_prec().share(bob, bob, crypto_provider=james)
    with pytest.raises(TypeError, match="cannot require gradients"):
        torch.tensor([1]).send(owner).share(bob, alice, crypto_provider=james, requires_grad=True)
    big = torch.tensor([1e30]).send(owner)
    with pytest.raises(sy.errors.RemoteError, match="on worker rs_owner"):
        big.fix_prec().share(bob, alice, crypto_provider=james)
    assert not bob._objects and not alice._objects  # nothing half-shared stays behind


def _socket_flow(bob: Any, alice: Any, owner: Any) -> None:
    james = owner
    base = owner.sync()
    x = torch.randn(6, 3)
    p = x.send(owner)
    mpc_session.group_of([bob, alice], james).ensure_session()  # the owner deals: join first
    seen = _spy(owner)
    s = p.fix_prec().share(bob, alice, crypto_provider=james)
    assert seen == ["MpcShareOut", "reply:list"]
    assert owner.sync() == base + 1  # only its own tensor: the shares went to bob and alice
    assert bob.sync() >= 1 and alice.sync() >= 1
    w = torch.randn(3, 2).fix_prec().share(bob, alice, crypto_provider=james)
    torch.testing.assert_close((s @ w).get().float_prec(), x @ w.get().float_prec(), atol=2e-3, rtol=0)
    i = torch.tensor([7, -8]).send(owner).share(bob, alice, crypto_provider=james)
    assert torch.equal((i * i).get(), torch.tensor([49, 64]))


def test_pointer_share_over_sockets() -> None:
    # Three processes (each imports torch: seconds on this machine); the data owner also deals.
    with LocalWorkers(["bob", "alice", "owner"], grace_s=1.0, quiet=True) as c:
        ws = [
            sy.SocketWorker(hook, id=n, host="127.0.0.1", port=c.port(n), token=c.token)  # type: ignore[arg-type]
            for n in ("bob", "alice", "owner")
        ]
        try:
            _socket_flow(*ws)
        finally:
            close_all_sessions()
            gc.collect()
            try:
                sy.local_worker.flush_gc()  # free the shares while the workers still run
            finally:
                for w in ws:  # never leave deletions queued for workers that are about to stop
                    sy.local_worker._gc_pending.pop(w, None)
                    w.close()
