"""The ``syft-mpc`` command (also ``python -m syft_mpc``).

    syft-mpc worker --id bob --host 127.0.0.1 --port 8777 --token-file F [--tls-cert C --tls-key K] [--tls-ca A]
                    [--transport websocket] [--max-connections N] [--send-deadline S]
                    [--handshake-deadline S] [--max-handshakes N] [--max-handshakes-per-address N]
    syft-mpc gateway --port 8780 --token-file F [--tabs alice,bob] [--tls-cert C --tls-key K] [same limits]
    syft-mpc launch --workers bob,alice,carol [--tls-cert C --tls-key K --tls-ca A] script.py [script args...]

The token is read from ``--token-file`` or ``$SYFT_MPC_TOKEN``; it never appears on a
command line. See ``docs/WORKERS.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, TypeVar

from syft_mpc._native import __version__, check_token
from syft_mpc.errors import ShapeError, TransportError
from syft_mpc.net.env import ENV_TLS_CA, ENV_TOKEN

__all__ = ["main"]


def _read_token(path: "str | None") -> str:
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise SystemExit(f"syft-mpc: cannot read the token file {path}: {e.strerror}")
    else:
        token = os.environ.get(ENV_TOKEN, "")
    if not token:
        raise SystemExit(
            "syft-mpc: a token is needed: pass --token-file F or set SYFT_MPC_TOKEN "
            "(e.g. python -c 'import secrets; print(secrets.token_hex(32))' > F)"
        )
    try:
        check_token(token)  # at least 128 bits: a recorded handshake must not make it guessable
    except ShapeError as e:
        raise SystemExit(f"syft-mpc: {e}") from None
    return token


def _tls_args(args: argparse.Namespace) -> "dict[str, str | None]":
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("syft-mpc: --tls-cert and --tls-key go together (PEM certificate chain and its key)")
    ca = args.tls_ca or os.environ.get(ENV_TLS_CA)
    return {"tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_ca": ca}


T = TypeVar("T")


def _flag_type(parse: "Callable[[str], T]") -> "Callable[[str], T]":
    """An argparse ``type`` from ``parse``, whose ``ValueError`` says what is wrong with the
    text: argparse then prints ``argument --flag: <that>``."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def _number(text: str, kind: "Callable[[str], T]", what: str) -> T:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"expected {what}, got {text!r}") from None


def _memory_size(text: str) -> int:
    from syft_mpc.limits import parse_size

    return parse_size(text)


def _count(text: str) -> int:
    """A count for a connection or handshake limit (:func:`admission.check_count`)."""
    from syft_mpc.net.admission import check_count

    return check_count(_number(text, int, "a whole number"))


def _send_deadline(text: str) -> float:
    from syft_mpc.net.send_watch import check_send_deadline

    return check_send_deadline(text, "the send deadline")


def _handshake_deadline(text: str) -> float:
    from syft_mpc.net.admission import check_handshake_deadline

    return check_handshake_deadline(_number(text, float, "a number of seconds"))


def _limits(args: argparse.Namespace, who: str) -> "dict[str, Any]":
    """The admission and connection limits given on the command line (each checked by its
    flag's type), as keyword arguments with :mod:`syft_mpc.net.admission`'s defaults."""
    from syft_mpc.net import admission

    handshakes = args.max_handshakes or admission.MAX_HANDSHAKES
    per_address = args.max_handshakes_per_address or min(admission.MAX_PER_ADDRESS, handshakes)
    if per_address > handshakes:
        raise SystemExit(f"syft-mpc {who}: --max-handshakes-per-address ({per_address}) cannot exceed "
                         f"--max-handshakes ({handshakes})")
    return {
        "max_connections": args.max_connections,
        "send_deadline_s": args.send_deadline,
        "max_handshakes": handshakes,
        "max_per_address": per_address,
        "handshake_deadline_s": args.handshake_deadline or admission.HANDSHAKE_DEADLINE_S,
    }


