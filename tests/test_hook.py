"""TorchHook: what it adds to torch, what it leaves alone, and the worker basics."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import syft_mpc as sy
from syft_mpc import hook as hook_mod
from syft_mpc.remote import torch_methods

TENSOR_METHODS = {"send", "get", "move", "copy", "remote_get", "remote_send"}
MODULE_METHODS = {"send", "get", "move", "copy"}


def test_import_and_lazy_api_do_not_modify_torch() -> None:
    code = textwrap.dedent(
        """
        import torch
        def snapshot():
            return (
                {k: id(v) for k, v in vars(torch).items()},
                {k: id(v) for k, v in vars(torch.Tensor).items()},
                {k: id(v) for k, v in vars(torch.nn.Module).items()},
                {k: id(v) for k, v in vars(torch.nn.functional).items()},
                torch.overrides.has_torch_function_unary(torch.ones(1)),
            )
        before = snapshot()
        import syft_mpc as sy
        sy.VirtualWorker, sy.PointerTensor, sy.local_worker, sy.TorchHook, sy.serde
        assert snapshot() == before, "importing syft_mpc changed torch"
        hook = sy.TorchHook(torch)
        after = snapshot()
        added = set(after[1]) - set(before[1])
        encrypted = {"fix_prec", "fix_precision", "float_prec", "float_precision", "share", "encrypt", "decrypt"}
        tags = {"tag", "describe"}  # PySyft's tags and descriptions, found by worker.search
        assert added == {"send", "get", "move", "copy", "remote_get", "remote_send"} | encrypted | tags, added
        assert {k: v for k, v in after[1].items() if k in before[1]} == before[1], "hook replaced a torch method"
        assert after[0] == before[0] and after[3] == before[3], "hook changed torch or torch.nn.functional"
        assert set(after[2]) - set(before[2]) == {"send", "get", "move", "copy"} | encrypted
        assert after[4] is False, "hook installed a __torch_function__ on plain tensors"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_plain_import_does_not_import_torch() -> None:
    code = "import sys, syft_mpc; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_hook_attaches_plain_methods_and_is_idempotent() -> None:
    h1 = sy.TorchHook(torch)
    methods = {name: torch.Tensor.__dict__[name] for name in TENSOR_METHODS}
    h2 = sy.TorchHook(torch)
    assert {name: torch.Tensor.__dict__[name] for name in TENSOR_METHODS} == methods
    assert all(name in torch.nn.Module.__dict__ for name in MODULE_METHODS)
    assert h1.local_worker is h2.local_worker is sy.local_worker
    assert "__torch_function__" not in {k for k in torch.Tensor.__dict__ if k in TENSOR_METHODS}
    assert not torch.overrides.has_torch_function_unary(torch.ones(1))
    assert repr(h1) == "<TorchHook local_worker:me>"


def test_hook_refuses_to_override_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fake:
        def send(self) -> None: ...

    with pytest.raises(RuntimeError, match="already defines"):
        hook_mod._attach(Fake, {"send": torch_methods.tensor_send})
    with pytest.raises(TypeError, match="torch module"):
        sy.TorchHook(sys)  # type: ignore[arg-type]


def test_local_tensors_behave_as_before() -> None:
    sy.TorchHook(torch)
    a = torch.arange(10.0, requires_grad=True)
    b = (a * 2 + 1).sum()
    b.backward()
    assert torch.equal(a.grad, torch.full((10,), 2.0))
    assert type(a + a) is torch.Tensor
    c = a.copy()
    assert torch.equal(c, a) and c.requires_grad and c.is_leaf and c.data_ptr() != a.data_ptr()
    with pytest.raises(TypeError, match="local"):
        torch.ones(2).get()
    with pytest.raises(TypeError, match="local"):
        torch.ones(2).move(sy.local_worker)
    with pytest.raises(TypeError, match="local"):
        torch.ones(2).remote_get()
    with pytest.raises(TypeError, match="takes a worker"):
        torch.ones(2).send("bob")


def test_workers_basics() -> None:
    hook = sy.TorchHook(torch)
    assert sy.local_worker.id == "me"
    bob = sy.VirtualWorker(hook, id="bob")
    assert repr(bob) == "<VirtualWorker id:bob #objects:0>"
    x = torch.tensor([1, 2]).send(bob)
    y = torch.tensor([3, 4]).send(bob)
    assert repr(bob) == "<VirtualWorker id:bob #objects:2>"
    assert set(bob._objects) == {x.id_at_location, y.id_at_location}
    assert torch.equal(bob._objects[x.id_at_location], torch.tensor([1, 2]))
    assert bob.clear_objects() is bob and bob._objects == {}
    assert bob == sy.VirtualWorker(hook, id="bob") and bob != sy.VirtualWorker(hook, id="carol")
    with pytest.raises(ValueError):
        sy.VirtualWorker(hook, id="")
    with pytest.raises(LookupError, match="nobody"):
        bob.get_worker("nobody")


def test_docstring_examples_of_the_pointer_layer() -> None:
    import doctest
    import importlib

    for name in ("remote.serde", "remote.messages", "remote.allowlist", "remote.pointers", "remote.workers", "remote.torch_methods", "hook"):
        mod = importlib.import_module(f"syft_mpc.{name}")
        res = doctest.testmod(mod, verbose=False)
        assert res.failed == 0, name
    res = doctest.testmod(sy, verbose=False)
    assert res.failed == 0


def test_tutorial_doc_runs() -> None:
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "TUTORIAL_POINTERS.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) >= 6
    out = subprocess.run([sys.executable, "-c", "\n".join(blocks)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "tensor(25)" in out.stdout and "tensor([2, 4, 6])" in out.stdout
