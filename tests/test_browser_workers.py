"""Browser tabs as workers: a real `syft-mpc gateway` process and headless Chromium tabs.

Chromium is Debian's (`apt-get install chromium`), driven by Playwright (PyPI) through
``executable_path``; ``.ci/run`` installs both. Each tab opens the gateway's page with its id
and token in the link's fragment, exactly as a person would.
"""

from __future__ import annotations

import shutil
import socket
import time
from typing import Any, Iterator

import numpy as np
import pytest
import torch

import syft_mpc as sy
from syft_mpc.errors import AuthenticationError, PeerDisconnected, RemoteError
from syft_mpc.plans import graph

from _worker_procs import CliGateway

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="needs Debian's chromium and playwright (.ci/run installs them: apt-get install chromium; pip install playwright)",
)
hook = sy.TorchHook(torch)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliGateway]:
    with CliGateway(tmp_path_factory.mktemp("browser") / "gateway.log", "--quiet") as g:
        yield g


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def wait_js(page: "Page", expr: str, timeout_s: float = 30.0) -> None:
    """Polls ``expr`` in the page. (Playwright's wait_for_function polls with code that the page's
    Content-Security-Policy forbids, as it should: no eval; a direct evaluate is allowed.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expr):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expr} still false after {timeout_s:.0f} s; page log: {page.inner_text('#log')[-2000:]}")
        time.sleep(0.05)


def open_tab(browser: "Browser", url: str, expect: str = "connected") -> "Page":
    page = browser.new_page()
    page.goto(url)
    wait_js(page, f"document.getElementById('status').textContent.includes({expect!r})")
    assert "#" not in page.url  # the token left the address bar
    return page


def test_page_and_static_files_are_served(gateway: CliGateway) -> None:
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(gateway.url + "/") as r:
        assert b"syft_mpc browser worker" in r.read() and "default-src 'self'" in r.headers["Content-Security-Policy"]
    for name in ("ring.mjs", "plan.mjs"):
        with urllib.request.urlopen(gateway.url + "/static/" + name) as r:
            assert r.headers["Content-Type"].startswith("text/javascript")
    for bad in ("/static/../gateway.py", "/etc/passwd", "/static/nothing.js"):
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(gateway.url + bad)


def test_tensors_ops_shares_and_private_data(gateway: CliGateway, browser: "Browser") -> None:
    a_page, b_page = open_tab(browser, gateway.link("ta")), open_tab(browser, gateway.link("tb"))
    gw = sy.Gateway("127.0.0.1", gateway.port, token=gateway.token, timeout_s=20)
    try:
        ws = {w.id: w for w in gw.wait_for_workers(2)}
        ta, tb = ws["ta"], ws["tb"]
        assert isinstance(ta, sy.BrowserWorker)
        x = torch.tensor([[1.5, -2.0], [3.0, 0.25]]).send(ta)
        y = torch.tensor([[2.0, 4.0], [-1.0, 8.0]]).send(ta)
        assert torch.equal((x + y).get(), torch.tensor([[3.5, 2.0], [2.0, 8.25]]))
        assert torch.equal((x * y - x).get(), torch.tensor([[1.5, -6.0], [-6.0, 1.75]]))
        assert torch.equal((-x).get(), -torch.tensor([[1.5, -2.0], [3.0, 0.25]]))
        assert torch.equal((x * 2).get(), torch.tensor([[3.0, -4.0], [6.0, 0.5]]))
        with pytest.raises(RemoteError, match="shapes"):
            x + torch.ones(3).send(ta)
        # Z_2^64 shares: each tab holds one share of u and of v and adds them locally
        u, v = torch.randint(-2**62, 2**62, (50,)), torch.randint(-2**62, 2**62, (50,))
        ru, rv = torch.randint(-2**63, 2**63 - 1, (50,)), torch.randint(-2**63, 2**63 - 1, (50,))
        s_a = u.sub(ru).send(ta) + v.sub(rv).send(ta)
        s_b = ru.send(tb) + rv.send(tb)
        assert torch.equal(s_a.get() + s_b.get(), u + v)  # int64 wraps on both sides, like the ring
        # data loaded by the person stays: what is computed from it cannot be fetched
        a_page.set_input_files("#file", files=[{"name": "d.csv", "mimeType": "text/csv", "buffer": b"0,1,2\n1,3,4\n"}])
        wait_js(a_page, "window.syftTab.datasets.has('digits')")
        assert ta.dataset_info("digits") == {"rows": 2, "features": 2, "classes": 2}
        w, b = torch.zeros(2, 2).send(ta), torch.zeros(2).send(ta)
        w2, b2 = ta.fit("digits", w, b, lr=0.1)
        with pytest.raises(RemoteError, match="does not let tensors computed from its data leave"):
            w2.get()
        assert "refused" in a_page.inner_text("#log")
        assert "sent a tensor" in b_page.inner_text("#log")
    finally:
        gw.close()
        a_page.close()
        b_page.close()


def test_closing_a_tab_is_an_error_naming_it_and_others_go_on(gateway: CliGateway, browser: "Browser") -> None:
    pages = {n: open_tab(browser, gateway.link(n)) for n in ("tc1", "tc2")}
    gw = sy.Gateway("127.0.0.1", gateway.port, token=gateway.token, timeout_s=20)
    try:
        ws = {w.id: w for w in gw.wait_for_workers(2) if w.id in pages}
        p1 = torch.ones(3).send(ws["tc1"])
        p2 = torch.ones(3).send(ws["tc2"])
        pages["tc1"].close()
        t0 = time.monotonic()
        with pytest.raises(PeerDisconnected, match="tc1"):
            for _ in range(100):
                (p1 + p1).get()
                time.sleep(0.05)
        assert time.monotonic() - t0 < 5
        assert torch.equal((p2 + p2).get(), torch.full((3,), 2.0))
        assert "tc1" not in [w.id for w in gw.workers()]
    finally:
        gw.close()
        pages["tc2"].close()


def test_hostile_clients(gateway: CliGateway, browser: "Browser") -> None:
    from websockets.sync.client import connect

    with pytest.raises(AuthenticationError):
        sy.Gateway("127.0.0.1", gateway.port, token="not the token at all", timeout_s=5)
    # a tab with a wrong token is refused, and says so on the page
    bad = browser.new_page()
    bad.goto(gateway.url + "/#id=evil&token=" + "0" * 40)
    wait_js(bad, "document.getElementById('status').textContent.includes('rejected')")
    bad.close()
    # a tab token cannot be used as another tab, nor as the driver
    with pytest.raises(AuthenticationError):
        from syft_mpc.net.gateway import tab_token

        sy.Gateway("127.0.0.1", gateway.port, token=tab_token(gateway.token, "ta"), timeout_s=5)
    for path in ("/tab", "/driver"):
        with connect(f"ws://127.0.0.1:{gateway.port}{path}") as ws:
            ws.send(b"\x00" * 1000)
            with pytest.raises(Exception):
                ws.recv(timeout=5)
                ws.recv(timeout=5)
    s = socket.create_connection(("127.0.0.1", gateway.port))
    s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
    s.recv(100)
    s.close()
    # still serving
    page = open_tab(browser, gateway.link("th"))
    gw = sy.Gateway("127.0.0.1", gateway.port, token=gateway.token, timeout_s=20)
    try:
        (w,) = [w for w in gw.wait_for_workers(1) if w.id == "th"]
        assert torch.equal(torch.tensor([1, 2]).send(w).get(), torch.tensor([1, 2]))
        with pytest.raises(RemoteError, match="not supported"):
            torch.ones(2).send(w).exp()
    finally:
        gw.close()
        page.close()


def test_a_driver_that_stops_reading_stalls_no_other_driver(gateway: CliGateway, browser: "Browser") -> None:
    """A driver stores a 4 MiB tensor on a real tab and asks for it 20 times without reading
    the answers (80 MiB): once the tab has answered those (its own queue: the first round trip
    waits for them), another driver's round trips through the same tab go on while the deaf
    driver's answers wait, and the deaf driver is cut off, the gateway's log saying why.
    Before, the tab's relay thread blocked in the send to the deaf driver and the other driver
    timed out."""
    from syft_mpc.net.gateway import DRIVER_SESSION, GATEWAY_ID
    from syft_mpc.net.ws_transport import open_connection
    from syft_mpc.remote import serde
    from syft_mpc.remote.messages import Envelope, Fetch, Ok, Store, new_id

    page = open_tab(browser, gateway.link("tdeaf"))
    gw = sy.Gateway("127.0.0.1", gateway.port, token=gateway.token, timeout_s=20)
    deaf = open_connection(f"ws://127.0.0.1:{gateway.port}/driver", gateway.token, GATEWAY_ID, DRIVER_SESSION, 10.0)
    try:
        (w,) = [w for w in gw.wait_for_workers(1) if w.id == "tdeaf"]
        host, port = deaf.ws.socket.getsockname()[:2]
        oid = new_id()
        deaf.send(serde.encode(("req", 0, "tdeaf", serde.encode(Envelope("deaf", [], Store(oid, torch.zeros(1 << 20)))))))
        reply = serde.decode(deaf.recv(20))
        assert reply[0] == "reply" and isinstance(serde.decode(reply[2]), Ok), reply
        fetch = serde.encode(Envelope("deaf", [], Fetch(oid, False)))
        for i in range(1, 21):
            deaf.send(serde.encode(("req", i, "tdeaf", fetch)))
        x = torch.arange(100.0)
        times: list[float] = []
        t_start = time.monotonic()
        cut: list[str] = []
        # At least 5 round trips: the cut may come at once (the tab answers faster than the
        # deaf driver's limit fills) or only at the send deadline.
        while time.monotonic() - t_start < 40 and (not cut or len(times) < 5):
            t0 = time.perf_counter()
            assert torch.equal(x.send(w).get(), x)
            times.append(time.perf_counter() - t0)
            cut = [ln for ln in gateway.log_lines() if f"cut off {host}:{port}" in ln or f"cut off driver {host}:{port}" in ln]
            time.sleep(0.05)
        print(f"\nhonest driver -> real tab beside a driver not reading, {time.monotonic() - t_start:.1f} s: "
              f"{len(times)} round trips, the first {times[0] * 1e3:.0f} ms (behind the tab's answers to the deaf driver), "
              f"then median {sorted(times[1:] or [0.0])[len(times[1:]) // 2] * 1e3:.1f} ms, max {max(times[1:] or [0.0]) * 1e3:.1f} ms; "
              f"gateway: {cut}")
        assert len(times) > 1 and max(times[1:]) < 5.0, f"honest round trips beside the deaf driver: {times}"
        assert cut, "the deaf driver was not cut off"
        assert torch.equal(x.send(w).get(), x)
    finally:
        deaf.close()
        gw.close()
        page.close()


def _set_params(module: torch.nn.Module, params: list[torch.Tensor]) -> None:
    for (name, _), p in zip(list(module.named_parameters()), params):
        mod_name, _, leaf = name.rpartition(".")
        sub = module.get_submodule(mod_name) if mod_name else module
        sub._parameters[leaf] = p  # type: ignore[assignment]


def training_plan(model: torch.nn.Module) -> sy.Plan:
    """PySyft's training plan: forward, cross-entropy, backward, SGD step; returns loss, accuracy, new params."""

    @sy.func2plan()
    def train(X: torch.Tensor, y: torch.Tensor, batch_size: torch.Tensor, lr: torch.Tensor, params: list[torch.Tensor]) -> Any:
        _set_params(model, params)
        logits = model(X)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        updated = [p - lr * p.grad for p in params]
        acc = (logits.argmax(dim=1) == y).sum().float() / batch_size
        return (loss, acc, *updated)

    return train


