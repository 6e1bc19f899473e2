"""Every notebook in docs/tutorials runs top to bottom (nbclient, a fresh kernel each).

The notebooks are PySyft 0.2.9's tutorials with only the import and the data set changed
(docs/TUTORIAL_POINTERS.md lists the differences). Each one runs here as a user would run it,
on ``VirtualWorker``s; the federated ones run a second time over socket workers: worker
processes started by :class:`syft_mpc.net.launch.LocalWorkers`, one per worker name the
notebook uses, reached through ``$SYFT_MPC_WORKERS``. For that run the kernel first executes
:data:`SOCKET_PROLOGUE` (not stored in the notebook), which makes ``sy.VirtualWorker(hook,
id=name)`` return the connected ``SocketWorker`` of that name; ``sy.create_sandbox`` connects to
the workers in ``$SYFT_MPC_WORKERS`` by itself.

The kernel is this interpreter (``sys.executable``) with the package of this checkout first on
``PYTHONPATH``; the first cell it runs checks both. Like PySyft's own notebook tests, the run
lowers the parameters PySyft's notebooks keep in their first cell (``epochs``,
``n_test_batches``), so the whole set takes a few minutes on two cores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import ipykernel  # noqa: F401  (the kernel the notebooks run in; a dev dependency)
import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
PACKAGE_DIR = ROOT / "python"
# PySyft's WebSocket examples keep their folder (each has its own run_websocket_client.py).
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb")) + sorted(TUTORIALS.glob("websockets-example-*/*.ipynb"))

# The parameters PySyft's notebooks declare in their first cell, lowered for the test run.
PARAMETERS = {"epochs": 1, "n_test_batches": 2}

# The WebSocket tutorials take their parameters from argparse (the run_websocket_client.py next to
# each, which the kernel imports from the notebook's folder): the test run passes fewer rounds.
ARGPARSE_CALL = "define_and_get_arguments(args=[])"
ARGPARSE_LOWERED = {
    "websockets-example-MNIST-parallel": '["--training_rounds", "2", "--federate_after_n_batches", "5"]',
    "websockets-example-MNIST": '["--epochs", "1", "--federate_after_n_batches", "4"]',
}
WEBSOCKET_PORTS = (8777, 8778, 8779, 8780)  # the WebSocket tutorials' workers (PySyft's ports)

# Federated notebooks and the workers each one creates (their socket run starts these).
SOCKET_WORKERS = {
    "Part 02": ["bob", "alice"],
    "Part 04": ["bob", "alice", "secure_worker"],
    "Part 06": ["bob", "alice"],
    "Part 07": ["bob", "theo", "jason", "alice", "andy", "jon"],
    "Part 10": ["bob", "alice", "james"],
}

CHECK_KERNEL = """\
import sys, syft_mpc
assert sys.executable == {exe!r}, sys.executable
assert syft_mpc.__file__.startswith({pkg!r}), syft_mpc.__file__
"""

SOCKET_PROLOGUE = """\
import syft_mpc as _sy
_socket_workers = {w.id: w for w in _sy.workers_from_env()}

def _socket_worker(hook=None, id="me", **kwargs):
    # sy.VirtualWorker(hook, id=name): the worker process of that name
    return _socket_workers[id]

_sy.VirtualWorker = _socket_worker
"""

SOCKET_EPILOGUE = """assert isinstance(bob, _sy.SocketWorker), type(bob)  # the notebook really ran on the worker processes
"""


def _prefix(nb_path: Path) -> str:
    """"Part 11", "Part 11 bis", "Part 08 bis", ...: the name up to " - "."""
    return nb_path.stem.split(" - ")[0]


def _lower_parameters(nb: Any, folder: str = "") -> None:
    """Rewrites the notebook's parameter cell (its first code cell, when it only assigns names in
    PARAMETERS) with the lowered values."""
    first = next(c for c in nb.cells if c.cell_type == "code")
    lines = [ln for ln in first.source.splitlines() if ln.strip()]
    names = [ln.split("=")[0].strip() for ln in lines]
    if lines and all("=" in ln for ln in lines) and all(n in PARAMETERS for n in names):
        first.source = "\n".join(f"{n} = {PARAMETERS[n]!r}" for n in names)
    lowered = ARGPARSE_LOWERED.get(folder)
    for c in nb.cells:
        if lowered and c.cell_type == "code" and ARGPARSE_CALL in c.source:
            c.source = c.source.replace(ARGPARSE_CALL, f"define_and_get_arguments(args={lowered})")


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A kernelspec for this interpreter (JUPYTER_PATH) and the kernel's environment."""
    jp = tmp_path_factory.mktemp("jupyter")
    spec_dir = jp / "kernels" / "syft-mpc-tests"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "syft_mpc tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    env = dict(os.environ)
    env["JUPYTER_PATH"] = str(jp)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    env.pop("SYFT_MPC_WORKERS", None)
    return env


