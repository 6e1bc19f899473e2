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
    return out


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
    port = free_port()
    base = dict(os.environ, WORLD_SIZE=str(WORLD), RENDEZVOUS=f"tcp://127.0.0.1:{port}", DISTRIBUTED_BACKEND="gloo",
                GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    me = [sys.executable, str(Path(__file__).resolve())]
    argvs, envs = [], []
    for rank in range(WORLD + 1):
        argvs.append(me + (["ttp"] if rank == WORLD else ["rank", str(rank), ",".join(only)]))
        envs.append(dict(base, RANK=str(rank)))
    outs = run_processes(argvs, envs, timeout_s, "CrypTen run")
    return merge_party_results(outs, WORLD, "bytes", "crypten 0.4.1, TTP provider, world size 2 + TTP process")


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
