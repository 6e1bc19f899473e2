"""The CrypTen 0.4.1 side of the race (issue 7); runs in the CrypTen virtualenv (.venv-crypten).

    .venv-crypten/bin/python benches/compare/run_crypten.py launch

``launch`` starts three processes on 127.0.0.1: ranks 0 and 1 (the parties, world size 2)
and rank 2, CrypTen's trusted third party (``crypten.mpc.provider.TTPServer``), with
``crypten.cfg.mpc.provider = "TTP"`` set before ``crypten.init()`` in each (CrypTen 0.4.1
reads no environment variable for the provider). They meet through torch.distributed
(gloo, ``tcp://127.0.0.1:PORT`` rendezvous, ``GLOO_SOCKET_IFNAME=lo``). This is what
``crypten.mpc.run_multiprocess`` does, with subprocesses instead of forked
``multiprocessing`` children, so that our side pickles nothing and every wait is bounded.

Inputs are shared (``crypten.cryptensor(x, src=0/1)``, ``model.encrypt(src=0)``) before the
clock; each rep starts after ``comm.barrier()`` and ends when ``get_plain_text()`` has
revealed the result. The last timed rep runs with ``cfg.communicator.verbose = True`` for
``comm.get().get_communication_stats()`` (rounds, and bytes sent + received per party as
CrypTen counts them). Prints ``RESULT {json}``.

The real-model workloads (``models.py``: ResNet-18, BERT, a small transformer's training step)
run only where ``crypten.nn.from_pytorch`` imports the model: ``launch`` tries the import first
and reports, for each model it cannot import, ``{"error": "..."}`` (exception and message)
instead of times.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workloads import ENV_ONE_THREAD, LR, MLP_SIZES, WORKLOADS, emit, free_port, merge_party_results, run_processes  # noqa: E402

os.environ.update(ENV_ONE_THREAD)
WORLD = 2
MODELS_ENV = "COMPARE_CRYPTEN_MODELS"  # the model workloads whose import succeeded, for the ranks


def _crypten() -> Any:
    import crypten_shim  # noqa: F401  (before crypten)
    import torch

    torch.set_num_threads(1)
    import crypten

    crypten.cfg.mpc.provider = "TTP"
    return crypten


def _workloads(crypten: Any, rank: int, only: set[str]) -> dict[str, tuple[Callable[[], Any], int]]:
    import torch

    g = torch.Generator().manual_seed(rank)
    out: dict[str, tuple[Callable[[], Any], int]] = {}

    def enc(shape: tuple[int, ...], src: int, scale: float = 1.0) -> Any:
        return crypten.cryptensor(torch.randn(*shape, generator=g) * scale, src=src)

    def want(name: str) -> bool:
        return not only or name in only

    if want("mul_1e6"):
        n = WORKLOADS["mul_1e6"]["n"]
        x, y = enc((n,), 0), enc((n,), 1)
        out["mul_1e6"] = ((lambda x=x, y=y: (x * y).get_plain_text()), WORKLOADS["mul_1e6"]["reps"])
    for name in ("matmul_256", "matmul_1024"):
        if want(name):
            m = WORKLOADS[name]["m"]
            a, b = enc((m, m), 0), enc((m, m), 1)
            out[name] = ((lambda a=a, b=b: a.matmul(b).get_plain_text()), WORKLOADS[name]["reps"])
    if want("relu_1e6"):
        r = enc((WORKLOADS["relu_1e6"]["n"],), 0)
        out["relu_1e6"] = ((lambda r=r: r.relu().get_plain_text()), WORKLOADS["relu_1e6"]["reps"])
    if want("sigmoid_1e5"):
        s = enc((WORKLOADS["sigmoid_1e5"]["n"],), 0, 3.0)
        out["sigmoid_1e5"] = ((lambda s=s: s.sigmoid().get_plain_text()), WORKLOADS["sigmoid_1e5"]["reps"])
    if want("softmax_1000x100"):
        sm = enc(tuple(WORKLOADS["softmax_1000x100"]["shape"]), 0, 3.0)
        out["softmax_1000x100"] = ((lambda sm=sm: sm.softmax(1).get_plain_text()), WORKLOADS["softmax_1000x100"]["reps"])
    for name in ("mlp_inference_b64", "mlp_train_step_b64"):
        if not want(name):
            continue
        nn = crypten.nn
        a, b, c, d = MLP_SIZES
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, d))
        model.encrypt(src=0)
        batch = WORKLOADS[name]["batch"]
        x = crypten.cryptensor(torch.rand(batch, a, generator=g), src=1)
        if name == "mlp_inference_b64":
            model.eval()
            out[name] = ((lambda model=model, x=x: model(x).get_plain_text()), WORKLOADS[name]["reps"])
        else:
            model.train()
            labels = torch.randint(0, d, (batch,), generator=g)
            y = crypten.cryptensor(torch.nn.functional.one_hot(labels, d).float(), src=1)
            loss_fn = nn.CrossEntropyLoss()

            def step(model: Any = model, x: Any = x, y: Any = y, loss_fn: Any = loss_fn) -> Any:
                loss = loss_fn(model(x), y)
                model.zero_grad()
                loss.backward()
                model.update_parameters(LR)
                return loss.get_plain_text()

            out[name] = (step, WORKLOADS[name]["reps"])
    importable = set(filter(None, os.environ.get(MODELS_ENV, "").split(",")))
    for name in (n for n, w in WORKLOADS.items() if w.get("model") and n in importable and want(n)):
        out[name] = (_model_rep(crypten, name), WORKLOADS[name]["reps"])
    return out


def _import_model(crypten: Any, name: str) -> Any:
    from models import BUILD, inputs

    return crypten.nn.from_pytorch(BUILD[name](), inputs(name)[0])


def _model_rep(crypten: Any, name: str) -> Callable[[], Any]:
    """One rep of a model workload whose import succeeded: encrypted weights (rank 0), input (rank 1)."""
    import torch

    from models import inputs

    model = _import_model(crypten, name)
    model.encrypt(src=0)
    args = inputs(name)
    x = crypten.cryptensor(args[0].float(), src=1)
    if not name.endswith("train_step"):
        model.eval()
        return lambda: model(x).get_plain_text()
    model.train()
    y = crypten.cryptensor(torch.nn.functional.one_hot(args[1], 10).float(), src=1)
    loss_fn = crypten.nn.CrossEntropyLoss()

    def step() -> Any:
        loss = loss_fn(model(x), y)
        model.zero_grad()
        loss.backward()
        model.update_parameters(LR)
        return loss.get_plain_text()

    return step


def importable_models(only: set[str]) -> tuple[list[str], dict[str, Any]]:
    """Which model workloads ``crypten.nn.from_pytorch`` imports here; the others' errors."""
    crypten = _crypten()
    ok, errors = [], {}
    for name in (n for n, w in WORKLOADS.items() if w.get("model") and (not only or n in only)):
        try:
            _import_model(crypten, name)
            ok.append(name)
        except Exception as e:  # noqa: BLE001  (any failure of the import is the result to report)
            errors[name] = {"error": f"crypten.nn.from_pytorch: {type(e).__name__}: {e}".splitlines()[0][:400]}
            print(f"[crypten] {name}: {errors[name]['error']}", file=sys.stderr, flush=True)
    return ok, errors