def _run(nb_path: Path, env: dict[str, str], workdir: Path, prologue: "str | None" = None, epilogue: "str | None" = None) -> Any:
    nb = nbformat.read(nb_path, as_version=4)
    _lower_parameters(nb, nb_path.parent.name)
    env = {**env, "PYTHONPATH": os.pathsep.join([str(nb_path.parent), env["PYTHONPATH"]])}  # its run_websocket_client.py
    head = [nbformat.v4.new_code_cell(CHECK_KERNEL.format(exe=sys.executable, pkg=str(PACKAGE_DIR)))]
    if prologue:
        head.append(nbformat.v4.new_code_cell(prologue))
    nb.cells = head + nb.cells + ([nbformat.v4.new_code_cell(epilogue)] if epilogue else [])
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = env["JUPYTER_PATH"]  # where the kernel manager looks the spec up
    try:
        client = nbclient.NotebookClient(
            nb, kernel_name="syft-mpc-tests", timeout=300, resources={"metadata": {"path": str(workdir)}}
        )
        t0 = time.perf_counter()
        client.execute(env=env)
        print(f"{nb_path.name}: {time.perf_counter() - t0:.1f} s")
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old
    return nb


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections in TIME_WAIT do not count
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _outputs(nb: Any) -> str:
    text = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if "text" in o:
                text.append(o["text"])
            elif "data" in o and "text/plain" in o["data"]:
                text.append(o["data"]["text/plain"])
    return "\n".join(text)


def test_every_ported_tutorial_is_here() -> None:
    names = {_prefix(p) for p in NOTEBOOKS}
    expected = {f"Part {n:02d}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)} | {"Part 08 bis", "Part 11 bis"}
    assert expected <= names, sorted(expected - names)
    for p in NOTEBOOKS:
        code = "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
        assert "import syft as sy" not in code and "from syft." not in code, p.name
        assert "download=True" not in code, p.name


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: _prefix(p).replace(" ", ""))
def test_notebook_on_virtual_workers(nb_path: Path, kernel_env: dict[str, str], tmp_path: Path) -> None:
    nb = _run(nb_path, kernel_env, tmp_path)
    assert "Error" not in "".join(o.get("ename", "") for c in nb.cells for o in c.get("outputs", []))
    out = _outputs(nb)
    if "WebsocketClientWorker(" in "".join(c.source for c in nb.cells):
        # the notebook's own worker processes ran the training and are gone again
        assert "Federated model: Average loss:" in out or "Test set: Average loss:" in out
        assert "listening on ws://127.0.0.1:8779" in out
        assert all(_port_free(p) for p in WEBSOCKET_PORTS), "the notebook's WebSocket workers are still running"
    if _prefix(nb_path) == "Part 11":
        assert "Test set: Accuracy:" in out  # the encrypted evaluation ran and decrypted a count
    if _prefix(nb_path) == "Part 11 bis":
        assert "Predicted labels: tensor([" in out  # the encrypted ResNet-18 ran and its labels were decrypted
    if _prefix(nb_path) == "Part 05":
        assert "#diabetes" in out


SOCKET_NOTEBOOKS = [p for p in NOTEBOOKS if _prefix(p) in SOCKET_WORKERS]


@pytest.mark.slow
@pytest.mark.parametrize("nb_path", SOCKET_NOTEBOOKS, ids=lambda p: _prefix(p).replace(" ", ""))
def test_federated_notebook_over_socket_workers(
    nb_path: Path, kernel_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syft_mpc.net.launch import LocalWorkers

    monkeypatch.setenv("PYTHONPATH", kernel_env["PYTHONPATH"])  # the worker processes run this checkout too
    with LocalWorkers(SOCKET_WORKERS[_prefix(nb_path)], quiet=True) as cluster:
        env = {**kernel_env, **cluster.env}
        _run(nb_path, env, tmp_path, prologue=SOCKET_PROLOGUE, epilogue=SOCKET_EPILOGUE)
        for name, proc in cluster.procs.items():
            assert proc.poll() is None, f"worker {name} exited with {proc.returncode}"
