"""Local worker processes: ``syft-mpc launch --workers bob,alice script.py`` and :class:`LocalWorkers`.

:class:`LocalWorkers` starts ``python -m syft_mpc worker --port 0`` once per name with a
fresh random token (passed in the environment, never on a command line), waits for each
``listening on host:port`` line, and stops them all on exit (SIGTERM, then SIGKILL after
a few seconds), also when the body raises. :func:`launch` runs a script between the two
with ``SYFT_MPC_WORKERS=bob=127.0.0.1:port,...`` and ``SYFT_MPC_TOKEN`` set, and returns
the script's exit code.

    >>> from syft_mpc.net.launch import LocalWorkers               # doctest: +SKIP
    >>> with LocalWorkers(["bob", "alice"]) as cluster:        # doctest: +SKIP
    ...     print(cluster.env["SYFT_MPC_WORKERS"])
    bob=127.0.0.1:40113,alice=127.0.0.1:35061
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any, Iterable, Iterator

from syft_mpc.net.env import ENV_TLS_CA, ENV_TOKEN, ENV_WORKERS

__all__ = ["LocalWorkers", "launch", "release_socket_workers"]


class LocalWorkers:
    """Worker processes on this machine, on free ports, with a fresh token.

    Attributes after ``__enter__``: ``addresses`` (name -> "host:port"), ``token``,
    ``procs`` (name -> Popen) and ``env`` (the variables a driver needs).

    With ``tls_cert``/``tls_key`` (PEM files; the certificate must name ``host``) every
    worker accepts only TLS; ``tls_ca`` (the CA that signed it) lets workers reach each
    other, and their MPC sessions, over TLS too, and goes to drivers as ``$SYFT_MPC_TLS_CA``.
    """

    def __init__(
        self,
        names: "list[str]",
        *,
        host: str = "127.0.0.1",
        grace_s: float = 60.0,
        start_timeout_s: float = 60.0,
        extra_args: "list[str] | None" = None,
        worker_args: "dict[str, list[str]] | None" = None,
        quiet: bool = False,
        tls_cert: "str | None" = None,
        tls_key: "str | None" = None,
        tls_ca: "str | None" = None,
    ) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must be distinct, got {names}")
        self.names = list(names)
        self.host = host
        self.grace_s = grace_s
        self.start_timeout_s = start_timeout_s
        self.extra_args = list(extra_args or [])
        self.worker_args = {k: list(v) for k, v in (worker_args or {}).items()}  # per worker, e.g. its --dataset
        self.quiet = quiet
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("tls_cert and tls_key go together: pass both (PEM files) or neither")
        self.tls = [os.path.abspath(p) if p else None for p in (tls_cert, tls_key, tls_ca)]
        self.token = secrets.token_hex(32)
        self.addresses: dict[str, str] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        spec = ",".join(f"{n}={a}" for n, a in self.addresses.items())
        env = {ENV_WORKERS: spec, ENV_TOKEN: self.token}
        if self.tls[2]:
            env[ENV_TLS_CA] = self.tls[2]
        return env

    def port(self, name: str) -> int:
        return int(self.addresses[name].rpartition(":")[2])

    def __enter__(self) -> "LocalWorkers":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, t: "type[BaseException] | None", v: "BaseException | None", tb: "TracebackType | None") -> None:
        self.stop()

    def start(self) -> None:
        env = dict(os.environ)
        env[ENV_TOKEN] = self.token
        for name in self.names:
            cmd = [sys.executable, "-m", "syft_mpc", "worker", "--id", name, "--host", self.host, "--port", "0"]
            cmd += ["--grace", str(self.grace_s), *self.extra_args, *self.worker_args.get(name, [])]
            for flag, path in zip(("--tls-cert", "--tls-key", "--tls-ca"), self.tls):
                if path:
                    cmd += [flag, path]
            if self.quiet:
                cmd.append("--quiet")
            self.procs[name] = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        for name, proc in self.procs.items():
            self.addresses[name] = _wait_ready(name, proc, self.start_timeout_s)

    @contextlib.contextmanager
    def socket_workers(self, hook: Any, **kwargs: Any) -> Iterator[tuple[Any, ...]]:
        """A ``SocketWorker`` per worker, in ``names`` order (``kwargs`` go to each), released
        on exit by :func:`release_socket_workers`."""
        from syft_mpc.net.socket_worker import SocketWorker

        ws = tuple(SocketWorker(hook, id=n, host=self.host, port=self.port(n), token=self.token, **kwargs) for n in self.names)
        try:
            yield ws
        finally:
            release_socket_workers(ws)

    def kill(self, name: str) -> None:
        """SIGKILLs one worker (for failure tests)."""
        proc = self.procs[name]
        proc.kill()
        proc.wait(10)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM every worker, then SIGKILL those still running after ``timeout_s``."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


def release_socket_workers(workers: "Iterable[Any]") -> None:
    """Before the workers stop: closes the MPC sessions, lets the driver's queued deletions
    reach the workers while they still run, and closes the connections, leaving no deletion
    queued for a worker about to stop."""
    import gc

    from syft_mpc.mpc_session.driver import close_all_sessions
    from syft_mpc.remote.workers import local_worker

    close_all_sessions()
    gc.collect()
    try:
        local_worker.flush_gc()
    finally:
        for w in workers:
            local_worker._take_deletes(w)
            w.close()


def _wait_ready(name: str, proc: "subprocess.Popen[bytes]", timeout_s: float) -> str:
    """Reads the worker's ``listening on host:port`` line (bounded wait)."""
    box: dict[str, Any] = {}

    def read() -> None:
        assert proc.stdout is not None
        box["line"] = proc.stdout.readline().decode("utf-8", "replace").strip()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout_s)
    line: "str | None" = box.get("line")
    if line is None:
        raise TimeoutError(f"worker {name} did not start listening within {timeout_s:.0f} s")
    if not line.startswith("listening on "):
        code = proc.wait(10)
        raise RuntimeError(f"worker {name} failed to start (exit code {code}); its error is on stderr above")
    return line[len("listening on ") :]


def launch(
    names: "list[str]",
    argv: "list[str]",
    *,
    host: str = "127.0.0.1",
    grace_s: float = 60.0,
    tls_cert: "str | None" = None,
    tls_key: "str | None" = None,
    tls_ca: "str | None" = None,
) -> int:
    """Starts the workers, runs ``python argv...`` with their addresses and token in the
    environment, stops the workers, and returns the script's exit code. ``tls_cert``,
    ``tls_key``, ``tls_ca`` go to :class:`LocalWorkers`."""
    with LocalWorkers(names, host=host, grace_s=grace_s, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca) as cluster:
        env = dict(os.environ)
        env.update(cluster.env)
        print(f"syft-mpc launch: workers {env[ENV_WORKERS]}", file=sys.stderr, flush=True)
        proc = subprocess.Popen([sys.executable, *argv], env=env)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                return proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()
