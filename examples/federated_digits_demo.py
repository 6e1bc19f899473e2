"""Federated averaging over three worker processes: plain, with secure aggregation, with DP.

    syft-mpc launch --workers bob,alice,carol examples/federated_digits_demo.py [--plot PATH] [--rounds N]

`syft-mpc launch` starts the three workers on free ports with a fresh token and runs this
script as the driver (the server of federated averaging). scikit-learn's digits are split
non-IID by label: the training images are sorted by digit and cut in three, so each worker
sees only 3 to 4 of the 10 digits. Each worker trains the same MLP on its own images (a
fixed worker-side routine; the images never leave it), and the server averages:

1. FedAvg (McMahan et al. 2017), updates fetched in the clear;
2. FedAvg with secure aggregation (Bonawitz et al. 2017): each worker shares its update
   among the three workers itself, and the server reconstructs only the sum;
3. + central DP (McMahan et al. 2018): updates clipped, Gaussian noise added by the share
   holders to the shared sum; client-level ε from Opacus's accountant;
4. + local DP-SGD (Opacus) on every worker: example-level ε.

It prints the test accuracy and ε of each setting and saves the curves as a PNG.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import syft_mpc as sy
from syft_mpc.federated import CentralDP, FedAvg, LocalDP, plot_histories

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rounds", type=int, default=30, help="federated rounds per setting (default 30)")
parser.add_argument("--plot", default=os.path.join(tempfile.gettempdir(), "federated-digits.png"), help="where to save the PNG")
args = parser.parse_args()

torch.set_num_threads(1)  # small models; the worker processes on this machine need the other cores
hook = sy.TorchHook(torch)
workers = sy.workers_from_env(hook)
bob, alice, carol = workers

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
X_train, X_test = torch.tensor(X_train, dtype=torch.float32) / 16, torch.tensor(X_test, dtype=torch.float32) / 16
y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
order = torch.argsort(y_train, stable=True)  # non-IID: sorted by label, cut in three
federated = sy.BaseDataset(X_train[order], y_train[order]).federate((bob, alice, carol))

print(f"digits: {len(X_train)} training images on 3 worker processes, {len(X_test)} test images on the server")
for w, part in zip(federated.workers, torch.tensor_split(y_train[order], 3)):  # how federate() cut it
    print(f"  {w:6s}: {len(federated[w]):4d} images of digits {sorted(set(part.tolist()))}")

ROUNDS, STEPS, BATCH = args.rounds, 10, 32
DELTA = 1e-3


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def centralized() -> tuple[float, float]:
    """Reference: the same model and number of SGD steps on all the data in one place."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(ROUNDS * STEPS * 3):
        idx = torch.randint(len(X_train), (BATCH,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(X_train[idx]), y_train[idx]).backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(X_test).argmax(1) == y_test).float().mean())
    return acc, time.perf_counter() - t


settings = [
    ("FedAvg", {}),
    ("FedAvg + secure aggregation", {"secure_aggregation": True}),
    ("  + central DP, eps=10", {"secure_aggregation": True, "dp": CentralDP(10.0, DELTA, clip_norm=1.0)}),
    ("  + central DP, eps=1000", {"secure_aggregation": True, "dp": CentralDP(1000.0, DELTA, clip_norm=1.0)}),
    (
        "  + local DP-SGD, sigma=1",
        {"secure_aggregation": True, "local_dp": LocalDP(noise_multiplier=1.0, max_grad_norm=1.0, delta=DELTA), "lr": 0.5, "momentum": 0.0},
    ),
]

rows = []
acc, secs = centralized()
rows.append(("centralized SGD (reference, no federation)", acc, "-", secs))
histories = {}
for name, extra in settings:
    kw = dict(rounds=ROUNDS, local_steps=STEPS, batch_size=BATCH, lr=0.1, momentum=0.9, seed=0, eval_data=(X_test, y_test))
    kw.update(extra)
    trainer = FedAvg(mlp(), federated, **kw)
    print(f"\n{name.strip()}: {trainer}")
    t = time.perf_counter()
    history = trainer.fit()
    secs = time.perf_counter() - t
    last = history[-1]
    if "dp" in extra:
        eps = f"{last.epsilon:.3g} (client-level, sigma={trainer.noise_multiplier:.3g})"
    elif "local_dp" in extra:
        eps = f"{last.local_epsilon:.3g} (example-level, per worker)"
    else:
        eps = "inf"
    rows.append((name, last.test_accuracy, eps, secs))
    histories[name.strip()] = history

print(f"\n{ROUNDS} rounds x {STEPS} local steps (batch {BATCH}) on 3 workers, delta={DELTA}:\n")
print(f"| setting | test accuracy | epsilon | time (s) |")
print(f"|---|---|---|---|")
for name, acc, eps, secs in rows:
    print(f"| {name.strip()} | {acc:.2%} | {eps} | {secs:.1f} |")
path = plot_histories(histories, args.plot, title=f"FedAvg on digits, 3 workers, non-IID by label ({ROUNDS} rounds)")
print(f"\nplot: {path}")
