"""Shared helpers: parties are closures run on threads (in-memory) or over TCP on loopback."""

from __future__ import annotations

import socket
import sys
from typing import Any, Callable, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import syft_mpc as sy

T = TypeVar("T")

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("default")

U64 = np.uint64
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_parties(n: int, fn: Callable[[sy.Party], T], timeout_s: float = 20.0) -> list[T]:
    """Runs fn on each of n parties (threads, in-memory channels, with a dealer)."""
    return sy.mpc.run(fn, n_parties=n, timeout_s=timeout_s, deadline_s=120.0)


def rand_u64(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64, endpoint=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(params=[2, 3], ids=["2-parties", "3-parties"])
def n_parties(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="module", autouse=True)
def _close_mpc_sessions():  # type: ignore[no-untyped-def]
    """MPC sessions (parties' sockets, dealer threads) end with the module that opened them."""
    yield
    if "syft_mpc.mpc_session" in sys.modules:
        sys.modules["syft_mpc.mpc_session"].close_all_sessions()


def mpc_workers(hook: Any, prefix: str, n: int) -> "tuple[list[Any], Any]":
    """`n` share-holder VirtualWorkers and a crypto provider, with ids unique to `prefix`."""
    return [sy.VirtualWorker(hook, id=f"{prefix}-p{i}") for i in range(n)], sy.VirtualWorker(hook, id=f"{prefix}-james")


class SharingGroups:
    """Share holders and a crypto provider for each party count, made on first use (one set
    per test module, ids unique to ``prefix``)."""

    def __init__(self, hook: Any, prefix: str) -> None:
        self.hook, self.prefix = hook, prefix
        self._groups: dict[int, tuple[list[Any], Any]] = {}

    def workers(self, n: int) -> "tuple[list[Any], Any]":
        if n not in self._groups:
            self._groups[n] = mpc_workers(self.hook, f"{self.prefix}{n}", n)
        return self._groups[n]

    def enc(self, n: int, t: Any, requires_grad: bool = False) -> Any:
        """``t`` in fixed precision, shared among ``n`` holders."""
        ps, james = self.workers(n)
        return t.fix_prec().share(*ps, crypto_provider=james, requires_grad=requires_grad)


def plain(t: Any) -> Any:
    """A result as plain values (a public one stays as it is)."""
    return t.decrypt() if isinstance(t, sy.SharedTensor) else t
