"""The environment variables syft_mpc reads, in one place.

None of them is required: each has a default or a command-line flag of its own.
"""

__all__ = ["ENV_HOST", "ENV_MAX_MEMORY", "ENV_PORT", "ENV_TIMEOUT", "ENV_TLS_CA", "ENV_TLS_CERT", "ENV_TLS_KEY", "ENV_TOKEN", "ENV_WORKERS"]

ENV_WORKERS = "SYFT_MPC_WORKERS"
"""``bob=127.0.0.1:8777,alice=127.0.0.1:8778``: the workers ``syft-mpc launch`` started."""
ENV_TOKEN = "SYFT_MPC_TOKEN"
"""The shared secret every driver and worker authenticates with (never on a command line)."""
ENV_TLS_CA = "SYFT_MPC_TLS_CA"
"""Path of the CA certificate (PEM) that signed the workers' TLS certificates: when set,
``SocketWorker``s connect over TLS by default (``syft-mpc launch --tls-...`` sets it)."""
ENV_TIMEOUT = "SYFT_MPC_TIMEOUT"
"""Default bound (seconds) on every wait for a worker's answer (30 if unset)."""
ENV_TLS_CERT = "SYFT_MPC_TLS_CERT"
"""This node's TLS certificate chain (PEM) for :func:`from_torchrun`; TLS is on when it is set."""
ENV_TLS_KEY = "SYFT_MPC_TLS_KEY"
"""The private key (PEM) of ``$SYFT_MPC_TLS_CERT``."""
ENV_HOST = "SYFT_MPC_HOST"
"""The address this rank listens on and publishes (default: the local address that routes to MASTER_ADDR)."""
ENV_PORT = "SYFT_MPC_PORT"
"""The port this rank listens on (default: a free port)."""
ENV_MAX_MEMORY = "SYFT_MPC_MAX_MEMORY"
"""A worker's memory budget (``4G``, ``512M``, bytes) when ``--max-memory`` is not given; without
either, half the machine's RAM. Requests that would allocate past it are refused (see
:mod:`syft_mpc.limits` and docs/SECURITY.md)."""
