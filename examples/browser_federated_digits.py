"""Federated averaging with secure aggregation over browser tabs, on scikit-learn's digits.

With real browsers (three people, or three tabs)::

    python -c 'import secrets; print(secrets.token_hex(32))' > token
    syft-mpc gateway --port 8780 --token-file token --tabs digits0,digits1,digits2
    python examples/browser_federated_digits.py --write-csv /tmp/digits   # the three data files
    # open each printed link in a browser; in each tab load /tmp/digits/digitsK.csv
    SYFT_MPC_TOKEN=$(cat token) python examples/browser_federated_digits.py --port 8780

Without a person: ``--headless`` starts a gateway in this process and three headless
Chromium tabs (Debian's ``chromium`` through Playwright), loads the files into them as a
person would, then runs the same rounds. ``--python`` runs the same FedAvg with secure
aggregation over three Python socket-worker processes instead (``sy.FedAvg``), for comparison.

Each round every tab trains softmax regression on its own third: the driver sends the tabs a
training Plan (forward, cross-entropy, backward, SGD step, traced once to aten ops) and runs it
in each tab batch after batch on the tab's private data (``--routine`` uses the tab's
hand-written ``tab.train_softmax`` instead). The driver
sums ``n_k * (w_k - w)`` with :meth:`sy.Gateway.secure_sum` (pairwise masks in Z_2^64: the
driver sees only the sum) and moves the global model by the average.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import syft_mpc as sy

NAMES = ["digits0", "digits1", "digits2"]


def data() -> "tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]":
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=0)
    return Xtr, Xte, ytr, yte


def csv_of(X: np.ndarray, y: np.ndarray) -> str:
    return "\n".join(",".join([str(int(label))] + [repr(float(v)) for v in row]) for row, label in zip(X, y))


def training_plan(batch: int, lr: float) -> sy.Plan:
    """PySyft's training plan for softmax regression: returns the loss and the new weight and bias."""

    @sy.func2plan()
    def train(X: torch.Tensor, y: torch.Tensor, lr: torch.Tensor, params: "list[torch.Tensor]") -> "tuple[torch.Tensor, ...]":
        W, b = params
        loss = torch.nn.functional.cross_entropy(X @ W.t() + b, y)
        loss.backward()
        return (loss, W - lr * W.grad, b - lr * b.grad)

    train.build(torch.zeros(batch, 64), torch.zeros(batch, dtype=torch.long), torch.tensor(lr),
                [torch.zeros(10, 64, requires_grad=True), torch.zeros(10, requires_grad=True)])
    return train


def browser_rounds(gw: "sy.Gateway", rounds: int, lr: float, Xte: np.ndarray, yte: np.ndarray, routine: bool = False) -> None:
    tabs = sorted((w for w in gw.wait_for_workers(3, timeout_s=600) if w.id in NAMES), key=lambda w: w.id)
    sizes = [t.dataset_info("digits")["rows"] for t in tabs]
    print(f"tabs {[t.id for t in tabs]} hold {sizes} images")
    plan = training_plan(32, lr)
    batches = {t.id: t.dataset_batches("digits", 32) for t in tabs}
    lrs = {t.id: torch.tensor(lr).send(t) for t in tabs}
    W, b = torch.zeros(10, 64), torch.zeros(10)
    for r in range(rounds):
        t0 = time.perf_counter()
        updates = []
        for t, n in zip(tabs, sizes):
            if routine:
                w_new, b_new = t.fit("digits", W.send(t), b.send(t), lr=lr, epochs=1, batch_size=32)
            else:
                w_new, b_new = W.send(t), b.send(t)
                for xp, yp in batches[t.id]:  # one local epoch, the Plan run in the tab per batch
                    _loss, w_new, b_new = plan(xp, yp, lrs[t.id], [w_new, b_new])
            updates.append([(w_new - W.send(t)) * float(n), (b_new - b.send(t)) * float(n)])
        sw, sb = gw.secure_sum(tabs, updates)
        W, b = W + sw / sum(sizes), b + sb / sum(sizes)
        acc = float(((torch.tensor(Xte, dtype=torch.float32) @ W.T + b).argmax(1).numpy() == yte).mean())
        print(f"round {r + 1}: test accuracy {acc:.3f} ({time.perf_counter() - t0:.2f} s)")