def test_a_tab_runs_training_plans(gateway: CliGateway, browser: "Browser") -> None:
    from syft_mpc.errors import RemoteTypeError

    page = open_tab(browser, gateway.link("tp"))
    gw = sy.Gateway("127.0.0.1", gateway.port, token=gateway.token, timeout_s=30)
    try:
        (tab,) = [w for w in gw.wait_for_workers(1) if w.id == "tp"]
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
        params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
        plan = training_plan(model)
        X, y = torch.rand(10, 8), torch.randint(0, 3, (10,))
        bs, lr = torch.tensor(10.0), torch.tensor(0.3)
        plan.build(X, y, bs, lr, params)
        ptr_plan = plan.send(tab)
        n_ops = len(plan.definition.nodes)
        wait_js(page, f"document.getElementById('log').textContent.includes('plan train ({n_ops} ops)')")
        remote = [p.detach().send(tab) for p in params]
        ref = [p.detach().clone() for p in params]
        xp, yp, bp, lp = X.send(tab), y.send(tab), bs.send(tab), lr.send(tab)
        for _ in range(3):
            loss, acc, *remote = ptr_plan(xp, yp, bp, lp, remote)
            out = graph.flat_outputs(graph.run(plan.definition, [X, y, bs, lr, *ref]))
            ref = out[2:]
            torch.testing.assert_close(loss.get(), out[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(acc.get(), out[1])
        for r, e in zip(remote, ref):
            torch.testing.assert_close(r.get(), e, atol=1e-5, rtol=1e-5)
        assert "ran plan train (run 3" in page.inner_text("#log")
        assert "train" in page.inner_text("#plans")
        # a plan with an op the tab lacks is refused at PlanStore, naming the op and the tab
        @sy.func2plan(args_shape=[(2, 2)])
        def clamp(x: torch.Tensor) -> torch.Tensor:
            return torch.clamp(x, 0.0, 1.0)

        with pytest.raises(RemoteTypeError, match=r"tp.*aten\.clamp\.default|aten\.clamp\.default.*tp"):
            clamp.send(tab)
        # the tab goes on; the stored plan comes back with .get()
        back = ptr_plan.get()
        assert [op for op, _, _ in back.definition.nodes] == [op for op, _, _ in plan.definition.nodes]
    finally:
        gw.close()
        page.close()


def _digits() -> "tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]":
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return train_test_split(X, y, test_size=0.25, random_state=0)  # type: ignore[return-value]


def _python_workers_round(workers: list[Any], dealer: Any, data: list[Any], W: torch.Tensor, b: torch.Tensor, lr: float,
                          batch: int) -> "tuple[torch.Tensor, torch.Tensor]":
    """The same round over Python workers (PySyft style, float64): each worker trains a copy of
    the model on its data through pointers, in the tab's batch order, and shares its update
    n_k (w_k - w) among the workers, which add the shares; only the sum is revealed.
    Returns the new global model."""
    total = None
    for w, (xp, yp, n) in zip(workers, data):
        model = torch.nn.Linear(64, 10).double()
        with torch.no_grad():
            model.weight.copy_(W)
            model.bias.copy_(b)
        model.send(w)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for s in range(0, n, batch):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xp[s : s + batch]), yp[s : s + batch])
            loss.backward()
            opt.step()
        # the update is formed on the worker (weights rounded to float32, as a tab's) and shared by it
        w32 = model.weight.data.float().double()
        b32 = model.bias.data.float().double()
        upd = torch.cat([(w32 - W.send(w)).flatten(), b32 - b.send(w)]) * float(n)
        shared = upd.fix_prec().share(*workers, crypto_provider=dealer)
        total = shared if total is None else total + shared
    assert total is not None
    flat = total.get().float_prec().double() / sum(n for _, _, n in data)
    return W + flat[: W.numel()].reshape(W.shape), b + flat[W.numel() :]


