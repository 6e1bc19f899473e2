"""nn.Module on pointers: in-place send/get, remote forward/backward/optimizer.step, federated tutorials."""

from __future__ import annotations

import copy
import gc
from typing import Any, Callable

import pytest
import torch
from torch import nn, optim

import syft_mpc as sy
from syft_mpc.errors import LocationError


@pytest.fixture
def hook() -> Any:
    return sy.TorchHook(torch)


def _xor_data() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1.0]], requires_grad=True)
    target = torch.tensor([[0], [0], [1], [1.0]], requires_grad=True)
    return data, target


def _params_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_module_send_and_get_act_in_place(hook: Any) -> None:
    bob = sy.VirtualWorker(hook, id="bob")
    model = nn.Linear(3, 2)
    params = list(model.parameters())
    values = [p.detach().clone() for p in params]
    assert model.send(bob) is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert len(bob._objects) == 2 and all(isinstance(p, sy.RemoteParameter) for p in params)
    assert model.weight.shape == torch.Size([2, 3]) and model.weight.requires_grad
    assert "PointerTensor" in repr(model.weight)
    assert isinstance(model.weight.data, sy.PointerTensor)
    assert model.get() is model
    assert bob._objects == {} and all(type(p) is nn.Parameter for p in params)
    assert all(torch.equal(p, v) for p, v in zip(params, values))


def test_remote_model_with_local_input_is_a_clear_error(hook: Any) -> None:
    bob = sy.VirtualWorker(hook, id="bob")
    model = nn.Linear(2, 1).send(bob)
    with pytest.raises(LocationError, match="local tensor"):
        model(torch.ones(1, 2))


OPTIMIZERS: dict[str, Callable[[Any], optim.Optimizer]] = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd-momentum-nesterov-wd": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda ps: optim.Adam(ps, lr=0.05),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=0.01),
}


@pytest.mark.parametrize("make_opt", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_optimizer_made_before_send_steps_remotely_like_plain_torch(hook: Any, make_opt: Any) -> None:
    bob = sy.VirtualWorker(hook, id="bob")
    torch.manual_seed(0)
    data, target = torch.randn(8, 3), torch.randn(8, 1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    ref = copy.deepcopy(model)
    opt, ref_opt = make_opt(model.parameters()), make_opt(ref.parameters())
    data_ptr, target_ptr = data.send(bob), target.send(bob)
    model.send(bob)
    for _ in range(5):
        opt.zero_grad()
        loss = ((model(data_ptr) - target_ptr) ** 2).mean()
        loss.backward()
        opt.step()
        ref_opt.zero_grad()
        ref_loss = ((ref(data) - target) ** 2).mean()
        ref_loss.backward()
        ref_opt.step()
        assert torch.equal(loss.get(), ref_loss.detach())
    model.get()
    assert _params_equal(model, ref)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), ref.parameters()))


def test_optimizer_state_made_before_send_follows_the_model(hook: Any) -> None:
    bob = sy.VirtualWorker(hook, id="bob")
    model = nn.Linear(2, 1)
    ref = copy.deepcopy(model)
    opt = optim.Adagrad(model.parameters(), lr=0.1)  # allocates its state here, locally
    ref_opt = optim.Adagrad(ref.parameters(), lr=0.1)
    model.send(bob)
    model(torch.ones(3, 2).send(bob)).sum().backward()
    opt.step()  # the state goes to bob first
    assert opt.state[model.weight]["sum"].location == bob
    ref(torch.ones(3, 2)).sum().backward()
    ref_opt.step()
    model.get()
    assert torch.allclose(model.weight, ref.weight) and torch.allclose(model.bias, ref.bias)


def test_pysyft_tutorial_part2_federated_learning(hook: Any) -> None:
    """PySyft tutorial Part 2: the model travels to each worker's data; an optimizer made before send."""
    bob = sy.VirtualWorker(hook, id="bob")
    alice = sy.VirtualWorker(hook, id="alice")
    data, target = _xor_data()
    data_bob, target_bob = data[0:2].send(bob), target[0:2].send(bob)
    data_alice, target_alice = data[2:].send(alice), target[2:].send(alice)
    datasets = [(data_bob, target_bob), (data_alice, target_alice)]
    torch.manual_seed(1)
    model = nn.Linear(2, 1)
    ref = copy.deepcopy(model)
    opt = optim.SGD(params=model.parameters(), lr=0.1)
    ref_opt = optim.SGD(params=ref.parameters(), lr=0.1)

    losses = []
    for _ in range(10):
        for data, target in datasets:
            model.send(data.location)
            opt.zero_grad()
            pred = model(data)
            loss = ((pred - target) ** 2).sum()
            loss.backward()
            opt.step()
            model.get()
            losses.append(loss.get().item())
    ref_losses = []
    local = _xor_data()
    for _ in range(10):
        for d, t in ((local[0][0:2], local[1][0:2]), (local[0][2:], local[1][2:])):
            ref_opt.zero_grad()
            ref_loss = ((ref(d) - t) ** 2).sum()
            ref_loss.backward()
            ref_opt.step()
            ref_losses.append(ref_loss.item())
    assert losses == ref_losses and losses[-1] < losses[0] / 5
    assert _params_equal(model, ref)
    del loss, pred
    gc.collect()
    sy.local_worker.flush_gc()
    assert len(bob._objects) == 2 and len(alice._objects) == 2  # only the data remains


