"""Secure ops on socket workers are posted without waiting (MpcRun as a posted request).

The driver describes each op's result shapes itself (``mpc_session.infer_shapes``), so
``Group.run`` sends the MpcRun to every share holder and returns; the holders run their
requests in order, and a failure is raised by the next wait (a reveal, ``Group.flush``, an
op that must wait), after which the session is re-created. In-place updates made by ops that
were posted when one failed are undone (the tensor keeps the shares it had).
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import torch
import torch.nn.functional as F

import syft_mpc as sy
from syft_mpc import mpc_session
from syft_mpc.errors import ObjectNotFoundError
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.remote.messages import Fetch
from syft_mpc.mpc_session import close_all_sessions, group_of, infer_shapes

hook = sy.TorchHook(torch)


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[Any, ...]]:
    with LocalWorkers(["as-bob", "as-alice", "as-carol"], grace_s=1.0, quiet=True) as c, c.socket_workers(
        hook, timeout_s=20.0
    ) as ws:
        yield ws


def _count_requests(w: Any) -> list[str]:
    """Records, per request to ``w``, whether it was posted ("post") or awaited ("wait") and its type."""
    seen: list[str] = []
    orig_post, orig_deliver = w._post, w._deliver

    def post(data: Any, *deletions: Any) -> bool:
        ok = orig_post(data, *deletions)
        seen.append("post")
        return ok

    def deliver(data: Any) -> Any:
        seen.append("wait")
        return orig_deliver(data)

    w._post, w._deliver = post, deliver
    return seen


def test_ops_are_posted_and_results_right(workers: tuple[Any, ...]) -> None:
    bob, alice, carol = workers
    x = torch.tensor([[1.5, -2.0, 0.25], [3.0, 0.5, -1.0]])
    xs = x.fix_prec().share(bob, alice, crypto_provider=carol)
    group = xs.group
    assert group.asynchronous
    group.flush()
    seen = _count_requests(bob)
    try:
        y = (xs * xs + 1).t() @ xs  # mul, add_public, t, matmul: nothing waited for
        assert seen and set(seen) == {"post"}
        assert group._posted >= 4
        assert y.shape == (3, 3)
        z = torch.softmax(xs, dim=1)
        w = torch.sigmoid(xs).sum(0)
        assert set(seen) == {"post"}
    finally:
        del bob._post, bob._deliver
    expect = (x * x + 1).t() @ x
    assert torch.allclose(y.get().float_prec(), expect, atol=1e-2)
    assert group._posted == 0  # the reveal waited for everything posted
    assert torch.allclose(z.get().float_prec(), torch.softmax(x, 1), atol=1e-2)
    assert torch.allclose(w.get().float_prec(), torch.sigmoid(x).sum(0), atol=1e-2)


def test_posted_failure_surfaces_at_next_wait_and_session_recovers(workers: tuple[Any, ...]) -> None:
    bob, alice, carol = workers
    xs = torch.tensor([1.0, 2.0, 3.0]).fix_prec().share(bob, alice, crypto_provider=carol)
    group = xs.group
    session = group.ensure_session()
    # Make the holders' stores disagree: alice loses her share, so the next Beaver product fails there.
    sy.local_worker._send(alice, Fetch(xs.share_id, True))
    y = xs * xs  # posted: no error yet
    assert group._posted > 0
    with pytest.raises(ObjectNotFoundError, match="as-alice"):
        y.get()
    assert group.session is None  # dropped; re-created by the next op
    a = torch.tensor([1.5, -2.0]).fix_prec().share(bob, alice, crypto_provider=carol)
    assert torch.allclose((a * a).get().float_prec(), torch.tensor([2.25, 4.0]), atol=1e-3)
    assert group.session is not None and group.session != session


def test_inplace_update_undone_when_a_posted_op_fails(workers: tuple[Any, ...]) -> None:
    bob, alice, carol = workers
    p = torch.tensor([0.5, -1.0]).fix_prec().share(bob, alice, crypto_provider=carol)
    bad = torch.tensor([2.0, 2.0]).fix_prec().share(bob, alice, crypto_provider=carol)
    before = p.share_id  # flushes
    sy.local_worker._send(bob, Fetch(bad.share_id, True))  # bob's share of `bad` is gone
    p.add_(p * 2)  # posted, fine: p now names the new shares
    assert p.cell.shares.id != before
    p.mul_(bad)  # posted, fails on bob
    with pytest.raises(ObjectNotFoundError):
        group_of([bob, alice], carol).flush()
    assert p.cell.shares.id == before  # back to the shares it had at the last confirmed point
    assert torch.allclose(p.get().float_prec(), torch.tensor([0.5, -1.0]), atol=1e-4)


def test_training_step_on_socket_workers_matches_plaintext(workers: tuple[Any, ...]) -> None:
    bob, alice, carol = workers
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    plain = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    plain.load_state_dict(model.state_dict())
    x = torch.randn(8, 6)
    y = F.one_hot(torch.randint(0, 3, (8,)), 3).float()
    model.fix_precision().share(bob, alice, crypto_provider=carol, requires_grad=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).fix_precision()
    popt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    xs, ys = x.fix_prec().share(bob, alice, crypto_provider=carol), y.fix_prec().share(bob, alice, crypto_provider=carol)
    for _ in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(model(xs), ys)
        loss.backward()
        opt.step()
        popt.zero_grad()
        ploss = F.cross_entropy(plain(x), y)
        ploss.backward()
        popt.step()
        assert abs(float(loss.get().float_prec()) - ploss.item()) < 0.02
    model.get().float_precision()
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.allclose(a.data, b.data, atol=2e-2)


def test_stats_and_backlog_bound(workers: tuple[Any, ...]) -> None:
    bob, alice, carol = workers
    xs = torch.arange(6.0).fix_prec().share(bob, alice, crypto_provider=carol)
    group = xs.group
    old = group.MAX_POSTED
    group.MAX_POSTED = 5
    try:
        y = xs
        for _ in range(12):
            y = y + 1
            assert group._posted < 5  # a flush every 5 posted ops keeps the backlog bounded
    finally:
        group.MAX_POSTED = old
    before = group.stats()
    assert torch.allclose((y * xs).get().float_prec(), (torch.arange(6.0) + 12) * torch.arange(6.0), atol=1e-2)
    after = group.stats()
    assert all(after[w]["rounds"] > before[w]["rounds"] for w in after)


def test_virtual_workers_wait_and_check_inferred_shapes() -> None:
    bob, alice, james = (sy.VirtualWorker(hook, id=f"as-v{i}") for i in range(3))
    try:
        xs = torch.randn(3, 4).fix_prec().share(bob, alice, crypto_provider=james)
        assert not xs.group.asynchronous
        sent: list[Any] = []
        orig = mpc_session.Group.run

        def spy(self: Any, op: str, args: Any, kwargs: Any = None, n_out: int = 1, shapes: Any = None) -> Any:
            sent.append((op, shapes))
            return orig(self, op, args, kwargs, n_out, shapes)

        mpc_session.Group.run = spy  # type: ignore[method-assign]
        try:
            (xs @ xs.t()).relu().max(dim=1)
            xs[:, 1:3].unbind(1)
        finally:
            mpc_session.Group.run = orig  # type: ignore[method-assign]
        assert sent and all(s is not None for _, s in sent), sent  # every op of these was described up front
    finally:
        close_all_sessions()


def test_infer_shapes_rules() -> None:
    m = lambda *s: torch.empty(s, dtype=torch.int64, device="meta")  # noqa: E731
    assert infer_shapes("mul", (m(3, 1), m(1, 4)), {"divisor": 1}, 1) == [(3, 4)]
    assert infer_shapes("relu_mask", (m(2, 5),), {}, 2) == [(2, 5), (2, 5)]
    assert infer_shapes("matmul", (m(7, 3, 4), m(4, 5)), {}, 1) == [(7, 3, 5)]
    assert infer_shapes("conv2d", (m(1, 2, 5, 5), m(3, 2, 3, 3)), {"stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "groups": 1}, 1) == [(1, 3, 3, 3)]
    assert infer_shapes("aten.split", (m(4, 6), 2, 1), {}, 3) == [(4, 2)] * 3
    assert infer_shapes("aten.index", (m(4, 3), [torch.tensor([True, False, True, True])]), {}, 1) == [(3, 3)]
    assert infer_shapes("mul", (m(3), m(4)), {}, 1) is None  # not broadcastable: the holders report it
    assert infer_shapes("aten.split", (m(4, 6), 2, 1), {}, 2) is None
    assert infer_shapes("no_such_op", (m(1),), {}, 1) is None
