"""In-place ops and ``copy_`` on views of shared tensors write through to the viewed tensor, as in
torch (``encrypted/tensor.py`` ``ViewCell``): basic indexing, select/slice/narrow, view/reshape/
flatten/unsqueeze/squeeze, transpose/t/permute, split/unbind, diagonal and chains of these, against
plaintext torch doing the same ops, 2 and 3 parties; other live views of the same tensor see the
change; views that cannot be written (expand) are refused as torch refuses them; autograd."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SharingGroups, plain

import syft_mpc as sy
from syft_mpc.errors import ObjectNotFoundError, UnsupportedOperationError
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.remote.messages import Fetch

hook = sy.TorchHook(torch)
_groups = SharingGroups(hook, "views")
ATOL = 2e-3


def _enc(n: int, t: torch.Tensor, requires_grad: bool = False) -> Any:
    return _groups.enc(n, t, requires_grad)


def _close(shared: Any, expected: torch.Tensor) -> None:
    torch.testing.assert_close(plain(shared), expected.float(), atol=ATOL, rtol=0)


def _base() -> torch.Tensor:
    return torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


# ---------------------------------------------------------------------- the cases of the report

View = Callable[[Any], Any]
CASES: list[tuple[str, View, Callable[[Any, Any], Any]]] = [
    ("select-add_", lambda x: x[0], lambda v, n: v.add_(1)),
    ("slice-cols-mul_", lambda x: x[:, 1:], lambda v, n: v.mul_(2)),
    ("flat-slice-zero_", lambda x: x.view(-1)[1:3], lambda v, n: v.zero_()),
    ("t-select-sub_", lambda x: x.t()[1], lambda v, n: v.sub_(0.5)),
    ("permute-narrow-neg_", lambda x: x.unsqueeze(0).permute(2, 0, 1).narrow(0, 1, 2), lambda v, n: v.neg_()),
    ("reshape-step-slice-fill_", lambda x: x.reshape(3, 2)[::2], lambda v, n: v.fill_(-1.25)),
    ("flatten-unsqueeze-squeeze-mul_float", lambda x: x.flatten().unsqueeze(1).squeeze(1)[2:], lambda v, n: v.mul_(0.375)),
    ("transpose-diagonal-add_", lambda x: x.transpose(0, 1).diagonal(), lambda v, n: v.add_(10)),
    ("unbind-div_", lambda x: x.unbind(1)[2], lambda v, n: v.div_(4)),
    ("split-copy_public", lambda x: x.split(2, dim=1)[1], lambda v, n: v.copy_(torch.tensor([[7.0], [8.0]]))),
    ("select-select-add_", lambda x: x[1][2], lambda v, n: v.add_(0.25)),
]


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name,view,op", CASES, ids=[c[0] for c in CASES])
def test_in_place_op_on_a_view_writes_through(n: int, name: str, view: View, op: Callable[[Any, Any], Any]) -> None:
    p = _base()
    x = _enc(n, p)
    other = x.view(-1)  # a live view of the same tensor, taken before the write
    d = x.detach()  # an alias
    v = view(x)
    pv = view(p)
    assert op(v, n) is v  # an in-place op returns its input
    op(pv, n)
    _close(x, p)
    _close(v, pv)
    _close(other, p.view(-1))
    _close(d, p)


@pytest.mark.parametrize("n", [2, 3])
def test_writes_with_shared_sources_and_beaver_products(n: int) -> None:
    p, q = _base(), torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -3.0]])
    x, y = _enc(n, p), _enc(n, q)
    x[:, 1:].mul_(y[:, :2])  # a Beaver product stored into a view
    p[:, 1:].mul_(q[:, :2])
    x.t()[0].copy_(y[:, 1])  # copy_ of a shared view into a view
    p.t()[0].copy_(q[:, 1])
    x.view(-1)[::2].add_(y.view(-1)[1::2])
    p.view(-1)[::2].add_(q.view(-1)[1::2])
    _close(x, p)
    _close(y, q)  # the source is left alone


@pytest.mark.parametrize("n", [2, 3])
def test_item_assignment(n: int) -> None:
    """``x[i] += v`` (getitem, in-place add, setitem = copy_ into the view) and ``x[i] = v``."""
    p = _base()
    x = _enc(n, p)
    x[0] += 1
    p[0] += 1
    x[1, 1:] = torch.tensor([-2.0, -3.0])
    p[1, 1:] = torch.tensor([-2.0, -3.0])
    x[:, 0] = 0.5
    p[:, 0] = 0.5
    x[0, 2] = _enc(n, torch.tensor(9.0))
    p[0, 2] = 9.0
    _close(x, p)


@pytest.mark.parametrize("n", [2, 3])
def test_views_see_writes_to_their_base_and_to_each_other(n: int) -> None:
    p = _base()
    x = _enc(n, p)
    a, b, col = x[0], x[0:1], x[:, 2]  # overlapping views
    pa, pb, pcol = p[0], p[0:1], p[:, 2]
    x.mul_(3)  # the base, in place
    p.mul_(3)
    _close(a, pa)
    _close(col, pcol)
    a[1:].add_(1)  # a view, in place: its siblings see it
    pa[1:].add_(1)
    _close(b, pb)
    _close(col, pcol)
    _close(x, p)
    del x  # the views keep aliasing each other without their base (torch: the storage lives on)
    b.zero_()
    pb.zero_()
    _close(a, pa)
    _close(col, pcol)


@pytest.mark.parametrize("n", [2, 3])
def test_integer_shared_tensor_views(n: int) -> None:
    ps, james = _groups.workers(n)
    p = torch.arange(12).reshape(3, 4)
    x = p.share(*ps, crypto_provider=james)
    x[1:, ::2].add_(100)
    p[1:, ::2].add_(100)
    x.t()[3].mul_(-2)
    p.t()[3].mul_(-2)
    assert torch.equal(x.get(), p)


@pytest.mark.parametrize("n", [2, 3])
def test_copies_stay_copies(n: int) -> None:
    """Advanced indexing, clone, ``contiguous`` of a contiguous tensor's copy and ``.to`` copy in
    torch: writing into them leaves the tensor alone, here too."""
    p = _base()
    x = _enc(n, p)
    x[[0, 1], [1, 2]].add_(5)
    x[torch.tensor([True, False])].mul_(7)
    x.clone()[0].zero_()
    x.to(torch.float64)[1].add_(1)
    x.index_select(1, torch.tensor([0])).zero_()
    _close(x, p)


@pytest.mark.parametrize("n", [2, 3])
def test_expanded_view_is_read_through_but_refused_for_writing(n: int) -> None:
    p = torch.tensor([1.0, 2.0, 3.0])
    x = _enc(n, p)
    e = x.expand(2, 3)
    with pytest.raises(RuntimeError, match="single memory location"):  # torch refuses it too
        p.expand(2, 3).add_(1)
    with pytest.raises(UnsupportedOperationError, match=r"expand.*clone\(\)"):
        e.add_(1)
    with pytest.raises(UnsupportedOperationError, match="expand"):
        x.unsqueeze(0).expand(3, 3)[1:].copy_(torch.zeros(2, 3))
    x.add_(1)  # the base changes: the expanded view shows it
    _close(e, (p + 1).expand(2, 3))
    c = e.clone()  # what the message says to do
    c[1].zero_()
    _close(c, torch.stack([p + 1, torch.zeros(3)]))
    _close(x, p + 1)
    x.expand(1, 3)[0].mul_(2)  # an expand that repeats nothing can be written
    _close(x, 2 * (p + 1))
    with pytest.raises(UnsupportedOperationError, match="unfold"):  # overlapping windows
        x.unfold(0, 2, 1).zero_()
    x.unfold(0, 1, 2).zero_()  # windows that do not overlap: elements 0 and 2
    _close(x, torch.tensor([0.0, 2 * (p[1] + 1), 0.0]))


# ---------------------------------------------------------------------- hypothesis: chains of views


def _draw_view(data: st.DataObject, t: torch.Tensor) -> tuple[str, Callable[[Any], Any]]:
    """One view step applicable to a tensor shaped like ``t`` (the plaintext one: a view/reshape
    is drawn only where torch's own is a view, i.e. ``t`` is contiguous)."""
    kinds = ["transpose", "permute", "unsqueeze"] if t.dim() >= 1 else ["unsqueeze"]
    nonempty = [d for d in range(t.dim()) if t.shape[d] > 0]
    if nonempty:
        kinds += ["select", "slice", "narrow", "split", "unbind"]
    if t.is_contiguous():
        kinds += ["view", "flatten"]
    if any(s == 1 for s in t.shape):
        kinds.append("squeeze")
    if t.dim() >= 2:
        kinds.append("diagonal")
    k = data.draw(st.sampled_from(kinds), "view kind")
    nd = t.dim()
    if k == "select":
        d = data.draw(st.sampled_from(nonempty), "dim")
        i = data.draw(st.integers(-t.shape[d], t.shape[d] - 1), "index")
        return f"select({d},{i})", lambda v: v.select(d, i)
    if k == "slice":
        d = data.draw(st.sampled_from(nonempty), "dim")
        a = data.draw(st.integers(0, t.shape[d] - 1), "start")
        b = data.draw(st.integers(a + 1, t.shape[d]), "stop")
        s = data.draw(st.integers(1, 2), "step")
        return f"[{d}:{a}:{b}:{s}]", lambda v: v[(slice(None),) * d + (slice(a, b, s),)]
    if k == "narrow":
        d = data.draw(st.sampled_from(nonempty), "dim")
        a = data.draw(st.integers(0, t.shape[d] - 1), "start")
        ln = data.draw(st.integers(1, t.shape[d] - a), "length")
        return f"narrow({d},{a},{ln})", lambda v: v.narrow(d, a, ln)
    if k == "split":
        d = data.draw(st.sampled_from(nonempty), "dim")
        size = data.draw(st.integers(1, t.shape[d]), "split size")
        i = data.draw(st.integers(0, (t.shape[d] + size - 1) // size - 1), "part")
        return f"split({size},{d})[{i}]", lambda v: v.split(size, d)[i]
    if k == "unbind":
        d = data.draw(st.sampled_from(nonempty), "dim")
        i = data.draw(st.integers(0, t.shape[d] - 1), "part")
        return f"unbind({d})[{i}]", lambda v: v.unbind(d)[i]
    if k == "transpose":
        d0, d1 = data.draw(st.integers(0, nd - 1), "d0"), data.draw(st.integers(0, nd - 1), "d1")
        return f"transpose({d0},{d1})", lambda v: v.transpose(d0, d1)
    if k == "permute":
        perm = data.draw(st.permutations(list(range(nd))), "perm")
        return f"permute{perm}", lambda v: v.permute(*perm)
    if k == "unsqueeze":
        d = data.draw(st.integers(0, nd), "dim")
        return f"unsqueeze({d})", lambda v: v.unsqueeze(d)
    if k == "squeeze":
        d = data.draw(st.sampled_from([d for d in range(nd) if t.shape[d] == 1]), "dim")
        return f"squeeze({d})", lambda v: v.squeeze(d)
    if k == "diagonal":
        off = data.draw(st.integers(-1, 1), "offset")
        return f"diagonal({off})", lambda v: v.diagonal(off)
    if k == "flatten":
        return "flatten", lambda v: v.flatten()
    shape = list(t.shape)  # view: split one dimension into two (or merge all)
    if t.numel() and data.draw(st.booleans(), "merge"):
        return "view(-1)", lambda v: v.view(-1)
    divisible = [(d, f) for d in range(nd) for f in range(2, shape[d] + 1) if shape[d] % f == 0]
    if not divisible:
        return "view(-1)", lambda v: v.view(-1)
    d, f = data.draw(st.sampled_from(divisible), "split dim")
    new = shape[:d] + [f, shape[d] // f] + shape[d + 1 :]
    return f"view{new}", lambda v: v.view(new)


IN_PLACE: dict[str, Callable[[Any, Any], Any]] = {
    "add_": lambda v, src: v.add_(1.5),
    "mul_int": lambda v, src: v.mul_(-3),
    "mul_float": lambda v, src: v.mul_(0.5),
    "zero_": lambda v, src: v.zero_(),
    "neg_": lambda v, src: v.neg_(),
    "fill_": lambda v, src: v.fill_(2.25),
    "copy_": lambda v, src: v.copy_(src),
    "add_shared": lambda v, src: v.add_(src),
    "sub_shared": lambda v, src: v.sub_(src),
}


@pytest.mark.parametrize("n", [2, 3])
@settings(max_examples=20)
@given(data=st.data())
def test_chains_of_views_write_through_like_torch(n: int, data: st.DataObject) -> None:
    shape = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3), "shape")
    p = torch.arange(1, 1 + torch.Size(shape).numel(), dtype=torch.float32).reshape(shape) / 4
    x = _enc(n, p)
    steps: list[Callable[[Any], Any]] = []
    pv, names = p, []
    for _ in range(data.draw(st.integers(1, 3), "chain length")):
        if pv.numel() == 0:
            break
        name, step = _draw_view(data, pv)
        steps.append(step)
        names.append(name)
        pv = step(pv)
    sibling_step = _draw_view(data, p)[1]  # another view of the base, taken before the write
    v, sib, psib = x, sibling_step(x), sibling_step(p)
    for step in steps:
        v = step(v)
    op = data.draw(st.sampled_from(sorted(IN_PLACE)), "in-place op")
    src = torch.linspace(-2, 2, max(1, pv.numel())).reshape(pv.shape) if pv.numel() else torch.zeros(pv.shape)
    shared_src = _enc(n, src)
    IN_PLACE[op](pv, src)
    IN_PLACE[op](v, shared_src if op != "copy_" or data.draw(st.booleans(), "shared source") else src)
    _close(x, p)
    _close(v, pv)
    _close(sib, psib)


# ---------------------------------------------------------------------- autograd


@pytest.mark.parametrize("n", [2, 3])
def test_view_of_a_leaf_that_requires_grad_is_refused_by_torch_and_written_under_no_grad(n: int) -> None:
    p = _base().requires_grad_()
    x = _enc(n, _base(), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        p[0].add_(1)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x[0].add_(1)
    with torch.no_grad():  # a hand-written update of part of a parameter
        x[:, 1].sub_(0.5)
        p[:, 1].sub_(0.5)
    _close(x, p.detach())
    (x * x).sum().backward()
    (p * p).sum().backward()
    _close(x.grad, p.grad)


@pytest.mark.parametrize("n", [2, 3])
def test_in_place_on_a_view_under_autograd_is_refused_before_any_gradient(n: int) -> None:
    """torch differentiates an in-place op on a view of a non-leaf through as_strided on the
    base's gradient, which shared tensors cannot follow: refused at the op, with what to do
    instead (which gives torch's gradient), never a wrong gradient later."""
    r = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.5, -0.5]])
    x = _enc(n, _base(), requires_grad=True)
    y = x * 1.0
    with pytest.raises(UnsupportedOperationError, match=r"view of a shared tensor that requires grad.*torch.cat"):
        y[0].mul_(2)
    buf = _enc(n, torch.zeros(2, 3))  # a buffer without grad, an operand with
    with pytest.raises(UnsupportedOperationError, match="requires grad"):
        buf[1].copy_(x[0])
    _close(y, _base())  # nothing was written
    _close(buf, torch.zeros(2, 3))
    # what the message says: out of place
    z = torch.cat([y[:1] * 2, y[1:]])
    (z * r).sum().backward()
    p = _base().requires_grad_()
    pz = p * 1.0
    pz[0].mul_(2)
    (pz * r).sum().backward()
    _close(z, pz.detach())
    _close(x.grad, p.grad)
    with torch.no_grad():  # no gradient needed: allowed
        y[0].mul_(2)
    _close(y, pz.detach())


