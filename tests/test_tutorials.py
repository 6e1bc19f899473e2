"""The two PySyft tutorial flows from issue 3, unchanged but for the import (plus checks of the comments)."""

from __future__ import annotations

import torch

import syft_mpc as sy


def test_tutorial_flow_1_remote_execution_and_autograd(capsys) -> None:  # type: ignore[no-untyped-def]
    hook = sy.TorchHook(torch)
    bob = sy.VirtualWorker(hook, id="bob")
    x_ptr = torch.tensor([1, 2, 3, 4, 5]).send(bob)
    y_ptr = torch.tensor([1, 1, 1, 1, 1]).send(bob)
    z = x_ptr + x_ptr                      # bob._objects holds 3 tensors
    assert len(bob._objects) == 3 and all(isinstance(t, torch.Tensor) for t in bob._objects.values())
    assert x_ptr.location == bob and x_ptr.owner == sy.local_worker
    print(x_ptr.get(), y_ptr.get(), z.get())   # bob._objects is now empty
    assert bob._objects == {}
    x = torch.tensor([1, 2, 3, 4, 5.], requires_grad=True).send(bob)
    y = torch.tensor([1, 1, 1, 1, 1.], requires_grad=True).send(bob)
    z = (x + y).sum(); z.backward()
    x = x.get(); print(x.grad)              # tensor([1., 1., 1., 1., 1.])
    assert torch.equal(x.grad, torch.ones(5))

    out = capsys.readouterr().out.splitlines()
    assert out == [
        "tensor([1, 2, 3, 4, 5]) tensor([1, 1, 1, 1, 1]) tensor([ 2,  4,  6,  8, 10])",
        "tensor([1., 1., 1., 1., 1.])",
    ]
    assert repr(bob).startswith("<VirtualWorker id:bob #objects:")


def test_tutorial_flow_2_pointer_chains_and_move(capsys) -> None:  # type: ignore[no-untyped-def]
    hook = sy.TorchHook(torch)
    bob = sy.VirtualWorker(hook, id="bob")

    alice = sy.VirtualWorker(hook, id="alice")
    p2p2x = torch.tensor([1, 2, 3, 4, 5]).send(bob).send(alice)
    y = p2p2x + p2p2x                      # bob: 2 tensors; alice: 2 pointers to them
    assert len(bob._objects) == 2 and all(isinstance(t, torch.Tensor) for t in bob._objects.values())
    assert len(alice._objects) == 2 and all(isinstance(p, sy.PointerTensor) for p in alice._objects.values())
    assert {p.id_at_location for p in alice._objects.values()} == set(bob._objects)
    print(y.get().get())                   # tensor([ 2,  4,  6,  8, 10])
    print(p2p2x.get().get())               # bob and alice are empty again
    assert bob._objects == {} and alice._objects == {}
    x = torch.tensor([1, 2, 3, 4, 5]).send(bob)
    x = x.move(alice)                      # bob: {}; alice: {id: tensor([1, 2, 3, 4, 5])}
    assert bob._objects == {}
    assert list(alice._objects) == [x.id_at_location]
    assert torch.equal(alice._objects[x.id_at_location], torch.tensor([1, 2, 3, 4, 5]))

    assert capsys.readouterr().out.splitlines() == ["tensor([ 2,  4,  6,  8, 10])", "tensor([1, 2, 3, 4, 5])"]