def _rank_main(rank: int, only: set[str]) -> int:
    crypten = _crypten()
    crypten.init()
    comm = crypten.comm
    results: dict[str, Any] = {}
    for name, (fn, reps) in _workloads(crypten, rank, only).items():
        comm.get().barrier()
        if WORKLOADS[name].get("warmup", True):
            fn()
        times = []
        for i in range(reps):
            comm.get().barrier()
            last = i == reps - 1
            if last:  # count the last rep's traffic (the counters only add integers)
                crypten.cfg.communicator.verbose = True
                comm.get().reset_communication_stats()
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
            if last:
                stats = comm.get().get_communication_stats()
                crypten.cfg.communicator.verbose = False
        if rank == 0:
            print(f"[crypten] {name}: {['%.0f' % x for x in times]} ms", file=sys.stderr, flush=True)
        results[name] = {"times_ms": times, "stats": {"rounds": stats["rounds"], "bytes": stats["bytes"]}}
    crypten.uninit()
    emit("PARTY", {"id": rank, "results": results})
    return 0


def _ttp_main() -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="[ttp] %(message)s")  # its shutdown reason
    crypten = _crypten()
    crypten.mpc.provider.TTPServer()  # calls crypten.init(); returns when rank 0 says terminate
    return 0


def launch(timeout_s: float, only: set[str]) -> dict[str, Any]:
    ok, errors = importable_models(only)
    port = free_port()
    base = dict(os.environ, **{MODELS_ENV: ",".join(ok)}, WORLD_SIZE=str(WORLD), RENDEZVOUS=f"tcp://127.0.0.1:{port}", DISTRIBUTED_BACKEND="gloo",
                GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    me = [sys.executable, str(Path(__file__).resolve())]
    argvs, envs = [], []
    for rank in range(WORLD + 1):
        argvs.append(me + (["ttp"] if rank == WORLD else ["rank", str(rank), ",".join(only)]))
        envs.append(dict(base, RANK=str(rank)))
    outs = run_processes(argvs, envs, timeout_s, "CrypTen run")
    merged = merge_party_results(outs, WORLD, "bytes", "crypten 0.4.1, TTP provider, world size 2 + TTP process")
    return {**merged, **errors}


def main() -> int:
    role = sys.argv[1]
    if role == "rank":
        return _rank_main(int(sys.argv[2]), set(filter(None, sys.argv[3].split(","))))
    if role == "ttp":
        return _ttp_main()
    if role == "launch":
        timeout_s = float(os.environ.get("COMPARE_TIMEOUT_S", "900"))
        only = set(filter(None, os.environ.get("COMPARE_ONLY", "").split(",")))
        import crypten_shim  # noqa: F401
        import crypten  # noqa: F401  (fail here, with a clear message, if it cannot import)

        emit("RESULT", launch(timeout_s, only))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
