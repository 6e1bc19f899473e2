"""Checkpoints of encrypted training on VirtualWorkers: adaptive optimizers (Adam's shared
moments and its public step counter) resume exactly where they stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import mpc_workers
from torch import nn, optim

import syft_mpc as sy
from syft_mpc import checkpoint
from syft_mpc.encrypted import api as encrypted_api

hook = sy.TorchHook(torch)
EPS = encrypted_api.ADAPTIVE_MIN_EPS_UNITS / 2**16  # the smallest eps shared parameters use


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _step(model: nn.Module, opt: Any, x: Any, y: Any) -> float:
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.get().float_precision())


@pytest.mark.parametrize("n,make", [(2, lambda ps: optim.Adam(ps, lr=0.05, eps=EPS)), (3, lambda ps: optim.AdamW(ps, lr=0.05, eps=EPS, amsgrad=True))])
def test_adam_state_is_saved_and_resumed(n: int, make: Any, tmp_path: Path) -> None:
    ps, james = mpc_workers(hook, f"ckpt{n}", n)
    for i, w in enumerate(ps):
        w.state_dir = tmp_path / f"w{i}"
    torch.manual_seed(3)
    model = _net()
    model.fix_precision().share(*ps, crypto_provider=james, requires_grad=True)
    opt = make(model.parameters())
    x, y = torch.randn(8, 4), torch.randn(8, 2) * 0.5
    xs = x.fix_prec().share(*ps, crypto_provider=james)
    ys = y.fix_prec().share(*ps, crypto_provider=james)
    for _ in range(3):
        _step(model, opt, xs, ys)
    saved = checkpoint.save("adam", model=model, optimizer=opt)
    keys = {name.rsplit("/", 1)[-1] for name in saved["names"] if name.startswith("optimizer/")}
    assert {"exp_avg", "exp_avg_sq"} <= keys and "step" not in keys  # the counter is public, not shares
    ref = [_step(model, opt, xs, ys) for _ in range(3)]
    ref_params = [p.decrypt() for p in model.parameters()]

    torch.manual_seed(99)  # a fresh model and optimizer: restore must bring back all of it
    model2 = _net()
    opt2 = make(model2.parameters())
    checkpoint.restore("adam", *ps, crypto_provider=james, model=model2, optimizer=opt2)
    for p in model2.parameters():
        assert float(opt2.state[p]["step"]) == 3.0
    got = [_step(model2, opt2, xs, ys) for _ in range(3)]
    assert got == pytest.approx(ref, abs=1e-3), (got, ref)
    for p, q in zip(model2.parameters(), ref_params):
        assert torch.allclose(p.decrypt(), q, atol=1e-3)
    # The counter matters: restored without it, Adam's bias correction restarts and the run differs.
    model3 = _net()
    opt3 = make(model3.parameters())
    checkpoint.restore("adam", *ps, crypto_provider=james, model=model3, optimizer=opt3)
    for p in model3.parameters():
        opt3.state[p]["step"] = torch.tensor(0.0)
    for _ in range(3):
        _step(model3, opt3, xs, ys)
    dev = max(float((p.decrypt() - q).abs().max()) for p, q in zip(model3.parameters(), ref_params))
    assert dev > 1e-2, dev
