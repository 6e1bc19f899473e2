"""The browser's Plan interpreter (python/syft_mpc/net/static/plan.mjs) against the reference
interpreter (syft_mpc.plans.graph.run): the same traced training plans, the same inputs, step
after step of SGD, run by Node (no packages) on the plans as they travel (serde bytes)."""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import subprocess
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import syft_mpc as sy
from syft_mpc.plans import graph
from syft_mpc.remote import serde

ROOT = pathlib.Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (apt-get install nodejs)")
hook = sy.TorchHook(torch)


def _set_params(module: nn.Module, params: list[torch.Tensor]) -> None:
    for (name, _), p in zip(list(module.named_parameters()), params):
        mod_name, _, leaf = name.rpartition(".")
        sub = module.get_submodule(mod_name) if mod_name else module
        sub._parameters[leaf] = p  # type: ignore[assignment]


def training_plan(model: nn.Module, loss_fn: Any = F.cross_entropy) -> sy.Plan:
    @sy.func2plan()
    def train(X: torch.Tensor, y: torch.Tensor, batch_size: torch.Tensor, lr: torch.Tensor, params: list[torch.Tensor]) -> Any:
        _set_params(model, params)
        logits = model(X)
        loss = loss_fn(logits, y)
        loss.backward()
        updated = [p - lr * p.grad for p in params]
        acc = (logits.argmax(dim=1) == y).sum().float() / batch_size
        return (loss, acc, *updated)

    return train


def _b64(v: Any) -> str:
    return base64.b64encode(serde.encode(v)).decode()


def _run_js(cases: list[dict[str, Any]]) -> list[Any]:
    r = subprocess.run([NODE, "tests/js/plan_cli.mjs"], cwd=ROOT, input=json.dumps({"cases": cases}),  # type: ignore[list-item]
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _case(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float, loss_fn: Any = F.cross_entropy
          ) -> "tuple[dict[str, Any], list[list[torch.Tensor]]]":
    """A plan traced on the first batch, and the reference outputs of graph.run step after step."""
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    X0, y0 = batches[0]
    plan = training_plan(model, loss_fn)
    plan.build(X0, y0, torch.tensor(float(len(X0))), torch.tensor(lr), params)
    d = plan.definition
    ref, cur = [], [p.detach().clone() for p in params]
    for X, y in batches:
        out = graph.flat_outputs(graph.run(d, [X, y, torch.tensor(float(len(X))), torch.tensor(lr), *cur]))
        ref.append(out)
        cur = out[2:]
    case = {
        "plan": _b64(d),
        "inputs": [[_b64(X), _b64(y), _b64(torch.tensor(float(len(X)))), _b64(torch.tensor(lr))] for X, y in batches],
        "params": [_b64(p.detach()) for p in params],
        "carry_from": 2,
    }
    return case, ref


def _digits(n: int, seed: int) -> "tuple[torch.Tensor, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_js_interpreter_matches_reference_on_training_plans() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 10)
    mlp = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    mlp64 = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    reg = nn.Sequential(nn.Linear(64, 8), nn.Sigmoid(), nn.Linear(8, 1))
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, stride=2, groups=2),
                        nn.ReLU(), nn.Flatten(), nn.Linear(4, 10))
    batches = [_digits(16, s) for s in range(8)]
    cases, refs = [], []
    for model, bs, loss_fn in [
        (linear, batches, F.cross_entropy),
        (mlp, batches, F.cross_entropy),
        (mlp64, [(X.double(), y) for X, y in batches], F.cross_entropy),
        (reg, [(X, X[:, :1] * 2 - 1) for X, _ in batches], lambda out, t: F.mse_loss(out, t)),
        (cnn, [(X.reshape(-1, 1, 8, 8), y) for X, y in batches[:4]], F.cross_entropy),
    ]:
        c, r = _case(model, bs, 0.5 if loss_fn is F.cross_entropy else 0.1, loss_fn)
        cases.append(c)
        refs.append(r)
    out = _run_js(cases)
    for k, (steps, ref) in enumerate(zip(out, refs)):
        assert isinstance(steps, list), (k, steps)
        assert len(steps) == len(ref)
        for got_step, ref_step in zip(steps, ref):
            got = [serde.decode(base64.b64decode(s)) for s in got_step]
            assert len(got) == len(ref_step)
            for g, r in zip(got, ref_step):
                assert g.dtype == r.dtype and g.shape == r.shape, (k, g.dtype, r.dtype, g.shape, r.shape)
                torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
        # the training moved the weights (the loss is not the same at the last step)
        assert not torch.equal(serde.decode(base64.b64decode(steps[-1][0])), ref[0][0])


def test_js_interpreter_refuses_unknown_ops_and_malformed_plans() -> None:
    @sy.func2plan(args_shape=[(4, 3)])
    def sorts(x: torch.Tensor) -> torch.Tensor:  # clamp: allowed on Python workers, not in the browser
        return torch.clamp(x, 0.0, 1.0)

    from syft_mpc.remote.messages import PlanDef, Var

    forward_ref = PlanDef(7, "fwd", (Var(0),), 1, [], [("aten.add.Tensor", (Var(0), Var(5)), {})], Var(1))
    x = torch.ones(2, 2)
    out = _run_js([
        {"plan": _b64(sorts.definition), "inputs": [[_b64(torch.ones(4, 3))]], "params": [], "carry_from": 0},
        {"plan": _b64(forward_ref), "inputs": [[_b64(x)]], "params": [], "carry_from": 0},
        {"plan": _b64(PlanDef(8, "mm", (Var(0), Var(1)), 2, [], [("aten.mm.default", (Var(0), Var(1)), {})], Var(2))),
         "inputs": [[_b64(torch.ones(2, 3)), _b64(torch.ones(2, 3))]], "params": [], "carry_from": 0},
    ])
    assert out[0].startswith("error: UnsupportedOperationError:") and "aten.clamp.default" in out[0] and "node 0" in out[0]
    assert out[1].startswith("error: SerializationError:") and "value 5" in out[1]
    assert out[2].startswith("error: RuntimeError:") and "node 0 (aten.mm.default)" in out[2] and "cannot be multiplied" in out[2]
