"""Train and evaluate a classifier on encrypted data, every party in its own process.

    syft-mpc launch --workers bob,alice,carol examples/encrypted_digits_demo.py

`syft-mpc launch` starts the three workers on free ports with a fresh token and runs
this script as the driver. The model's parameters, the features and the labels of
scikit-learn's digits data set are fixed-point encoded and secret-shared between bob
and alice, with carol as the crypto provider (dealer). Forward, cross-entropy,
backward and SGD run on shares with plain torch autograd and torch.optim; bob and
alice exchange masked values directly over their own TCP connection. The result is
compared with the same model trained in plaintext with the same seed.
"""

import copy
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn, optim

import syft_mpc as sy

hook = sy.TorchHook(torch)
bob, alice, carol = sy.workers_from_env(hook)

X, y = load_digits(return_X_y=True)
X = torch.tensor(X, dtype=torch.float32) / 16
y = torch.tensor(y)
perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
train, test = perm[:1400], perm[1400:]
EPOCHS, BATCH = 3, 140

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
plain = copy.deepcopy(model)


def batches():
    for _ in range(EPOCHS):
        for i in range(0, len(train), BATCH):
            idx = train[i : i + BATCH]
            yield X[idx], F.one_hot(y[idx], 10).float()


def accuracy(m: nn.Module) -> float:
    with torch.no_grad():
        return float((m(X[test]).argmax(1) == y[test]).float().mean())


print(f"digits: {len(train)} training and {len(test)} test images of 8x8 pixels, 10 classes")
print(f"workers: {bob}, {alice} (share holders), {carol} (crypto provider), each its own process\n")

t = time.perf_counter()
popt = optim.SGD(plain.parameters(), lr=0.5, momentum=0.9)
for xb, yb in batches():
    popt.zero_grad()
    F.cross_entropy(plain(xb), yb).backward()
    popt.step()
plain_s = time.perf_counter() - t

model.fix_precision().share(bob, alice, crypto_provider=carol, requires_grad=True)
opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9).fix_precision()
t = time.perf_counter()
for step, (xb, yb) in enumerate(batches()):
    xs = xb.fix_prec().share(bob, alice, crypto_provider=carol)
    ys = yb.fix_prec().share(bob, alice, crypto_provider=carol)
    opt.zero_grad()
    loss = F.cross_entropy(model(xs), ys)
    loss.backward()
    opt.step()
    if step % 10 == 9:
        print(f"  encrypted step {step + 1:2d}: loss {loss.get().float_precision().item():.4f}")
enc_s = time.perf_counter() - t

# Encrypted inference with the still-shared model, then decrypt the model itself.
t = time.perf_counter()
logits = model(X[test].fix_prec().share(bob, alice, crypto_provider=carol)).get().float_precision()
inf_s = time.perf_counter() - t
enc_inference_acc = float((logits.argmax(1) == y[test]).float().mean())
model.get().float_precision()
with torch.no_grad():
    max_logit_gap = float((model(X[test]) - logits).abs().max())

steps = EPOCHS * len(train) // BATCH
print(f"\nplaintext training : {plain_s:7.2f} s, test accuracy {accuracy(plain):.2%}")
print(f"encrypted training : {enc_s:7.2f} s ({enc_s / steps * 1e3:.0f} ms per step of {BATCH}), test accuracy {accuracy(model):.2%}")
print(f"encrypted inference: {inf_s:7.2f} s for {len(test)} images, accuracy {enc_inference_acc:.2%}, "
      f"max |logit - plaintext logit| {max_logit_gap:.1e}")