def _worker(args: argparse.Namespace) -> int:
    token = _read_token(args.token_file)
    tls = _tls_args(args)
    limits = _limits(args, f"worker {args.id}")
    logging.basicConfig(
        level=logging.INFO if not args.quiet else logging.WARNING,
        format=f"%(asctime)s syft-mpc worker {args.id}: %(message)s",
        stream=sys.stderr,
    )
    datasets = _datasets(args.dataset)
    if args.transport == "websocket":
        return _websocket_worker(args, token, tls, datasets, limits)
    from syft_mpc import _native

    try:  # bind before importing torch: a port in use is reported at once
        addr = f"{args.host}:{args.port}"
        listener = _native.Listener(
            addr, token, args.id, timeout_s=args.timeout, tls_cert=tls["tls_cert"], tls_key=tls["tls_key"],
            max_handshakes=limits["max_handshakes"], max_handshakes_per_address=limits["max_per_address"],
            handshake_deadline_s=limits["handshake_deadline_s"],
        )
    except TransportError as e:
        print(f"syft-mpc worker {args.id}: {e}", file=sys.stderr)
        return 2
    from syft_mpc.net.server import run_worker

    def ready(address: str) -> None:
        print(f"listening on {address}", flush=True)  # the one stdout line; `launch` reads it

    try:
        run_worker(
            args.id,
            args.host,
            args.port,
            token,
            grace_s=args.grace,
            idle_timeout_s=args.idle_timeout,
            timeout_s=args.timeout,
            ready=ready,
            listener=listener,
            state_dir=args.state_dir,
            tls_cert=tls["tls_cert"],
            tls_key=tls["tls_key"],
            tls_ca=tls["tls_ca"],
            max_memory=args.max_memory,
            datasets=datasets,
            max_connections=args.max_connections,
            send_deadline_s=args.send_deadline,
        )
    except TransportError as e:  # e.g. the port is in use
        print(f"syft-mpc worker {args.id}: {e}", file=sys.stderr)
        return 2
    return 0


def _datasets(specs: "list[str] | None") -> "dict[str, object]":
    from syft_mpc.federated.builtin_data import parse_dataset_arg

    out: dict[str, object] = {}
    for spec in specs or []:
        try:
            key, ds = parse_dataset_arg(spec)
        except ValueError as e:
            raise SystemExit(f"syft-mpc worker: {e}") from None
        out[key] = ds
    return out


def _websocket_worker(
    args: argparse.Namespace, token: str, tls: "dict[str, str | None]", datasets: "dict[str, object]",
    limits: "dict[str, Any]",
) -> int:
    from syft_mpc.net.websocket_server import WebsocketServerWorker

    try:
        server = WebsocketServerWorker(
            None, args.host, args.port, id=args.id, token=token, timeout_s=args.timeout, grace_s=args.grace,
            idle_timeout_s=args.idle_timeout, state_dir=args.state_dir, tls_cert=tls["tls_cert"],
            tls_key=tls["tls_key"], tls_ca=tls["tls_ca"], max_memory=args.max_memory, **limits,
        )
    except TransportError as e:
        print(f"syft-mpc worker {args.id}: {e}", file=sys.stderr)
        return 2
    for key, ds in datasets.items():
        server.add_dataset(ds, key)
    server.install_signal_handlers()
    print(f"listening on {server.url}", flush=True)
    server.start()
    return 0


def _launch(args: argparse.Namespace) -> int:
    from syft_mpc.net.launch import launch

    names = [n.strip() for n in args.workers.split(",") if n.strip()]
    if not names:
        raise SystemExit("syft-mpc launch: --workers needs at least one name, e.g. --workers bob,alice")
    tls = _tls_args(args)
    return launch(
        names,
        [args.script, *args.args],
        host=args.host,
        grace_s=args.grace,
        tls_cert=tls["tls_cert"],
        tls_key=tls["tls_key"],
        tls_ca=tls["tls_ca"],
    )


def _gateway(args: argparse.Namespace) -> int:
    token = _read_token(args.token_file)
    tls = _tls_args(args)
    limits = _limits(args, "gateway")
    logging.basicConfig(
        level=logging.INFO if not args.quiet else logging.WARNING,
        format="%(asctime)s syft-mpc gateway: %(message)s",
        stream=sys.stderr,
    )
    from syft_mpc.net.gateway import run_gateway

    tabs = [t.strip() for t in (args.tabs or "").split(",") if t.strip()]
    try:
        run_gateway(args.host, args.port, token, tabs=tabs, tls_cert=tls["tls_cert"], tls_key=tls["tls_key"],
                    public_url=args.public_url, **limits)
    except TransportError as e:
        print(f"syft-mpc gateway: {e}", file=sys.stderr)
        return 2
    return 0


def _info(args: argparse.Namespace) -> int:
    from syft_mpc.info import report

    print(report())
    return 0


