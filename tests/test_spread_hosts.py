"""An MPC session among socket workers that listen on different addresses: each party and
the dealer listen on their own worker's host (the address the driver reaches it by), at a
port picked there, so a session can span machines. Loopback 127.0.0.2–4 stand in for three
machines: a party bound to the driver's address would not be where the others look for it."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest
import torch

import syft_mpc as sy
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.remote.messages import MpcPort
from syft_mpc.mpc_session import close_all_sessions

hook = sy.TorchHook(torch)
HOSTS = {"sp_bob": "127.0.0.2", "sp_alice": "127.0.0.3", "sp_carol": "127.0.0.4"}


@pytest.fixture(scope="module")
def spread() -> Iterator[dict[str, sy.SocketWorker]]:
    with contextlib.ExitStack() as stack:
        ws: dict[str, sy.SocketWorker] = {}
        for name, host in HOSTS.items():
            c = stack.enter_context(LocalWorkers([name], host=host, quiet=True))
            w = sy.SocketWorker(hook, id=name, host=host, port=c.port(name), token=c.token, known_workers={})
            stack.callback(w.close)
            ws[name] = w
        yield ws
        close_all_sessions()  # leave the session while every member is still up


@pytest.mark.parametrize("op", ["mul", "matmul"])
def test_session_parties_listen_on_their_workers_hosts(spread: dict[str, sy.SocketWorker], op: str) -> None:
    bob, alice, carol = spread["sp_bob"], spread["sp_alice"], spread["sp_carol"]
    x, y = torch.randn(6, 6), torch.randn(6, 6)
    xs = x.fix_prec().share(bob, alice, crypto_provider=carol)
    ys = y.fix_prec().share(bob, alice, crypto_provider=carol)
    got = (xs * ys if op == "mul" else xs @ ys).get().float_precision()
    want = x * y if op == "mul" else x @ y
    assert torch.allclose(got, want, atol=1e-2)
    assert xs.group.addresses is not None
    parties, dealer = xs.group.addresses
    assert [a.rsplit(":", 1)[0] for a in parties] == ["127.0.0.2", "127.0.0.3"]
    assert dealer.rsplit(":", 1)[0] == "127.0.0.4"


def test_a_host_that_is_not_the_workers_is_a_clear_error(spread: dict[str, sy.SocketWorker]) -> None:
    from syft_mpc.remote.workers import local_worker

    with pytest.raises(Exception, match=r"cannot listen on 192\.0\.2\.1 for an MPC session.*--host"):
        local_worker._send(spread["sp_bob"], MpcPort("192.0.2.1"))  # TEST-NET-1: never this machine's
