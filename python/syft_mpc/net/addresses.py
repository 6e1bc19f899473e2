"""Socket addresses: a free port to listen on, and ``host:port`` text for IPv4 and IPv6."""

from __future__ import annotations

import socket

__all__ = ["free_port", "host_port"]


def free_port(host: str) -> int:
    """A port that is free on ``host`` now (the OS picks it; another process may take it before it is bound again)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
