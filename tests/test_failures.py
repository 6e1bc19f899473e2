"""A peer that vanishes or stalls mid-protocol raises a TransportError naming it, within the timeout."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import syft_mpc as sy

X = np.arange(1000, dtype=np.uint64)


def run_one(fn) -> tuple[BaseException | None, float]:  # type: ignore[no-untyped-def]
    err: list[BaseException] = []
    start = time.monotonic()
    t = threading.Thread(target=lambda: _catch(fn, err))
    t.start()
    t.join(30)
    assert not t.is_alive(), "the call did not return"
    return (err[0] if err else None), time.monotonic() - start


def _catch(fn, err: list[BaseException]) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except BaseException as e:  # noqa: BLE001
        err.append(e)


def test_peer_disconnects_mid_protocol() -> None:
    parties, dealer = sy.memory_session(2, timeout_s=5.0)
    threading.Thread(target=lambda: _catch(dealer.serve, []), daemon=True).start()
    p0, p1 = parties
    p0.abort()  # party 0 vanishes: its channels are dropped
    err, elapsed = run_one(lambda: p1.mul(X, X))
    assert isinstance(err, sy.PeerDisconnected) and isinstance(err, sy.TransportError)
    assert isinstance(err, ConnectionError)
    assert "party 0" in str(err) and err.peer == "party 0"
    assert elapsed < 5.0
    p1.abort()
    dealer.close()


def test_peer_stalls_and_times_out() -> None:
    parties, dealer = sy.memory_session(3, timeout_s=0.5)
    threading.Thread(target=lambda: _catch(dealer.serve, []), daemon=True).start()
    # Parties 1 and 2 run the protocol, party 0 stays connected but never answers.
    errs: list[BaseException | None] = [None, None]
    start = time.monotonic()

    def go(i: int, p: sy.Party) -> None:
        try:
            p.open(X)
        except BaseException as e:  # noqa: BLE001
            errs[i] = e

    ts = [threading.Thread(target=go, args=(0, parties[1])), threading.Thread(target=go, args=(1, parties[2]))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    elapsed = time.monotonic() - start
    for e in errs:
        assert isinstance(e, sy.PeerTimeout) and isinstance(e, TimeoutError), e
        assert "party 0" in str(e) and e.peer == "party 0"
    assert elapsed < 5.0
    for p in parties:
        p.abort()
    dealer.close()


def test_dealer_vanishes() -> None:
    parties, dealer = sy.memory_session(2, timeout_s=2.0)
    dealer.close()  # the crypto provider is gone before the first request
    err, elapsed = run_one(lambda: parties[1].mul(X, X))  # the last party talks to the dealer
    assert isinstance(err, sy.TransportError) and "dealer" in str(err)
    assert elapsed < 2.5
    for p in parties:
        p.abort()


def test_set_timeout_applies() -> None:
    parties, dealer = sy.memory_session(2, timeout_s=30.0)
    parties[0].set_timeout(0.2)
    err, elapsed = run_one(lambda: parties[0].open(X))  # party 1 never answers
    assert isinstance(err, sy.PeerTimeout) and elapsed < 2.0
    with pytest.raises(sy.ShapeError):
        parties[0].set_timeout(0)
    for p in parties:
        p.abort()
    dealer.close()


def test_context_manager_aborts_on_error() -> None:
    parties, dealer = sy.memory_session(2, timeout_s=5.0)
    with pytest.raises(RuntimeError):
        with parties[0]:
            raise RuntimeError("user code failed")
    assert parties[0].closed
    err, _ = run_one(lambda: parties[1].open(X))
    assert isinstance(err, sy.PeerDisconnected)
    parties[1].abort()
    dealer.close()