# ---------------------------------------------------------------------- worker processes


@pytest.fixture(scope="module")
def socket_workers() -> Iterator[tuple[Any, ...]]:
    with LocalWorkers(["vw-bob", "vw-alice", "vw-carol"], grace_s=1.0, quiet=True) as c, c.socket_workers(
        hook, timeout_s=20.0
    ) as ws:
        yield ws


def test_views_on_worker_processes_and_a_failed_posted_write_is_undone(socket_workers: tuple[Any, ...]) -> None:
    """On socket workers the writes and re-reads are posted without waiting (the driver infers
    ``take``/``put`` shapes); when a posted op fails, a view and the tensor it views both get back
    the shares they had at the last confirmed point."""
    bob, alice, carol = socket_workers
    p = _base()
    x = p.fix_prec().share(bob, alice, crypto_provider=carol)
    v, col = x[:, 1:], x[:, 2]
    v.mul_(2)
    p[:, 1:].mul_(2)
    x.t()[0].add_(col)
    p.t()[0].add_(p[:, 2])
    _close(x, p)
    _close(col, p[:, 2])
    bad = torch.ones(2, 2).fix_prec().share(bob, alice, crypto_provider=carol)
    _close(v, p[:, 1:])  # flushes
    before = x.share_id
    sy.local_worker._send(bob, Fetch(bad.share_id, True))  # bob's share of `bad` is gone
    v.add_(1)  # posted, fine
    assert x.cell.shares.id != before
    v.mul_(bad)  # posted, fails on bob
    with pytest.raises(ObjectNotFoundError):
        x.group.flush()
    assert x.cell.shares.id == before
    _close(x, p)
    _close(v, p[:, 1:])
    _close(col, p[:, 2])


# ---------------------------------------------------------------------- torch.inference_mode()


@pytest.mark.parametrize("n", [2, 3])
def test_views_and_a_model_under_inference_mode_match_plaintext(n: int) -> None:
    """Under ``torch.inference_mode()`` (as inference code often runs) views of shared and
    fixed-precision tensors and a whole model work as without it (torch refused every view:
    "Cannot set version_counter for inference tensor")."""
    torch.manual_seed(n)
    t = _base()
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    want = model(t).detach()
    x = _enc(n, t)
    ps, james = _groups.workers(n)
    with torch.inference_mode():
        _close(x[1] * 2, t[1] * 2)
        _close(x.t().reshape(-1), t.t().reshape(-1))
        torch.testing.assert_close((t.fix_prec()[0] + 1).float_prec(), t[0] + 1)
        model.fix_precision().share(*ps, crypto_provider=james)
        _close(model(x), want)
