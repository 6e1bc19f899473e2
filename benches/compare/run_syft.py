"""The syft_mpc side of the race, plus plaintext torch float32 (issue 7).

    python benches/compare/run_syft.py protocol   # mul, matmul, ReLU: Party/Dealer processes
    python benches/compare/run_syft.py tensor     # sigmoid, softmax, MLP, ResNet-18, BERT, transformer step: SocketWorkers
    python benches/compare/run_syft.py plaintext  # torch float32, one thread
    python benches/compare/run_syft.py probe      # the host's speed now: one-thread GEMMs

Each prints one ``RESULT {json}`` line: workload -> {"times_ms": [...], "ms": median, ...}.

* ``protocol``: a dealer and two parties, each its own process (``run_syft.py dealer|party``)
  on 127.0.0.1, with a random session token passed in the environment. Inputs are real
  fixed-point values that party 0 and party 1 secret-share before the clock starts; each
  rep starts after a barrier (an opening of one element) and ends when the result is
  revealed to both parties. Products are truncated (the fixed-point product CrypTen
  computes): by default with the dealer-assisted exact protocol (one round, fused with the
  product: ``Party.mul(x, y, divisor=2**16)``, the dealer preparing the truncation pair
  while the product runs), with ``COMPARE_TRUNCATION=local`` with SecureML local truncation
  (``Party.truncate_local``: each party shifts its own share, no round, a rare large error;
  what CrypTen does with 2 parties). The reported time of a rep is the larger of the two
  parties' times; bytes and rounds are each party's ``Party.stats()`` delta over one rep
  (the larger party).
* ``probe``: how fast this core is right now, one thread, best of 3: the ring GEMM at
  1024^3 (``sy.ring_matmul``, the kernel ``syft-mpc info`` names), torch int64 (what CrypTen's
  matmul runs on) and torch float32. On a shared host these move by 2-3x from one minute
  to the next, and the ring GEMM (AMX) and torch's int64 matmul (AVX-512) do not move
  together, so ``compare.py`` probes before and after the runs and prints the figures next
  to the table: a ratio is read with the host state it was measured in.
* ``tensor``: ``syft_mpc.net.launch.LocalWorkers`` starts bob, alice (share holders) and carol
  (crypto provider) as worker processes; this process is the driver and reaches them as
  ``SocketWorker``s. ``x.fix_prec().share(bob, alice, crypto_provider=carol)`` happens
  before the clock; each rep is the op plus ``.get().float_precision()`` of its result
  (the training step reveals its loss; the shared weights stay shared). Every ``share()``
  (data, targets, model) passes ``truncation=COMPARE_TRUNCATION`` (``dealer`` or ``local``).

``COMPARE_TRUNCATION`` (``dealer``, the default, or ``local``) is read from the environment,
which the party processes inherit; each result's ``api`` names the mode.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workloads import ENV_ONE_THREAD, LR, MLP_SIZES, WORKLOADS, emit, free_port, median, merge_party_results, run_processes  # noqa: E402

os.environ.update(ENV_ONE_THREAD)
TOKEN_ENV = "SYFT_MPC_COMPARE_TOKEN"
FRAC = 16
TRUNCATION = os.environ.get("COMPARE_TRUNCATION", "dealer")
if TRUNCATION not in ("dealer", "local"):
    raise SystemExit(f"COMPARE_TRUNCATION must be 'dealer' or 'local', not {TRUNCATION!r}")
TRUNC_API = {"dealer": "dealer truncation (exact, 1 round)", "local": "local truncation (SecureML, 0 rounds)"}[TRUNCATION]


def _torch() -> Any:
    import torch

    torch.set_num_threads(1)
    return torch


# ---------------------------------------------------------------- protocol layer


def _protocol_ops(p: Any, rng: Any) -> dict[str, tuple[Callable[[], Any], int]]:
    """workload -> (one rep: op + reveal, reps); inputs are shared here, before any clock."""
    import numpy as np

    import syft_mpc as sy

    def inp(owner: int, shape: tuple[int, ...], scale: float = 1.0) -> Any:
        x = sy.encode(rng.normal(0.0, scale, shape)) if p.id == owner else None
        return p.input(owner, x, shape=shape)

    def truncated(product: Callable[..., Any], *args: Any) -> Any:
        """The fixed-point product: truncated locally after it, or fused with it (dealer)."""
        if TRUNCATION == "local":
            return p.truncate_local(product(*args), FRAC)
        return product(*args, divisor=1 << FRAC)

    out: dict[str, tuple[Callable[[], Any], int]] = {}
    w = WORKLOADS["mul_1e6"]
    mx, my = inp(0, (w["n"],)), inp(1, (w["n"],))
    out["mul_1e6"] = ((lambda mx=mx, my=my: p.open(truncated(p.mul, mx, my))), w["reps"])
    for name in ("matmul_256", "matmul_1024"):
        m = WORKLOADS[name]["m"]
        a, b = inp(0, (m, m)), inp(1, (m, m))
        out[name] = ((lambda a=a, b=b: p.open(truncated(p.matmul, a, b))), WORKLOADS[name]["reps"])
    w = WORKLOADS["relu_1e6"]
    rx = inp(0, (w["n"],))
    out["relu_1e6"] = ((lambda rx=rx: p.open(p.relu(rx))), w["reps"])
    del np
    return out


def _party_main(pid: int, addrs: list[str], dealer_addr: str, session: str, timeout_s: float, only: set[str]) -> int:
    import numpy as np

    import syft_mpc as sy

    token = os.environ[TOKEN_ENV]
    barrier = np.zeros(1, np.uint64)
    results: dict[str, Any] = {}
    with sy.Party.connect(pid, addrs, dealer_addr, token, session=session, timeout_s=timeout_s) as p:
        ops = _protocol_ops(p, np.random.default_rng(pid))
        for name, (fn, reps) in ops.items():
            if only and name not in only:
                continue
            p.open(barrier)
            if WORKLOADS[name].get("warmup", True):
                fn()  # warm-up (also the first use of each buffer size)
            times = []
            for _ in range(reps):
                p.open(barrier)
                before = p.stats()
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
                after = p.stats()
            results[name] = {"times_ms": times, "stats": {k: after[k] - before[k] for k in after}}
    emit("PARTY", {"id": pid, "results": results})
    return 0


def _dealer_main(n: int, dealer_addr: str, session: str, timeout_s: float) -> int:
    import syft_mpc as sy

    d = sy.Dealer.connect(n, dealer_addr, os.environ[TOKEN_ENV], session=session, timeout_s=timeout_s, idle_timeout_s=timeout_s)
    d.serve()
    d.close()
    return 0


def run_protocol(timeout_s: float, only: set[str]) -> dict[str, Any]:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    dealer_addr = f"127.0.0.1:{free_port()}"
    session = "compare-" + secrets.token_hex(4)
    env = dict(os.environ, **{TOKEN_ENV: secrets.token_hex(32)})
    me = [sys.executable, str(Path(__file__).resolve())]
    argv = [me + ["dealer", "2", dealer_addr, session, str(timeout_s)]]
    argv += [me + ["party", str(i), dealer_addr, session, str(timeout_s), ",".join(only), *addrs] for i in range(2)]
    outs = run_processes(argv, [env] * len(argv), timeout_s, "syft_mpc protocol run")
    return merge_party_results(outs, 2, "bytes_sent", f"syft_mpc._native Party/Dealer, one process each; {TRUNC_API}")


# ---------------------------------------------------------------- tensor layer


def _time(fn: Callable[[], Any], reps: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def _mlp(torch: Any) -> Any:
    nn = torch.nn
    a, b, c, d = MLP_SIZES
    return nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, d))


def _model_workload(torch: Any, name: str, share: Callable[[Any], Any], bob: Any, alice: Any, carol: Any) -> tuple[Callable[[], Any], Any]:
    """One rep of a real-model workload (models.py) and a shared tensor of its group (for the counters)."""
    import torch.nn.functional as F

    from models import BUILD, inputs

    model = BUILD[name]()
    args = inputs(name)
    train = name.endswith("train_step")
    if train:
        model.train()
    model.fix_precision().share(bob, alice, crypto_provider=carol, requires_grad=train, truncation=TRUNCATION)
    if name == "bert_inference":  # public token ids into the shared embedding tables
        ids = args[0]

        def infer_bert(model: Any = model, ids: Any = ids) -> Any:
            with torch.no_grad():
                return model(input_ids=ids).logits.get().float_precision()

        return infer_bert, share(torch.zeros(1))
    xs = share(args[0])
    if not train:

        def infer(model: Any = model, xs: Any = xs) -> Any:
            with torch.no_grad():
                return model(xs).get().float_precision()

        return infer, xs
    ys = share(F.one_hot(args[1], 10).float())
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step(model: Any = model, xs: Any = xs, ys: Any = ys, opt: Any = opt) -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(model(xs), ys)
        loss.backward()
        opt.step()
        return loss.get().float_precision()

    return step, xs


def run_tensor(timeout_s: float, only: set[str]) -> dict[str, Any]:
    torch = _torch()
    import torch.nn.functional as F

    import syft_mpc as sy
    from syft_mpc.net.launch import LocalWorkers

    want = [n for n, w in WORKLOADS.items() if w["layer"] == "tensor" and (not only or n in only)]
    g = torch.Generator().manual_seed(0)
    results: dict[str, Any] = {}
    with LocalWorkers(["bob", "alice", "carol"], quiet=True, start_timeout_s=min(timeout_s, 120.0)) as cluster:
        os.environ.update(cluster.env)
        hook = sy.TorchHook(torch)
        bob, alice, carol = sy.workers_from_env(hook, timeout_s=timeout_s)

        def share(t: Any) -> Any:
            return t.fix_prec().share(bob, alice, crypto_provider=carol, truncation=TRUNCATION)

        for name in want:
            w = WORKLOADS[name]
            if name == "sigmoid_1e5":
                xs = share(torch.randn(w["n"], generator=g) * 3)
                fn: Callable[[], Any] = lambda xs=xs: torch.sigmoid(xs).get().float_precision()
            elif name == "softmax_1000x100":
                xs = share(torch.randn(*w["shape"], generator=g) * 3)
                fn = lambda xs=xs: torch.softmax(xs, dim=1).get().float_precision()
            elif w.get("model"):
                fn, xs = _model_workload(torch, name, share, bob, alice, carol)
            else:
                torch.manual_seed(0)
                model = _mlp(torch)
                x = torch.rand(w["batch"], MLP_SIZES[0], generator=g)
                y = torch.randint(0, MLP_SIZES[-1], (w["batch"],), generator=g)
                train = name.startswith("mlp_train")
                model.fix_precision().share(bob, alice, crypto_provider=carol, requires_grad=train, truncation=TRUNCATION)
                xs = share(x)
                if train:
                    ys = share(F.one_hot(y, MLP_SIZES[-1]).float())
                    opt = torch.optim.SGD(model.parameters(), lr=LR).fix_precision()

                    def fn(model: Any = model, xs: Any = xs, ys: Any = ys, opt: Any = opt) -> Any:
                        opt.zero_grad()
                        loss = F.cross_entropy(model(xs), ys)
                        loss.backward()
                        opt.step()
                        return loss.get().float_precision()
                else:
                    fn = lambda model=model, xs=xs: model(xs).get().float_precision()
            times = _time(fn, w["reps"])
            # Traffic of one more rep: the share holders' counters before and after it.
            group = xs.group
            before = group.stats()
            fn()
            after = group.stats()
            per = [{k: after[wid][k] - before.get(wid, {}).get(k, 0) for k in after[wid]} for wid in after]
            results[name] = {
                "times_ms": times,
                "ms": median(times),
                "bytes_per_party": max(p["bytes_sent"] for p in per),
                "rounds": max(p["rounds"] for p in per),
                "party_stats": per,
                "api": f"fix_prec().share(truncation={TRUNCATION!r}) on SocketWorkers (LocalWorkers processes); {TRUNC_API}",
            }
        for wk in (bob, alice, carol):
            close = getattr(wk, "close", None)
            if close is not None:
                close()
    return results


# ---------------------------------------------------------------- plaintext


def run_plaintext() -> dict[str, Any]:
    torch = _torch()
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    res: dict[str, Any] = {}

    def rec(name: str, fn: Callable[[], Any], reps: int = 20) -> None:
        times = _time(fn, reps)
        res[name] = {"times_ms": times, "ms": median(times)}

    n = WORKLOADS["mul_1e6"]["n"]
    a, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    rec("mul_1e6", lambda: a * b)
    for name in ("matmul_256", "matmul_1024"):
        m = WORKLOADS[name]["m"]
        x, y = torch.randn(m, m, generator=g), torch.randn(m, m, generator=g)
        rec(name, lambda x=x, y=y: x @ y, 5 if m > 256 else 20)
    rec("relu_1e6", lambda: torch.relu(a))
    s = torch.randn(WORKLOADS["sigmoid_1e5"]["n"], generator=g)
    rec("sigmoid_1e5", lambda: torch.sigmoid(s))
    sm = torch.randn(*WORKLOADS["softmax_1000x100"]["shape"], generator=g)
    rec("softmax_1000x100", lambda: torch.softmax(sm, dim=1))
    torch.manual_seed(0)
    model = _mlp(torch)
    x = torch.rand(64, MLP_SIZES[0], generator=g)
    y = torch.randint(0, MLP_SIZES[-1], (64,), generator=g)

    def infer() -> Any:
        with torch.no_grad():
            return model(x)

    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step() -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    rec("mlp_inference_b64", infer)
    rec("mlp_train_step_b64", step)
    from models import BUILD, inputs

    for name, build in BUILD.items():
        m, args = build(), inputs(name)
        if name.endswith("train_step"):
            mopt = torch.optim.SGD(m.parameters(), lr=LR)

            def mstep(m: Any = m, args: Any = args, mopt: Any = mopt) -> Any:
                mopt.zero_grad()
                loss = F.cross_entropy(m(args[0]), args[1])
                loss.backward()
                mopt.step()
                return loss.item()

            rec(name, mstep)
        else:
            def minfer(m: Any = m, args: Any = args, name: str = name) -> Any:
                with torch.no_grad():
                    return m(input_ids=args[0]).logits if name == "bert_inference" else m(args[0])

            rec(name, minfer)
    return res


def run_probe(n: int = 1024, reps: int = 3) -> dict[str, Any]:
    """One-thread GMAC/s of the ring GEMM, torch int64 and torch float32 at ``n``^3, best of ``reps``."""
    import numpy as np

    import syft_mpc as sy
    from syft_mpc import _native

    torch = _torch()
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 2**64, (n, n), dtype=np.uint64, endpoint=False) for _ in range(2))
    ai, bi = torch.from_numpy(a.view(np.int64)), torch.from_numpy(b.view(np.int64))
    af, bf = torch.randn(n, n), torch.randn(n, n)
    ops: dict[str, Callable[[], Any]] = {
        "ring_gemm": lambda: sy.ring_matmul(a, b, threads=1),
        "torch_int64": lambda: ai @ bi,
        "torch_f32": lambda: af @ bf,
    }
    best = {k: float("inf") for k in ops}
    for _ in range(reps):  # alternating, so that every figure sees the same host states
        for k, f in ops.items():
            t = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t)
    out: dict[str, Any] = {f"{k}_gmacs": n**3 / v / 1e9 for k, v in best.items()}
    out.update(n=n, kernel=_native.gemm_kernel_info()["chosen"], at=time.strftime("%H:%M:%S UTC", time.gmtime()))
    return out


def main() -> int:
    role = sys.argv[1]
    if role == "dealer":
        return _dealer_main(int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]))
    if role == "party":
        only = set(filter(None, sys.argv[6].split(",")))
        return _party_main(int(sys.argv[2]), sys.argv[7:], sys.argv[3], sys.argv[4], float(sys.argv[5]), only)
    timeout_s = float(os.environ.get("COMPARE_TIMEOUT_S", "900"))
    only = set(filter(None, os.environ.get("COMPARE_ONLY", "").split(",")))
    if role == "protocol":
        emit("RESULT", run_protocol(timeout_s, only))
    elif role == "tensor":
        emit("RESULT", run_tensor(timeout_s, only))
    elif role == "plaintext":
        emit("RESULT", run_plaintext())
    elif role == "probe":
        emit("RESULT", run_probe())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
