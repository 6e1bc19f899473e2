"""One party or the dealer of a benchmark session, run as its own process.

    python benches/_peer.py dealer N_PARTIES DEALER_ADDR SESSION TIMEOUT_S
    python benches/_peer.py party ID DEALER_ADDR SESSION TIMEOUT_S ADDR0 ADDR1 ...

The session token comes from the environment (``SYFT_MPC_BENCH_TOKEN``), never
the command line. Both roles print ``ready`` once connected. The dealer then
serves until the parties close. A party reads one command per line on stdin and
answers one line on stdout:

    OP ARGS          run OP on this party's random inputs      -> ok SECONDS
    pre OP ARGS      preprocess OP's dealer material (offline)  -> ok SECONDS
    inputs OP ARGS   draw the inputs only                       -> ok 0
    stats            Party.stats()                              -> stats {json}
    quit             close the party and exit

with OP one of ``mul N``, ``matmul M K N``, ``fxmatmul M K N`` (matmul, then
truncation by 2^16), ``truncate N``, ``relu N``, ``ltz N``, ``open N``. A failure
answers ``err MESSAGE`` and exits 1. Inputs are random uint64 arrays that each
process draws for itself (they are shares of nothing in particular: correctness
is covered by tests/, benchmarks only need the right shapes).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np

import syft_mpc as sy

TOKEN_ENV = "SYFT_MPC_BENCH_TOKEN"
DIVISOR = 1 << 16


# name -> (input shapes, op, offline requests), each from the integer arguments
OPS: dict[str, tuple[Callable[..., list[tuple[int, ...]]], Callable[..., Any], Callable[..., list[sy.Request]]]] = {
    "mul": (lambda n: [(n,), (n,)], lambda p, x, y: p.mul(x, y), lambda n: [sy.Request.mul(n)]),
    "matmul": (lambda m, k, n: [(m, k), (k, n)], lambda p, x, y: p.matmul(x, y), lambda m, k, n: [sy.Request.matmul(m, k, n)]),
    "fxmatmul": (
        lambda m, k, n: [(m, k), (k, n)],
        lambda p, x, y: p.truncate(p.matmul(x, y), DIVISOR),
        lambda m, k, n: [sy.Request.matmul(m, k, n), sy.Request.truncate(m * n, DIVISOR)],
    ),
    "truncate": (lambda n: [(n,)], lambda p, x: p.truncate(x, DIVISOR), lambda n: [sy.Request.truncate(n, DIVISOR)]),
    "relu": (lambda n: [(n,)], lambda p, x: p.relu(x), lambda n: [sy.Request.relu(n)]),
    "ltz": (lambda n: [(n,)], lambda p, x: p.ltz(x), lambda n: [sy.Request.ltz(n)]),
    "open": (lambda n: [(n,)], lambda p, x: p.open(x), lambda n: []),
}


class Ops:
    """Runs command lines on one party; random inputs are drawn once per shape."""

    def __init__(self, party: sy.Party) -> None:
        self.party = party
        self._rng = np.random.default_rng()
        self._inputs: dict[str, list[np.ndarray]] = {}

    def _parse(self, words: list[str]) -> tuple[str, list[int]]:
        if not words or words[0] not in OPS:
            raise ValueError(f"unknown op {' '.join(words)!r}")
        return words[0], [int(w) for w in words[1:]]

    def inputs(self, words: list[str]) -> list[np.ndarray]:
        name, dims = self._parse(words)
        key = " ".join(words)
        if key not in self._inputs:
            self._inputs[key] = [self._rng.integers(0, 2**64, s, dtype=np.uint64, endpoint=False) for s in OPS[name][0](*dims)]
        return self._inputs[key]

    def execute(self, line: str) -> str:
        """Runs one command line; returns the answer line (without newline)."""
        words = line.split()
        if words == ["stats"]:
            return "stats " + json.dumps(self.party.stats())
        if words and words[0] == "inputs":
            self.inputs(words[1:])
            return "ok 0"
        start = time.perf_counter()
        if words and words[0] == "pre":
            name, dims = self._parse(words[1:])
            self.inputs(words[1:])
            start = time.perf_counter()
            self.party.preprocess(OPS[name][2](*dims))
        else:
            name, _ = self._parse(words)
            OPS[name][1](self.party, *self.inputs(words))
        return f"ok {time.perf_counter() - start:.6f}"


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _party_main(args: list[str], token: str) -> int:
    party_id, dealer_addr, session, timeout_s, addrs = int(args[0]), args[1], args[2], float(args[3]), args[4:]
    p = sy.Party.connect(party_id, addrs, dealer_addr, token, session=session, timeout_s=timeout_s)
    _say("ready")
    ops = Ops(p)
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            if line == "quit":
                break
            try:
                _say(ops.execute(line))
            except BaseException as e:
                _say(f"err {type(e).__name__}: {e}".replace("\n", " "))
                p.abort()
                return 1
    finally:
        if not p.closed:
            p.close()
    return 0


def _dealer_main(args: list[str], token: str) -> int:
    n_parties, dealer_addr, session, timeout_s = int(args[0]), args[1], args[2], float(args[3])
    d = sy.Dealer.connect(n_parties, dealer_addr, token, session=session, timeout_s=timeout_s, idle_timeout_s=3600.0)
    _say("ready")
    served = d.serve()
    d.close()
    _say(f"done {served}")
    return 0


def main() -> int:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"{TOKEN_ENV} is not set", file=sys.stderr)
        return 2
    role, args = sys.argv[1], sys.argv[2:]
    try:
        return _dealer_main(args, token) if role == "dealer" else _party_main(args, token)
    except BaseException as e:  # noqa: BLE001 - reported on stdout, then a nonzero exit
        _say(f"err {type(e).__name__}: {e}".replace("\n", " "))
        return 1


if __name__ == "__main__":
    sys.exit(main())
