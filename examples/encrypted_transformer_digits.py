"""A small transformer on scikit-learn's digits: plaintext training, encrypted inference of the
whole test set, then encrypted fine-tuning with torch.optim, every party in its own process.

    syft-mpc launch --workers bob,alice,carol examples/encrypted_transformer_digits.py

Each 8x8 image is read as a sequence of 8 rows of 8 pixels: a linear embedding of each row plus a
learned position embedding, one ``nn.TransformerEncoderLayer`` (d_model 16, 2 heads), mean pooling
over the rows and a linear head. The model is trained in plaintext for a few seconds, then
``model.fix_precision().share(bob, alice, crypto_provider=carol)`` shares it; the test images are
shared too and classified without any party seeing them or the weights (attention's softmax,
LayerNorm's inverse square root and the ReLU all run on shares). Last, a few steps of encrypted
fine-tuning with torch's own autograd and ``torch.optim.SGD``, each loss printed next to the same
step in plaintext.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn, optim

D_MODEL, HEADS, FF = 16, 2, 32


class RowTransformer(nn.Module):
    """Rows of pixels as tokens: Linear(8 -> d) + position embedding, an encoder layer, mean pool, head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, D_MODEL)
        self.pos = nn.Parameter(torch.randn(1, 8, D_MODEL) * 0.1)
        self.encoder = nn.TransformerEncoderLayer(D_MODEL, HEADS, FF, dropout=0.0, batch_first=True)
        self.head = nn.Linear(D_MODEL, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(-1, 8, 8)) + self.pos
        return self.head(self.encoder(h).mean(1))


def load(n_test: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits scaled to [0, 1]: 1400 training images, the other 397 (or the first n_test) for testing."""
    X, y = load_digits(return_X_y=True)
    Xt = torch.tensor(X, dtype=torch.float32) / 16
    yt = torch.tensor(y)
    perm = torch.randperm(len(Xt), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    if n_test is not None:
        test = test[:n_test]
    return Xt[train], yt[train], Xt[test], yt[test]


def run(bob: Any, alice: Any, carol: Any, *, epochs: int = 8, n_test: int | None = None,
        finetune_steps: int = 5, batch: int = 64, verbose: bool = True) -> dict[str, Any]:
    """The whole demo on the given workers; returns what it printed (accuracies, gap, losses, times)."""
    say = print if verbose else (lambda *a, **k: None)
    Xtr, ytr, Xte, yte = load(n_test)
    say(f"digits: {len(Xtr)} training and {len(Xte)} test images, each 8 rows of 8 pixels, 10 classes")
    say(f"workers: {bob}, {alice} (share holders), {carol} (crypto provider)\n")

    torch.manual_seed(0)
    model = RowTransformer()
    t = time.perf_counter()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        perm = torch.randperm(len(Xtr), generator=order)
        for i in range(0, len(Xtr), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            F.cross_entropy(model(Xtr[idx]), ytr[idx]).backward()
            opt.step()
    plain_train_s = time.perf_counter() - t
    model.eval()
    with torch.no_grad():
        t = time.perf_counter()
        plain_logits = model(Xte)
        plain_inf_s = time.perf_counter() - t
    plain_acc = float((plain_logits.argmax(1) == yte).float().mean())
    say(f"plaintext training : {plain_train_s:6.2f} s ({epochs} epochs of Adam), test accuracy {plain_acc:.2%}")

    # Encrypted inference of the whole test set with the shared model.
    plain = copy.deepcopy(model)
    model.fix_precision().share(bob, alice, crypto_provider=carol, requires_grad=True)
    t = time.perf_counter()
    with torch.no_grad():
        xs = Xte.fix_prec().share(bob, alice, crypto_provider=carol)
        enc_logits = model(xs).decrypt()
    enc_inf_s = time.perf_counter() - t
    enc_acc = float((enc_logits.argmax(1) == yte).float().mean())
    gap = float((enc_logits - plain_logits).abs().max())
    agree = float((enc_logits.argmax(1) == plain_logits.argmax(1)).float().mean())
    say(f"plaintext inference: {plain_inf_s * 1e3:6.1f} ms for {len(Xte)} images, accuracy {plain_acc:.2%}")
    say(f"encrypted inference: {enc_inf_s:6.2f} s  for {len(Xte)} images, accuracy {enc_acc:.2%}, "
        f"same class as plaintext for {agree:.2%}, max |logit - plaintext logit| {gap:.1e}\n")

    # Encrypted fine-tuning: torch autograd and SGD on shares, against the same steps in plaintext.
    model.train()
    plain.train()
    opt = optim.SGD(model.parameters(), lr=0.05)
    popt = optim.SGD(plain.parameters(), lr=0.05)
    losses: list[tuple[float, float]] = []
    step_s: list[float] = []
    say("encrypted fine-tuning, SGD on batches of", batch, "training images:")
    for step in range(finetune_steps):
        idx = torch.arange(step * batch, (step + 1) * batch) % len(Xtr)
        xb, yb = Xtr[idx], F.one_hot(ytr[idx], 10).float()
        t = time.perf_counter()
        xs = xb.fix_prec().share(bob, alice, crypto_provider=carol)
        ys = yb.fix_prec().share(bob, alice, crypto_provider=carol)
        opt.zero_grad()
        loss = F.cross_entropy(model(xs), ys)
        loss.backward()
        opt.step()
        got = float(loss.detach().decrypt())
        step_s.append(time.perf_counter() - t)
        popt.zero_grad()
        ploss = F.cross_entropy(plain(xb), yb)
        ploss.backward()
        popt.step()
        losses.append((got, float(ploss.detach())))
        say(f"  step {step + 1}: encrypted loss {got:.4f}   plaintext {losses[-1][1]:.4f}   "
            f"|diff| {abs(got - losses[-1][1]):.1e}   {step_s[-1]:.2f} s")
    model.get().float_precision()
    wgap = max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(model.parameters(), plain.parameters()))
    say(f"after fine-tuning, max |weight - plaintext weight| {wgap:.1e}")
    return {"plain_acc": plain_acc, "enc_acc": enc_acc, "agree": agree, "logit_gap": gap, "losses": losses,
            "weight_gap": wgap, "plain_train_s": plain_train_s, "enc_inference_s": enc_inf_s, "step_s": step_s}


if __name__ == "__main__":
    import syft_mpc as sy

    hook = sy.TorchHook(torch)
    started = time.perf_counter()
    run(*sy.workers_from_env(hook))
    print(f"total {time.perf_counter() - started:.1f} s")
