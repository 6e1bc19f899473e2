"""torchrun / TCPStore rendezvous (syft_mpc.net.rendezvous): parties as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import syft_mpc as sy

import torch.distributed as dist  # the rendezvous needs it; every Linux build of torch has it

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "tests" / "torchrun_mul_job.py"
TIMEOUT = 240


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    """Waits for every process (killing all of them on a timeout or failure); returns stdouts."""
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            outs.append(out)
            assert p.returncode == 0, f"rank exited with {p.returncode}:\n{out}\n{err}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    return outs


def _check(outs: list[str], world: int) -> None:
    text = "\n".join(outs)
    for r in range(world - 1):
        assert f"result {r} " in text, text
    assert "dealer served" in text, text


def run_ranks(env: dict[str, str], world: int) -> None:
    """Runs the job once per rank (RANK/LOCAL_RANK set over ``env``) and checks every rank's result."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(JOB)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]
    _check(_finish(procs, TIMEOUT), world)


def test_env_rendezvous_processes_secure_mul() -> None:
    """Ranks started like torchrun starts them: env vars set, the TCPStore hosted by the
    launcher (here this test, on a free port), every rank a client of it."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60))
    world = 3
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_", "LOCAL_"))}
    base.update(
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(store.port),
        TORCHELASTIC_USE_AGENT_STORE="True",
        SYFT_MPC_TOKEN=secrets.token_hex(32),
        JOB_SESSION=f"t-{secrets.token_hex(4)}",
    )
    run_ranks(base, world)
    # Only addresses went through the store; the token did not.
    keys = [f"syft_mpc/{base['JOB_SESSION']}/addr/{r}" for r in range(world)]
    values = [bytes(store.get(k)).decode() for k in keys]
    assert all(v.startswith("127.0.0.1:") for v in values)
    assert base["SYFT_MPC_TOKEN"] not in "".join(values)


def test_torchrun_standalone_secure_mul() -> None:
    """The real launcher: `torchrun --standalone --nproc-per-node 3` (2 parties + dealer)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_"))}
    env.update(SYFT_MPC_TOKEN=secrets.token_hex(32), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        # `python -m torch.distributed.run` is what the `torchrun` script runs.
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3", "--max-restarts", "0", str(JOB)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)  # torchrun and the ranks it started
            proc.wait(10)
    assert proc.returncode == 0, f"torchrun exited with {proc.returncode}:\n{out}\n{err}"
    _check([out], 3)


def test_rendezvous_times_out_naming_missing_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(sy.PeerTimeout, match=r"ranks \[1, 2\] did not publish"):
        sy.mpc.from_torchrun("0123456789abcdef" * 2, store=store, timeout_s=1.0, host="127.0.0.1", session="lonely")


def test_rendezvous_argument_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match=r"\$RANK is not set"):
        sy.mpc.from_torchrun("0123456789abcdef" * 2)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="at least 2 parties and a dealer"):
        sy.mpc.from_torchrun("0123456789abcdef" * 2)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.delenv("SYFT_MPC_TOKEN", raising=False)
    with pytest.raises(ValueError, match="no token"):
        sy.mpc.from_torchrun()