def test_pysyft_tutorial_part4_trusted_aggregator(hook: Any) -> None:
    """PySyft tutorial Part 4: a model per worker, both moved to a trusted aggregator, only the average retrieved."""
    th = torch
    bob = sy.VirtualWorker(hook, id="bob")
    alice = sy.VirtualWorker(hook, id="alice")
    secure_worker = sy.VirtualWorker(hook, id="secure_worker")
    data, target = _xor_data()
    bobs_data, bobs_target = data[0:2].send(bob), target[0:2].send(bob)
    alices_data, alices_target = data[2:].send(alice), target[2:].send(alice)
    torch.manual_seed(2)
    model = nn.Linear(2, 1)
    ref = copy.deepcopy(model)

    iterations, worker_iters = 5, 3
    first_loss = ((model(data) - target) ** 2).sum().item()
    for a_iter in range(iterations):
        bobs_model = model.copy().send(bob)
        alices_model = model.copy().send(alice)
        bobs_opt = optim.SGD(params=bobs_model.parameters(), lr=0.1)
        alices_opt = optim.SGD(params=alices_model.parameters(), lr=0.1)
        for wi in range(worker_iters):
            bobs_opt.zero_grad()
            bobs_pred = bobs_model(bobs_data)
            bobs_loss = ((bobs_pred - bobs_target) ** 2).sum()
            bobs_loss.backward()
            bobs_opt.step()
            bobs_loss = bobs_loss.get().data
            alices_opt.zero_grad()
            alices_pred = alices_model(alices_data)
            alices_loss = ((alices_pred - alices_target) ** 2).sum()
            alices_loss.backward()
            alices_opt.step()
            alices_loss = alices_loss.get().data
        alices_model.move(secure_worker)
        bobs_model.move(secure_worker)
        sy.local_worker.flush_gc()  # the models of the previous round are deleted
        assert len(secure_worker._objects) == 4
        with th.no_grad():
            model.weight.set_(((alices_model.weight.data + bobs_model.weight.data) / 2).get())
            model.bias.set_(((alices_model.bias.data + bobs_model.bias.data) / 2).get())
    last_loss = ((model(data) - target) ** 2).sum().item()
    assert last_loss < first_loss

    # the same algorithm in plain torch gives the same model
    for _ in range(iterations):
        copies = []
        for d, t in ((data[0:2], target[0:2]), (data[2:], target[2:])):
            m = copy.deepcopy(ref)
            o = optim.SGD(m.parameters(), lr=0.1)
            for _ in range(worker_iters):
                o.zero_grad()
                ((m(d) - t) ** 2).sum().backward()
                o.step()
            copies.append(m)
        with torch.no_grad():
            ref.weight.set_((copies[1].weight.data + copies[0].weight.data) / 2)
            ref.bias.set_((copies[1].bias.data + copies[0].bias.data) / 2)
    assert _params_equal(model, ref)


def test_module_copy_move_and_buffers(hook: Any) -> None:
    bob = sy.VirtualWorker(hook, id="bob")
    alice = sy.VirtualWorker(hook, id="alice")
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    local_copy = model.copy()
    assert _params_equal(local_copy, model) and local_copy[0].weight is not model[0].weight
    ref = copy.deepcopy(model)
    model.send(bob)
    n = len(bob._objects)
    assert n == 2 + 2 + 3  # parameters, then running_mean, running_var, num_batches_tracked
    twin = model.copy()
    assert len(bob._objects) == 2 * n and twin[0].weight is not model[0].weight
    x = torch.randn(5, 2)
    out = model(x.send(bob))
    assert torch.allclose(out.get(), ref(x))
    model.move(alice)
    assert len(alice._objects) == n and isinstance(model[0].weight, sy.RemoteParameter)
    model.get()
    assert alice._objects == {}
    assert torch.equal(model[1].running_mean, ref[1].running_mean) and int(model[1].num_batches_tracked) == 1
    assert _params_equal(model, ref)
    twin.get()
    assert _params_equal(twin, local_copy)
    del twin
    gc.collect()
    sy.local_worker.flush_gc()
    assert bob._objects == {}  # the input and the twin are gone too


def test_requires_grad_of_a_sent_module_follows_to_the_worker(hook: Any) -> None:
    bob = sy.VirtualWorker(hook, id="bob")
    model = nn.Linear(2, 1).send(bob)
    remote = lambda p: bob._objects[p._syft_ptr.id_at_location]  # noqa: E731
    model.requires_grad_(False)
    assert not model.weight.requires_grad and not remote(model.weight).requires_grad
    model.weight.requires_grad = True
    assert model.weight.requires_grad and remote(model.weight).requires_grad
    model.get()
    assert model.weight.requires_grad and not model.bias.requires_grad