def _add_limit_args(p: argparse.ArgumentParser, who: str) -> None:
    """The connection limits of a worker or gateway (docs/SECURITY.md, "Limits and timeouts")."""
    from syft_mpc.net import admission
    from syft_mpc.net.send_watch import MAX_SEND_DEADLINE_S, SEND_DEADLINE_S

    g = p.add_argument_group("connection limits (see docs/SECURITY.md)")
    g.add_argument(
        "--max-connections", type=_flag_type(_count), default=admission.MAX_CONNECTIONS, metavar="N",
        help=f"authenticated connections {who} serves at once (each costs a few threads); one more gets a "
        f"WorkerBusy error and is closed, those connected are served as before (default {admission.MAX_CONNECTIONS})",
    )
    g.add_argument(
        "--send-deadline", type=_flag_type(_send_deadline), default=SEND_DEADLINE_S, metavar="S",
        help=f"cut off a peer that takes none of the bytes sent to it for S seconds (it stopped reading); "
        f"a slow reader that takes some within each S is never cut (default {SEND_DEADLINE_S:g}, at most "
        f"{MAX_SEND_DEADLINE_S:g})",
    )
    g.add_argument(
        "--handshake-deadline", type=_flag_type(_handshake_deadline), metavar="S",
        help=f"bound on a whole handshake however slowly its peer sends (default {admission.HANDSHAKE_DEADLINE_S:g}, "
        f"or --timeout if shorter; at most {admission.MAX_HANDSHAKE_DEADLINE_S:g})",
    )
    g.add_argument(
        "--max-handshakes", type=_flag_type(_count), metavar="N",
        help=f"unfinished handshakes at once; a new connection over it evicts the most silent "
        f"(default {admission.MAX_HANDSHAKES})",
    )
    g.add_argument(
        "--max-handshakes-per-address", type=_flag_type(_count), metavar="N",
        help=f"unfinished handshakes of one address (IPv4, IPv6 /64) at once; a new one over it evicts one of that "
        f"address's (default {admission.MAX_PER_ADDRESS}, or --max-handshakes if lower)",
    )


def _add_tls_args(p: argparse.ArgumentParser, whose: str) -> None:
    p.add_argument("--tls-cert", help=f"{whose} TLS certificate chain (PEM): connections must use TLS")
    p.add_argument("--tls-key", help=f"{whose} TLS private key (PEM)")
    p.add_argument("--tls-ca", help="CA certificate (PEM) to trust for TLS to workers (default: $SYFT_MPC_TLS_CA)")


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(prog="syft-mpc", description="syft_mpc workers in their own processes")
    p.add_argument("--version", action="version", version=f"syft-mpc {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    w = sub.add_parser("worker", help="run a worker (an object store serving drivers and other workers)")
    w.add_argument("--id", required=True, help="the worker id clients use (e.g. bob)")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    w.add_argument("--port", type=int, default=8777, help="port (0 picks a free one; default 8777)")
    w.add_argument("--token-file", help="file holding the shared token (default: $SYFT_MPC_TOKEN)")
    w.add_argument("--grace", type=float, default=60.0, help="seconds a disconnected client's objects are kept")
    w.add_argument("--idle-timeout", type=float, default=24 * 3600.0, help="close connections silent this long")
    w.add_argument("--timeout", type=float, default=30.0, help="bound on handshakes and on requests to peers")
    w.add_argument(
        "--state-dir", help="directory for this worker's checkpoints (default: a per-worker directory under the temp dir)"
    )
    w.add_argument(
        "--transport", choices=("tcp", "websocket"), default="tcp",
        help="tcp: the native framed TCP (SocketWorker); websocket: ws:// or, with --tls-cert, wss:// (WebsocketClientWorker)",
    )
    w.add_argument(
        "--max-memory",
        type=_flag_type(_memory_size),
        help="memory budget for clients' requests, e.g. 4G or 512M (default: $SYFT_MPC_MAX_MEMORY, else half the RAM); "
        "a request that would allocate past it is refused",
    )
    w.add_argument(
        "--dataset", action="append", metavar="KEY=SPEC",
        help="hold a dataset under KEY for worker.fit/evaluate, e.g. mnist=digits:train:0/3 or mnist_testing=digits:test (repeatable)",
    )
    w.add_argument("--quiet", action="store_true", help="log only warnings")
    _add_tls_args(w, "this worker's")
    _add_limit_args(w, "the worker")
    w.set_defaults(fn=_worker)

    la = sub.add_parser("launch", help="start local workers, run a script against them, stop them")
    la.add_argument("--workers", required=True, help="comma-separated worker ids, e.g. bob,alice,carol")
    la.add_argument("--host", default="127.0.0.1")
    la.add_argument("--grace", type=float, default=60.0)
    _add_tls_args(la, "every worker's")
    la.add_argument("script")
    la.add_argument("args", nargs=argparse.REMAINDER)
    la.set_defaults(fn=_launch)

    g = sub.add_parser("gateway", help="serve the browser-worker page: every tab that opens it is a worker")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8780, help="port (0 picks a free one; default 8780)")
    g.add_argument("--token-file", help="file holding the gateway token (default: $SYFT_MPC_TOKEN)")
    g.add_argument("--tabs", help="comma-separated tab ids to print links for (id and tab token in the link's #fragment)")
    g.add_argument("--public-url", help="the URL people reach the gateway at, for the printed links (default: the listening address)")
    g.add_argument("--quiet", action="store_true", help="log only warnings")
    _add_tls_args(g, "the gateway's")
    _add_limit_args(g, "the gateway")
    g.set_defaults(fn=_gateway)

    inf = sub.add_parser("info", help="versions, CPU features and the kernels chosen (paste it into a bug report)")
    inf.set_defaults(fn=_info)

    args = p.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
