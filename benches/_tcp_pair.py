"""Two parties and a dealer connected over TCP on 127.0.0.1, for benchmarks.

Party 0 runs in the calling thread; party 1 and the dealer run on worker
threads. `pair.run(op)` runs `op(party)` on both parties at once and returns
party 0's result, so pytest-benchmark can time one protocol call end to end.
"""

from __future__ import annotations

import queue
import secrets
import socket
import threading
from typing import Any, Callable

import syft_mpc as sy


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpPair:
    def __init__(self, timeout_s: float = 60.0) -> None:
        addrs = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
        dealer_addr = f"127.0.0.1:{_free_port()}"
        token, session = secrets.token_hex(32), "bench-" + secrets.token_hex(4)
        self._jobs: queue.Queue[Callable[[sy.Party], Any] | None] = queue.Queue()
        self._done: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue()
        ready: queue.Queue[BaseException | None] = queue.Queue()

        def dealer_main() -> None:
            try:
                d = sy.Dealer.connect(2, dealer_addr, token, session=session, timeout_s=timeout_s)
                d.serve()
                d.close()
            except BaseException:  # noqa: BLE001 - the parties report the failure
                pass

        def peer_main() -> None:
            try:
                p = sy.Party.connect(1, addrs, dealer_addr, token, session=session, timeout_s=timeout_s)
            except BaseException as e:  # noqa: BLE001
                ready.put(e)
                return
            ready.put(None)
            with p:
                while (job := self._jobs.get()) is not None:
                    try:
                        self._done.put((job(p), None))
                    except BaseException as e:  # noqa: BLE001
                        self._done.put((None, e))
                        raise

        self._threads = [threading.Thread(target=dealer_main, daemon=True), threading.Thread(target=peer_main, daemon=True)]
        for t in self._threads:
            t.start()
        self.party = sy.Party.connect(0, addrs, dealer_addr, token, session=session, timeout_s=timeout_s)
        err = ready.get(timeout=timeout_s)
        if err is not None:
            raise err

    def run(self, op: Callable[[sy.Party], Any]) -> Any:
        """Runs op on both parties; returns party 0's result."""
        return self.run_both(op)[0]

    def run_both(self, op: Callable[[sy.Party], Any]) -> tuple[Any, Any]:
        """Runs op on both parties; returns (party 0's result, party 1's result)."""
        self._jobs.put(op)
        mine = op(self.party)
        theirs, err = self._done.get(timeout=300)
        if err is not None:
            raise err
        return mine, theirs

    def close(self) -> None:
        self._jobs.put(None)
        self.party.close()
        for t in self._threads:
            t.join(30)
