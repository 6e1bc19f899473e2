"""The rest of PySyft 0.2's surface the tutorials use: tags and search (in process and over
sockets), PrivateGridNetwork, the sandbox, VirtualWorker(data=...), share(protocol=...),
integer shares meeting fixed point, optimizer state following its parameters, Optims, and
progress bars in a log file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn, optim

import syft_mpc as sy
from syft_mpc.errors import SerializationError
from syft_mpc.remote import messages, serde

hook = sy.TorchHook(torch)
ROOT = Path(__file__).resolve().parents[1]


def _workers(*names: str) -> list[sy.VirtualWorker]:
    return [sy.VirtualWorker(hook, id=n) for n in names]


# ---------------------------------------------------------------------- tags and search


def test_tag_describe_send_and_search() -> None:
    (bob,) = _workers("s_bob")
    x = torch.tensor([1, 2, 3, 4, 5]).tag("#radio", "#hospital1").describe("The input datapoints to the hospital1 dataset.")
    y = torch.tensor([5, 4, 3, 2, 1]).tag("#radio", "#hospital2").describe("The input datapoints to the hospital2 dataset.")
    z = torch.tensor([1, 2, 3]).tag("#fun")
    assert x.tags == {"#radio", "#hospital1"} and x.description.startswith("The input")
    xp, yp, zp = x.send(bob), y.send(bob), z.send(bob)
    assert "Tags: #hospital1 #radio" in repr(xp)
    radio = bob.search(["#radio"])
    assert sorted(p.id_at_location for p in radio) == sorted([xp.id_at_location, yp.id_at_location])
    assert bob.search("#radio", "#hospital2")[0].id_at_location == yp.id_at_location
    assert [p.id_at_location for p in bob.search(["hospital1 dataset"])] == [xp.id_at_location]  # words of the description
    assert bob.search(["#radio", "#fun"]) == []
    found = bob.search(["#fun"])[0]
    assert "Tags: #fun" in repr(found) and found.owner == sy.local_worker
    # search results do not own the data: dropping them deletes nothing
    del found, radio
    sy.local_worker.flush_gc()
    assert len(bob._objects) == 3
    got = bob.search(["#hospital2"])[0].get()
    assert torch.equal(got, torch.tensor([5, 4, 3, 2, 1])) and got.tags == {"#radio", "#hospital2"}
    assert len(bob._objects) == 2
    del xp, yp, zp


def test_tag_a_pointer_tags_the_remote_tensor() -> None:
    (bob,) = _workers("s_bob2")
    p = torch.ones(3).send(bob)
    p.tag("#late").describe("tagged after sending")
    assert [q.id_at_location for q in bob.search("#late")] == [p.id_at_location]
    assert bob.search("sending")[0].description == "tagged after sending"


def test_search_bad_queries_are_clear() -> None:
    (bob,) = _workers("s_bob3")
    with pytest.raises(ValueError, match="at least one"):
        bob.search([])
    with pytest.raises(TypeError, match="strings"):
        bob.search([3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="non-empty strings"):
        torch.ones(1).tag("")


def test_describe_and_search_messages_are_bounded() -> None:
    env = messages.Envelope("me", [], messages.Search(["#a"] * (messages.MAX_TAGS + 1)))
    with pytest.raises(SerializationError, match="at most"):
        serde.decode(serde.encode(env))
    env2 = messages.Envelope("me", [], messages.Describe(1, ["x" * (messages.MAX_TAG_CHARS + 1)], None))
    with pytest.raises(SerializationError, match="characters"):
        serde.decode(serde.encode(env2))
    ok = messages.Envelope("me", [], messages.Describe(5, ["#a"], "d"))
    assert serde.decode(serde.encode(ok)) == ok
    (bob,) = _workers("s_bob4")
    # a malformed request gets an error reply and the worker keeps serving
    reply = serde.decode(bob.handle(serde.encode(env)))
    assert isinstance(reply, messages.Err)
    assert bob.search("#nothing") == []


def test_virtual_worker_data_and_grid_search() -> None:
    x = torch.tensor([[1.0, 2.0]]).tag("#toy", "#data")
    y = torch.tensor([1.0]).tag("#toy", "#target")
    bob = sy.VirtualWorker(hook, id="g_bob", data=(x, y))
    alice = sy.VirtualWorker(hook, id="g_alice")
    assert len(bob._objects) == 2
    grid = sy.PrivateGridNetwork(bob, alice)
    res = grid.search("#toy", "#data")
    assert list(res) == ["g_bob"] and torch.equal(res["g_bob"][0].copy().get(), x)
    assert grid.search(["#toy"])["g_bob"][0].shape in (torch.Size([1, 2]), torch.Size([1]))
    with pytest.raises(TypeError, match="workers"):
        sy.PrivateGridNetwork(bob, "alice")  # type: ignore[arg-type]


@pytest.mark.slow
def test_search_over_socket_workers() -> None:
    from syft_mpc.net.launch import LocalWorkers

    with LocalWorkers(["sk_bob", "sk_alice"], quiet=True) as cluster, cluster.socket_workers(hook) as (bob, alice):
        xp = torch.tensor([1.0, 2.0]).tag("#digits", "#data").describe("digits, remotely").send(bob)
        tp = torch.tensor([3.0]).tag("#digits", "#target").send(alice)  # kept: a dropped pointer deletes its data
        found = bob.search(["#digits"])
        assert [p.id_at_location for p in found] == [xp.id_at_location]
        assert found[0].description == "digits, remotely"
        grid = sy.PrivateGridNetwork(bob, alice)
        res = grid.search("#digits", "#target")
        assert list(res) == ["sk_alice"] and torch.equal(res["sk_alice"][0].get(), torch.tensor([3.0]))
        assert bob.search("#target") == []
        del tp


def test_sandbox_spreads_sklearn_data_sets(capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.datasets import load_diabetes

    g: dict[str, object] = {"torch": torch}
    sy.create_sandbox(g, verbose=False)
    assert "Done!" in capsys.readouterr().out
    names = ["bob", "theo", "jason", "alice", "andy", "jon"]
    assert [w.id for w in g["workers"]] == names and all(g[n] is w for n, w in zip(names, g["workers"]))  # type: ignore[attr-defined]
    data = g["grid"].search("#diabetes", "#data")  # type: ignore[attr-defined]
    target = g["grid"].search("#diabetes", "#target")  # type: ignore[attr-defined]
    assert list(data) == names and list(target) == names
    X, y = load_diabetes(return_X_y=True)
    got = torch.cat([data[n][0].copy().get() for n in names])
    assert torch.allclose(got, torch.tensor(X).float()) and sum(len(target[n][0]) for n in names) == len(y)
    assert g["grid"].search("#boston") == {}  # type: ignore[attr-defined]
    for tag in ("#digits", "#iris", "#wine", "#breast_cancer", "#linnerud"):
        assert len(g["grid"].search(tag, "#data")) == 6  # type: ignore[attr-defined]
    for w in g["workers"]:  # type: ignore[attr-defined]
        w.clear_objects()


# ---------------------------------------------------------------------- share(protocol=...), modules


@pytest.mark.parametrize("protocol", ["snn", "fss"])
def test_share_accepts_pysyft_protocol_names(protocol: str) -> None:
    bob, alice, james = _workers("p_bob", "p_alice", "p_james")
    x = torch.tensor([1.5, -2.0])
    s = x.fix_precision().share(bob, alice, crypto_provider=james, protocol=protocol)
    assert torch.allclose(s.get().float_precision(), x)
    ptr = x.send(bob)
    s2 = ptr.fix_precision().share(alice, james, crypto_provider=bob, protocol=protocol)
    assert torch.allclose(s2.decrypt(), x)
    m = nn.Linear(2, 1)
    w = m.weight.detach().clone()
    m.fix_precision().share(bob, alice, crypto_provider=james, protocol=protocol)
    assert torch.allclose(m.get().float_precision().weight, w, atol=2**-15)


def test_unknown_protocol_and_failed_module_share_leave_the_module_as_it_was() -> None:
    bob, alice, james = _workers("r_bob", "r_alice", "r_james")
    with pytest.raises(ValueError, match="'snn' or 'fss'"):
        torch.tensor([1.0]).fix_precision().share(bob, alice, crypto_provider=james, protocol="spdz2k")
    m = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    before = {k: v.detach().clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="'snn' or 'fss'"):
        m.fix_precision().share(bob, alice, crypto_provider=james, protocol="nope")
    after = m.state_dict()
    assert all(type(p) is nn.Parameter for p in m.parameters())
    assert all(torch.allclose(after[k], before[k], atol=2**-16) for k in before)
    with pytest.raises(ValueError, match="distinct"):  # fails after argument checks, inside sharing
        m.fix_precision().share(bob, bob, crypto_provider=james)
    assert all(type(p) is nn.Parameter for p in m.parameters())
    m.fix_precision().share(bob, alice, crypto_provider=james, protocol="fss")  # the corrected call works
    assert torch.allclose(m.get().float_precision()[0].weight, before["0.weight"], atol=2**-15)


def test_share_without_crypto_provider_uses_the_driver() -> None:
    bob, alice, bill = _workers("c_bob", "c_alice", "c_bill")
    x = torch.tensor([25]).share(bob, alice, bill)
    y = torch.tensor([5]).share(bob, alice, bill)
    assert torch.equal((x * y).get(), torch.tensor([125]))
    assert sum(w._tensors[next(iter(w._tensors))] for w in (bob, alice, bill)).item() == 25  # type: ignore[misc]


@pytest.mark.parametrize("n", [2, 3])
def test_argmax_and_comparisons_meet_fixed_point(n: int) -> None:
    """PySyft's accuracy line: pred.eq(target.view_as(pred)).sum() with pred = output.argmax(dim=1)
    (integer shares) and target a fix_precision() sharing; checked against plaintext."""
    ws = _workers(*[f"a{n}_{i}" for i in range(n)])
    james = sy.VirtualWorker(hook, id=f"a{n}_james")
    torch.manual_seed(n)
    out = torch.randn(12, 5)
    target = torch.randint(0, 5, (12,))
    out[:6] = 0
    out[torch.arange(6), target[:6]] = 1.0  # half of them right
    so = out.fix_precision().share(*ws, crypto_provider=james, protocol="fss")
    st = target.float().fix_precision().share(*ws, crypto_provider=james, protocol="fss")
    pred = so.argmax(dim=1)
    correct = 0
    correct += pred.eq(st.view_as(pred)).sum()
    expected = out.argmax(dim=1).eq(target).sum().item()
    assert correct.copy().get().float_precision().long().item() == expected
    gt = (so > 0.5)  # comparison bits combine with fixed point too
    assert torch.allclose((gt + so).get().float_precision(), (out > 0.5).float() + out, atol=2**-15)


# ---------------------------------------------------------------------- optimizers


def test_momentum_buffers_follow_the_model() -> None:
    """Tutorial Part 6 with momentum=0.5: the model visits bob, then alice; the result equals
    plaintext SGD with momentum on the same batches."""
    bob, alice = _workers("m_bob", "m_alice")
    torch.manual_seed(0)
    X, Y = torch.randn(8, 3), torch.randn(8, 1)
    ref, m = nn.Linear(3, 1), nn.Linear(3, 1)
    m.load_state_dict(ref.state_dict())
    o_ref = optim.SGD(ref.parameters(), lr=0.1, momentum=0.5)
    o = optim.SGD(m.parameters(), lr=0.1, momentum=0.5)
    data = [(X[:4].send(bob), Y[:4].send(bob)), (X[4:].send(alice), Y[4:].send(alice))]
    for _ in range(3):
        for i, (x, y) in enumerate(data):
            m.send(x.location)
            o.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            o.step()
            m.get()
            o_ref.zero_grad()
            ((ref(X[4 * i : 4 * i + 4]) - Y[4 * i : 4 * i + 4]) ** 2).mean().backward()
            o_ref.step()
    assert torch.allclose(m.weight, ref.weight, atol=1e-6) and torch.allclose(m.bias, ref.bias, atol=1e-6)
    # an optimizer whose state started here follows the model out, too
    o2 = optim.SGD(m.parameters(), lr=0.1, momentum=0.5)
    ((m(X) - Y) ** 2).mean().backward()
    o2.step()
    m.send(bob)
    o2.zero_grad()
    ((m(data[0][0]) - data[0][1]) ** 2).mean().backward()
    o2.step()
    assert o2.state[m.weight]["momentum_buffer"].location == bob
    m.get()


def test_optims_one_optimizer_per_worker() -> None:
    from syft_mpc.federated.floptimizer import Optims

    model = nn.Linear(2, 1)
    optims = Optims(["bob", "alice"], optim=optim.Adam(params=model.parameters(), lr=0.1))
    assert optims.count() == 2 and optims.get_optim("bob") is not optims.get_optim("alice")
    assert optims.get_optim("bob").defaults["lr"] == 0.1
    with pytest.raises(KeyError, match="carol"):
        optims.get_optim("carol")


# ---------------------------------------------------------------------- progress bars


def test_progress_bar_in_a_log_file_writes_whole_lines(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import time, torch, syft_mpc as sy
        from syft_mpc.federated import loader, progress
        loader.PROGRESS_DELAY_S = 0.2
        progress.LOG_INTERVAL_S = 0.5
        hook = sy.TorchHook(torch)
        bob, alice = sy.VirtualWorker(hook, id="bob"), sy.VirtualWorker(hook, id="alice")
        fed = sy.BaseDataset(torch.zeros(400, 3), torch.zeros(400)).federate((bob, alice))
        for x, y in sy.FederatedDataLoader(fed, batch_size=2):
            time.sleep(0.01)
        for x, y in sy.FederatedDataLoader(fed, batch_size=200):  # quick: no bar at all
            pass
        """
    )
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", script], stderr=f, stdout=f, check=True, timeout=120, cwd=tmp_path)
    text = log.read_text()
    assert "\r" not in text
    lines = [ln for ln in text.splitlines() if "batch" in ln]
    assert 1 <= len(lines) <= 20 and lines[-1].startswith("100%") and "200/200" in lines[-1]


def test_pysyft_names_this_library_lacks_say_so() -> None:
    with pytest.raises(AttributeError, match="PySyft 0.2 had sy.PublicGridNetwork.*TUTORIAL_POINTERS"):
        sy.PublicGridNetwork  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'$"):
        sy.no_such_name  # noqa: B018
