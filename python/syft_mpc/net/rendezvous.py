"""Multi-machine MPC sessions from ``torchrun`` (or any launcher that sets the torch env vars).

Parties started by ``torchrun`` (or SLURM / mpirun / Kubernetes scripts that set ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) find each other through
torch.distributed's own ``env://`` rendezvous (a :class:`torch.distributed.TCPStore`);
nothing new is invented::

    # on every node:  SYFT_MPC_TOKEN=<secret> torchrun --nnodes 2 --nproc-per-node ... job.py
    import syft_mpc as sy
    p = sy.mpc.from_torchrun()          # a Party (ranks 0..WORLD_SIZE-2) or the Dealer (last rank)
    if isinstance(p, sy.Dealer):
        p.serve(); p.close()
    else:
        with p:
            ...                          # p.input / p.mul / p.open, as with Party.connect

Roles: ranks ``0 .. WORLD_SIZE-2`` are the MPC parties (party id = rank), the **last
rank** (``WORLD_SIZE-1``) is the dealer (crypto provider); ``WORLD_SIZE`` must be at least 3.

Each rank publishes the address it will listen on under
``syft_mpc/<session>/addr/<rank>`` in the store, waits (bounded by ``timeout_s``) until every
rank has published, then connects with :meth:`Party.connect` / :meth:`Dealer.connect`. Only
addresses go through the store: the **token** comes from ``$SYFT_MPC_TOKEN`` (or the
``token`` argument) and never touches the store; every party-to-party and party-to-dealer
connection is authenticated with it (HMAC handshake), so a store reachable by others can
at worst make the session fail, not join it.

TLS: with ``$SYFT_MPC_TLS_CERT`` and ``$SYFT_MPC_TLS_KEY`` (this node's PEM certificate and
key) and ``$SYFT_MPC_TLS_CA`` (the CA that signed every node's certificate) set on every
node, or the ``tls_*`` arguments, every connection of the session uses TLS 1.3. A node's
certificate must name the address it publishes (``$SYFT_MPC_HOST``), or one name given as
``tls_server_name`` on every node.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any, Optional, Union

from syft_mpc._native import Dealer, Party
from syft_mpc.errors import PeerTimeout
from syft_mpc.net.addresses import free_port, host_port
from syft_mpc.net.env import ENV_HOST, ENV_PORT, ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY, ENV_TOKEN

__all__ = ["from_torchrun", "KEY_PREFIX"]

KEY_PREFIX = "syft_mpc"

_stores: list[Any] = []  # the store of each session made here stays alive (rank 0 may host it)


def _env(name: str) -> str:
    v = os.environ.get(name)
    if not v:
        raise RuntimeError(
            f"${name} is not set: start this script with torchrun (or set RANK, WORLD_SIZE, "
            "MASTER_ADDR, MASTER_PORT as torch's env:// rendezvous expects)"
        )
    return v


def _env_int(name: str) -> int:
    raw = _env(name)
    try:
        return int(raw)
    except ValueError:
        raise RuntimeError(f"${name}={raw!r} is not an integer") from None


def _local_host(master_addr: str) -> str:
    """The local address other ranks can reach: loopback when the master is local, else
    the address of the interface that routes to the master (no packet is sent)."""
    try:
        infos = socket.getaddrinfo(master_addr, None, type=socket.SOCK_DGRAM)
    except OSError:
        return socket.gethostbyname(socket.gethostname())
    family, _, _, _, sockaddr = infos[0]
    ip = str(sockaddr[0])
    if ip.startswith("127.") or ip == "::1":
        return ip
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((ip, 9))
            return str(s.getsockname()[0])
        except OSError:
            return socket.gethostbyname(socket.gethostname())



def from_torchrun(
    token: Optional[str] = None,
    *,
    session: str = "syft-mpc",
    timeout_s: float = 60.0,
    host: Optional[str] = None,
    port: Optional[int] = None,
    store: Any = None,
    tls_cert: Optional[str] = None,
    tls_key: Optional[str] = None,
    tls_ca: Optional[str] = None,
    tls_server_name: Optional[str] = None,
) -> Union[Party, Dealer]:
    """Joins the MPC session of this torchrun job: returns a connected :class:`Party`
    (ranks ``0..WORLD_SIZE-2``, party id = rank) or the :class:`Dealer` (rank ``WORLD_SIZE-1``).

    Args:
        token: the shared secret (default ``$SYFT_MPC_TOKEN``; at least 128 bits, e.g. ``secrets.token_hex(32)``).
        session: session name (also the store key prefix); use a new one for each session
            formed over the same store.
        timeout_s: bound on the rendezvous (all ranks published) and on every later wait.
        host, port: where this rank listens (defaults: ``$SYFT_MPC_HOST`` or the local
            address routing to ``MASTER_ADDR``; ``$SYFT_MPC_PORT`` or a free port).
        store: a ``torch.distributed.Store`` to use instead of the ``env://`` rendezvous
            (then only ``RANK`` and ``WORLD_SIZE`` are read from the environment).
        tls_cert, tls_key, tls_ca, tls_server_name: TLS for every connection (defaults:
            ``$SYFT_MPC_TLS_CERT``, ``$SYFT_MPC_TLS_KEY``, ``$SYFT_MPC_TLS_CA``; TLS is on when
            a certificate is given). See :meth:`Party.connect`.

    Raises:
        RuntimeError: missing or bad environment variables; ValueError: fewer than 3 ranks
        or no token; :class:`PeerTimeout` naming the ranks that did not publish in time;
        the errors of :meth:`Party.connect` / :meth:`Dealer.connect`.
    """
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if world < 3:
        raise ValueError(f"WORLD_SIZE={world}: an MPC job needs at least 2 parties and a dealer (3 ranks)")
    if not 0 <= rank < world:
        raise RuntimeError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    token = token or os.environ.get(ENV_TOKEN)
    if not token:
        raise ValueError(f"no token: pass token=... or set ${ENV_TOKEN} on every node (it never goes through the store)")
    timeout = timedelta(seconds=timeout_s)
    if store is None:
        from torch.distributed.rendezvous import rendezvous

        store, _, _ = next(rendezvous("env://", rank=rank, world_size=world, timeout=timeout))
    _stores.append(store)

    if host is None:
        host = os.environ.get(ENV_HOST) or (_local_host(_env("MASTER_ADDR")) if "MASTER_ADDR" in os.environ else "127.0.0.1")
    if port is None:
        port = int(os.environ.get(ENV_PORT) or 0) or free_port(host)
    prefix = f"{KEY_PREFIX}/{session}/addr/"
    store.set(prefix + str(rank), host_port(host, port))
    keys = [prefix + str(r) for r in range(world)]
    try:
        store.wait(keys, timeout)
    except Exception as e:  # torch raises DistStoreError / RuntimeError on a timeout
        missing = [r for r, k in enumerate(keys) if not _has(store, k)]
        raise PeerTimeout(
            f"torchrun rendezvous of session {session!r}: ranks {missing} did not publish their address "
            f"within {timeout_s} s ({type(e).__name__}: {e})"
        ) from None
    addrs = [bytes(store.get(k)).decode("utf-8") for k in keys]
    n_parties = world - 1
    tls_cert, tls_key = tls_cert or os.environ.get(ENV_TLS_CERT), tls_key or os.environ.get(ENV_TLS_KEY)
    if tls_cert or tls_key:
        tls_ca = tls_ca or os.environ.get(ENV_TLS_CA)
    if rank == world - 1:
        return Dealer.connect(
            n_parties, addrs[-1], token, session=session, timeout_s=timeout_s, tls_cert=tls_cert, tls_key=tls_key
        )
    return Party.connect(
        rank,
        addrs[:-1],
        addrs[-1],
        token,
        session=session,
        timeout_s=timeout_s,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        tls_server_name=tls_server_name,
    )


def _has(store: Any, key: str) -> bool:
    try:
        return bool(store.check([key]))
    except Exception:
        return False
