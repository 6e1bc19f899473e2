"""Running n-party computations.

Two parties are two closures: write what one party does as a function of its
:class:`~syft_mpc.Party`, and :func:`run` runs it for every party at once (each
on its own thread, over in-memory channels, with a dealer serving correlated
randomness), closes the session and returns every party's result::

    >>> import numpy as np, syft_mpc as sy
    >>> x = np.array([[1.5, -2.0], [0.25, 4.0]])
    >>> def square(p):
    ...     xs = p.input(0, sy.encode(x) if p.id == 0 else None, shape=x.shape)
    ...     y = p.truncate(p.matmul(xs, xs), 1 << 16)
    ...     return sy.decode(p.open(y))
    >>> out = sy.mpc.run(square, n_parties=2)
    >>> bool(np.allclose(out[0], x @ x, atol=1e-3))
    True

Across processes or machines, every party calls
``Party.connect(...)`` and the dealer ``Dealer.connect(...)`` instead; the
protocol code is the same. Under ``torchrun`` (or any launcher setting ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), :func:`from_torchrun` finds the
other ranks through torch's TCPStore rendezvous and returns the connected
``Party`` (ranks ``0..WORLD_SIZE-2``) or ``Dealer`` (the last rank).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional, Sequence, TypeVar

from syft_mpc._native import Dealer, Party, memory_session
from syft_mpc.errors import TransportError

T = TypeVar("T")

from syft_mpc.net.rendezvous import from_torchrun  # noqa: E402  (no torch import until called)

__all__ = ["run", "run_session", "from_torchrun"]


def run(
    fn: Callable[[Party], T],
    n_parties: int = 2,
    *,
    timeout_s: float = 60.0,
    deadline_s: Optional[float] = None,
) -> list[T]:
    """Runs ``fn(party)`` for each of ``n_parties`` parties concurrently; returns their results.

    ``timeout_s`` bounds every wait of a party for a peer or the dealer;
    ``deadline_s`` (default: unbounded) bounds the whole computation. If any
    party raises, the others are aborted and the first root-cause exception is
    re-raised (an error of a party outranks the ``PeerDisconnected`` errors it
    causes in its peers).
    """
    parties, dealer = memory_session(n_parties, timeout_s)
    return run_session([fn] * n_parties, parties, dealer, deadline_s=deadline_s)


def run_session(
    fns: Sequence[Callable[[Party], T]],
    parties: Sequence[Party],
    dealer: Optional[Dealer] = None,
    *,
    deadline_s: Optional[float] = None,
) -> list[T]:
    """Runs ``fns[i](parties[i])`` on one thread per party (and ``dealer.serve()`` on
    another), closes every party and returns the results in party order."""
    if len(fns) != len(parties):
        raise ValueError(f"{len(fns)} functions for {len(parties)} parties")
    results: list[Optional[T]] = [None] * len(parties)
    errors: list[Optional[BaseException]] = [None] * len(parties)
    dealer_error: list[BaseException] = []

    def party_main(i: int) -> None:
        p = parties[i]
        try:
            results[i] = fns[i](p)
            p.close()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors[i] = e
            p.abort()  # peers waiting on us fail now instead of at their timeout

    def dealer_main() -> None:
        assert dealer is not None
        try:
            dealer.serve()
        except BaseException as e:  # noqa: BLE001
            dealer_error.append(e)

    threads = [threading.Thread(target=party_main, args=(i,), name=f"party-{i}", daemon=True) for i in range(len(parties))]
    if dealer is not None:
        threads.append(threading.Thread(target=dealer_main, name="dealer", daemon=True))
    for t in threads:
        t.start()
    end = None if deadline_s is None else time.monotonic() + deadline_s
    for t in threads:
        t.join(None if end is None else max(0.0, end - time.monotonic()))
        if t.is_alive():
            for p in parties:
                p.abort()
            if dealer is not None:
                dealer.close()
            raise TimeoutError(f"the computation did not finish within {deadline_s} s ({t.name} still running)")
    if dealer is not None:
        dealer.close()

    failed = [e for e in errors if e is not None]
    if failed:
        root = [e for e in failed if not isinstance(e, TransportError)]
        raise (root or failed)[0]
    if dealer_error:
        raise dealer_error[0]
    return results  # type: ignore[return-value]  # every slot was filled
