"""sy.TrainConfig, worker.fit / async_fit / evaluate (PySyft 0.2's WebSocket tutorials' API) against
real worker processes: `syft-mpc worker --transport websocket --dataset KEY=digits:...` and the
native socket transport. The model and loss travel as plans; the training loop runs on the worker.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import syft_mpc as sy
from syft_mpc.errors import PlanError
from syft_mpc.federated.builtin_data import load_dataset
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.net.socket_worker import SocketWorker

hook = sy.TorchHook(torch)

DATASETS = {
    "tbob": ["--dataset", "digits=digits:train:0/2", "--dataset", "digits_testing=digits:test"],
    "talice": ["--dataset", "digits=digits:train:1/2"],
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.fc1 = nn.Linear(8 * 3 * 3, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = x.view(-1, 8 * 3 * 3)
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(input=pred, target=target)


@pytest.fixture(scope="module", params=["websocket", "tcp"])
def workers(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    with LocalWorkers(list(DATASETS), grace_s=1.0, quiet=True, extra_args=["--transport", request.param], worker_args=DATASETS) as c:
        if request.param == "websocket":
            ws = [sy.WebsocketClientWorker(hook, "127.0.0.1", c.port(n), id=n, token=c.token) for n in DATASETS]
        else:
            ws = [SocketWorker(hook, id=n, host="127.0.0.1", port=c.port(n), token=c.token) for n in DATASETS]
        yield ws[0], ws[1]
        for name, proc in c.procs.items():
            assert proc.poll() is None, f"worker {name} exited"


def plaintext_eval(model: nn.Module, key: str) -> tuple[int, float]:
    ds = load_dataset(key)
    with torch.no_grad():
        out = torch.cat([model(ds.data[i:i + 1]) for i in range(len(ds.data))])
    return int((out.argmax(1) == ds.targets).sum()), float(F.nll_loss(out, ds.targets))


def test_fit_reduces_loss_and_evaluate_matches_plaintext(workers: tuple[Any, Any]) -> None:
    bob, _ = workers
    torch.manual_seed(0)
    model = Net()
    traced = torch.jit.trace(model, torch.zeros(16, 1, 8, 8))
    cfg = sy.TrainConfig(model=traced, loss_fn=loss_fn, batch_size=16, shuffle=True, max_nr_batches=20, epochs=1,
                         optimizer="SGD", optimizer_args={"lr": 0.3})
    cfg.send(bob)
    before = bob.evaluate(dataset_key="digits_testing", return_histograms=True, nr_bins=10)
    losses = [float(bob.fit(dataset_key="digits")) for _ in range(4)]
    after = bob.evaluate(dataset_key="digits_testing", return_histograms=True, nr_bins=10, return_loss=True,
                         return_raw_accuracy=True)
    assert after["loss"] < 0.6 * before["loss"], (before, after, losses)
    trained = cfg.model_ptr.get().obj
    correct, loss = plaintext_eval(trained, "digits:test")
    assert after["nr_predictions"] == 360 and after["nr_correct_predictions"] == correct
    assert after["loss"] == pytest.approx(loss, rel=1e-4)
    assert sum(after["histogram_predictions"]) == 360
    assert after["histogram_target"] == torch.bincount(load_dataset("digits:test").targets, minlength=10).tolist()
    assert correct / 360 > 0.6  # 80 SGD steps on 718 samples
    # the parameters left the driver untouched: only the returned copy is trained
    assert torch.equal(next(traced.parameters()), next(model.parameters()))


def test_plain_module_and_async_fit_on_two_workers(workers: tuple[Any, Any]) -> None:
    torch.manual_seed(1)
    model = Net()

    async def fit(w: Any) -> tuple[Any, torch.Tensor]:
        cfg = sy.TrainConfig(model=model, loss_fn=loss_fn, batch_size=32, max_nr_batches=5, epochs=1,
                             optimizer="SGD", optimizer_args={"lr": 0.1}, example_input=torch.zeros(1, 1, 8, 8))
        cfg.send(w)
        loss = await w.async_fit(dataset_key="digits", return_ids=[0])
        return cfg.model_ptr.get().obj, loss

    async def both() -> list[tuple[Any, torch.Tensor]]:
        return await asyncio.gather(*[fit(w) for w in workers])

    results = asyncio.run(both())
    for trained, loss in results:
        assert loss.dim() == 0 and 0 < float(loss) < 2.5
        assert not torch.equal(trained.fc2.weight, model.fc2.weight)
    assert not torch.equal(results[0][0].fc2.weight, results[1][0].fc2.weight)  # different data


def test_bad_inputs_give_clear_errors_and_the_worker_keeps_serving(workers: tuple[Any, Any]) -> None:
    bob, alice = workers
    model = Net()
    with pytest.raises(PlanError, match="example_input"):
        sy.TrainConfig(model=model, loss_fn=loss_fn, optimizer_args={"lr": 0.1})
    with pytest.raises(ValueError, match="optimizer"):
        sy.TrainConfig(model=model, loss_fn=loss_fn, optimizer="Adam", example_input=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="lr"):
        sy.TrainConfig(model=model, loss_fn=loss_fn, optimizer_args={"momentum": 0.9}, example_input=torch.zeros(1, 1, 8, 8))
    cfg = sy.TrainConfig(model=model, loss_fn=loss_fn, batch_size=8, optimizer_args={"lr": 0.1},
                         example_input=torch.zeros(1, 1, 8, 8)).send(alice)
    with pytest.raises(LookupError, match="no dataset 'mnist'.*digits"):
        alice.fit(dataset_key="mnist")
    with pytest.raises(LookupError, match="no dataset"):
        alice.evaluate(dataset_key="nope")
    # plans traced for inputs of another shape: the worker reports the shape error
    flat = nn.Sequential(nn.Flatten(), nn.Linear(100, 10), nn.LogSoftmax(dim=1))
    wrong = sy.TrainConfig(model=flat, loss_fn=loss_fn, batch_size=8, optimizer_args={"lr": 0.1},
                           example_input=torch.zeros(1, 1, 10, 10)).send(alice)
    with pytest.raises(RuntimeError, match="on worker talice"):
        alice.fit(dataset_key="digits")
    # evaluation-only configuration refuses to train
    sy.TrainConfig(model=model, loss_fn=loss_fn, batch_size=8, example_input=torch.zeros(1, 1, 8, 8)).send(alice)
    with pytest.raises(RuntimeError, match="optimizer_args=None"):
        alice.fit(dataset_key="digits")
    assert alice.evaluate(dataset_key="digits")["nr_predictions"] == 718
    # and a good configuration still trains
    cfg.send(alice)
    assert float(alice.fit(dataset_key="digits")) > 0
    del wrong


def test_dataset_spec_errors() -> None:
    with pytest.raises(ValueError, match="digits:train"):
        load_dataset("mnist:train")
    with pytest.raises(ValueError, match="I/N"):
        load_dataset("digits:train:3/3")
    assert len(load_dataset("digits:train:0/3").data) + len(load_dataset("digits:test").data) == 479 + 360


def test_worker_cli_refuses_a_bad_dataset_spec() -> None:
    import os
    import secrets
    import subprocess
    import sys

    env = {**os.environ, "SYFT_MPC_TOKEN": secrets.token_hex(16)}
    r = subprocess.run(
        [sys.executable, "-m", "syft_mpc", "worker", "--id", "w", "--port", "0", "--transport", "websocket",
         "--dataset", "mnist=mnist:train"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0 and "unknown dataset 'mnist:train'" in r.stderr and "digits:train" in r.stderr