def python_rounds(rounds: int, lr: float, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray) -> None:
    from syft_mpc.federated import FedAvg
    from syft_mpc.net.launch import LocalWorkers

    hook = sy.TorchHook(torch)
    with LocalWorkers(NAMES, quiet=True) as c, c.socket_workers(hook) as workers:
        fed = sy.BaseDataset(torch.tensor(Xtr, dtype=torch.float32), torch.tensor(ytr)).federate(tuple(workers))
        model = torch.nn.Sequential(torch.nn.Linear(64, 10))
        torch.nn.init.zeros_(model[0].weight)
        torch.nn.init.zeros_(model[0].bias)
        steps = -(-len(Xtr) // 3 // 32)  # one local epoch
        fa = FedAvg(model, fed, rounds=1, local_steps=steps, batch_size=32, lr=lr, secure_aggregation=True,
                    progress=False, seed=0)
        for r in range(rounds):
            t0 = time.perf_counter()
            fa.train_round()
            with torch.no_grad():
                acc = float((model(torch.tensor(Xte, dtype=torch.float32)).argmax(1).numpy() == yte).mean())
            print(f"round {r + 1}: test accuracy {acc:.3f} ({time.perf_counter() - t0:.2f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8780)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--headless", action="store_true", help="start a gateway and three headless Chromium tabs here")
    p.add_argument("--python", action="store_true", help="the same over three Python socket workers")
    p.add_argument("--routine", action="store_true", help="train with the tab's hand-written routine instead of a Plan")
    p.add_argument("--write-csv", metavar="DIR", help="write the three tabs' data files to DIR and exit")
    a = p.parse_args()
    torch.set_num_threads(1)
    sy.TorchHook(torch)
    Xtr, Xte, ytr, yte = data()
    parts = np.array_split(np.arange(len(Xtr)), 3)
    if a.write_csv:
        os.makedirs(a.write_csv, exist_ok=True)
        for n, idx in zip(NAMES, parts):
            with open(os.path.join(a.write_csv, f"{n}.csv"), "w") as f:
                f.write(csv_of(Xtr[idx], ytr[idx]))
        print(f"wrote {', '.join(n + '.csv' for n in NAMES)} to {a.write_csv}")
        return
    if a.python:
        python_rounds(a.rounds, a.lr, Xtr, ytr, Xte, yte)
        return
    if not a.headless:
        browser_rounds(sy.Gateway(a.host, a.port), a.rounds, a.lr, Xte, yte, a.routine)
        return
    from playwright.sync_api import sync_playwright

    from syft_mpc.net.gateway import GatewayServer

    token = secrets.token_hex(32)
    server = GatewayServer("127.0.0.1", 0, token).start_in_thread()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for n, idx in zip(NAMES, parts):
            page = browser.new_page()
            page.goto(server.link(n))
            page.set_input_files("#file", files=[{"name": f"{n}.csv", "mimeType": "text/csv", "buffer": csv_of(Xtr[idx], ytr[idx]).encode()}])
            while not page.evaluate("window.syftTab.datasets.has('digits') && window.syftTab.ws !== null"):
                time.sleep(0.05)  # (not wait_for_function: the page's CSP forbids the eval it polls with)
        gw = sy.Gateway("127.0.0.1", int(server.address.rpartition(":")[2]), token=token)
        browser_rounds(gw, a.rounds, a.lr, Xte, yte, a.routine)
        gw.close()
        browser.close()
    server.stop()


if __name__ == "__main__":
    main()