def test_federated_averaging_with_secure_aggregation_over_three_tabs(gateway: CliGateway, browser: "Browser") -> None:
    Xtr, Xte, ytr, yte = _digits()
    parts = np.array_split(np.arange(len(Xtr)), 3)
    names = ["digits0", "digits1", "digits2"]
    pages = {}
    for n, idx in zip(names, parts):
        pages[n] = open_tab(browser, gateway.link(n))
        csv = "\n".join(",".join([str(int(ytr[i]))] + [repr(float(v)) for v in Xtr[i]]) for i in idx)
        pages[n].set_input_files("#file", files=[{"name": f"{n}.csv", "mimeType": "text/csv", "buffer": csv.encode()}])
        wait_js(pages[n], "window.syftTab.datasets.has('digits')")
    gw = sy.Gateway("127.0.0.1", gateway.port, token=gateway.token, timeout_s=60)
    lr, epochs, batch, rounds = 0.5, 1, 32, 4
    try:
        tabs = [w for w in gw.wait_for_workers(3) if w.id in names]
        tabs.sort(key=lambda w: w.id)
        sizes = [t.dataset_info("digits")["rows"] for t in tabs]
        assert sizes == [len(p) for p in parts]
        W, b = torch.zeros(10, 64), torch.zeros(10)
        assert epochs == 1
        batches = {t.id: t.dataset_batches("digits", batch) for t in tabs}
        plan = training_plan(torch.nn.Linear(64, 10))
        plan.build(torch.zeros(batch, 64), torch.zeros(batch, dtype=torch.long), torch.tensor(float(batch)), torch.tensor(lr),
                   [W.clone().requires_grad_(True), b.clone().requires_grad_(True)])
        py_workers = [sy.VirtualWorker(hook, id=f"py-{n}") for n in names]
        dealer = sy.VirtualWorker(hook, id="py-dealer")
        py_data = [(torch.tensor(Xtr[p]).send(w), torch.tensor(ytr[p]).send(w), len(p)) for w, p in zip(py_workers, parts)]
        Wr, br = W.double(), b.double()
        for _ in range(rounds):
            # each tab: n_k * (trained - global), summed securely; the driver never sees one tab's update
            updates = []
            for t, n in zip(tabs, sizes):
                # the training Plan runs in the tab, batch after batch, on the tab's private data
                w_new, b_new = W.send(t), b.send(t)
                bs_ptr, lr_ptr = torch.tensor(float(batch)).send(t), torch.tensor(lr).send(t)
                for xp, yp in batches[t.id]:
                    _loss, _acc, w_new, b_new = plan(xp, yp, bs_ptr, lr_ptr, [w_new, b_new])
                dw = (w_new - W.send(t)) * float(n)
                db = (b_new - b.send(t)) * float(n)
                updates.append([dw, db])
                with pytest.raises(RemoteError):
                    dw.get()  # computed from the tab's data: it does not leave in the clear
            sw, sb = gw.secure_sum(tabs, updates)
            W, b = W + sw / sum(sizes), b + sb / sum(sizes)
            # the same round over three Python workers
            Wr, br = _python_workers_round(py_workers, dealer, py_data, Wr, br, lr, batch)
            np.testing.assert_allclose(W.numpy(), Wr.numpy(), atol=5e-4)
        acc = float(((torch.tensor(Xte, dtype=torch.float32) @ W.T + b).argmax(1).numpy() == yte).mean())
        acc_ref = float(((torch.tensor(Xte) @ Wr.T + br).argmax(1).numpy() == yte).mean())
        print(f"test accuracy: tabs (training Plan) {acc:.4f}, Python workers {acc_ref:.4f}")
        assert acc > 0.85 and abs(acc - acc_ref) <= 0.02, (acc, acc_ref)
        log = pages["digits0"].inner_text("#log")
        assert "masked values" in log and "ran plan train" in log and "results stay here" in log
    finally:
        gw.close()
        for p in pages.values():
            p.close()
