"""Sealing the MPC session secret of an ``MpcJoin`` for the one connection it travels on.

A driver opening an MPC session hands every member (parties and crypto provider) the
same fresh random token, which they then use to authenticate each other. On a
connection without TLS that token would otherwise cross the wire in clear, and whoever
reads it could later pose as a member of that session. So a socket worker's client
seals it under a secret that only the two ends of that connection can compute
(``Connection.export_secret``: HKDF of the connection's handshake keys, see
``rust/transport/src/handshake.rs``), and the worker's server opens it on arrival::

    sealed = "sealed1:" hex(salt [16] | token XOR pad | tag [16])
    pad    = export_secret(CONTEXT | salt | session | party id | "pad" | block i) ...  (32 bytes per block)
    tag    = HMAC-SHA256(export_secret(CONTEXT | salt | session | party id | "tag"), salt | ciphertext)[:16]

The salt is fresh for every seal, so no pad is ever used twice. The frame MAC already
protects the message's integrity; the tag here only tells a secret sealed for another
connection (one the client replaced after a failure) from a good one, with a clear
error instead of a wrong token. ``VirtualWorker`` s get the message in memory, unsealed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from typing import Protocol

from syft_mpc.errors import ProtocolError, SerializationError
from syft_mpc.remote.messages import Envelope, MpcJoin

__all__ = ["open_envelope", "seal_envelope"]

PREFIX = "sealed1:"
CONTEXT = b"syft-mpc MpcJoin token v1\0"
_SALT = 16
_TAG = 16
_MAX_TOKEN = 4096


class _Exporter(Protocol):
    def export_secret(self, context: bytes) -> bytes: ...


def _context(salt: bytes, msg: MpcJoin, what: bytes) -> bytes:
    return CONTEXT + salt + msg.session.encode() + b"\0" + str(msg.party_id).encode() + b"\0" + what


def _pad(conn: _Exporter, salt: bytes, msg: MpcJoin, n: int) -> bytes:
    blocks = (conn.export_secret(_context(salt, msg, b"pad" + i.to_bytes(4, "little"))) for i in range((n + 31) // 32))
    return b"".join(blocks)[:n]


def _tag(conn: _Exporter, salt: bytes, msg: MpcJoin, ciphertext: bytes) -> bytes:
    key = conn.export_secret(_context(salt, msg, b"tag"))
    return hmac.new(key, salt + ciphertext, hashlib.sha256).digest()[:_TAG]


def seal_envelope(env: Envelope, conn: _Exporter) -> Envelope:
    """``env`` with the token of an ``MpcJoin`` body sealed for ``conn``; other envelopes unchanged."""
    msg = env.body
    if not isinstance(msg, MpcJoin):
        return env
    secret = msg.token.encode()
    if len(secret) > _MAX_TOKEN:
        raise ProtocolError(f"an MPC session token of {len(secret)} bytes is too long (at most {_MAX_TOKEN})")
    salt = secrets.token_bytes(_SALT)
    ct = bytes(a ^ b for a, b in zip(secret, _pad(conn, salt, msg, len(secret))))
    sealed = PREFIX + (salt + ct + _tag(conn, salt, msg, ct)).hex()
    return dataclasses.replace(env, body=dataclasses.replace(msg, token=sealed))


def open_envelope(env: Envelope, conn: _Exporter) -> Envelope:
    """``env`` with the token of an ``MpcJoin`` body opened (it must have been sealed for
    ``conn``); other envelopes unchanged. Errors: :class:`SerializationError` saying what is wrong."""
    msg = env.body
    if not isinstance(msg, MpcJoin):
        return env
    if not msg.token.startswith(PREFIX):
        raise SerializationError(
            "MpcJoin carried its session secret unsealed; a socket client must seal it for the connection "
            "(run the same syft_mpc version on the driver and the workers)"
        )
    try:
        raw = bytes.fromhex(msg.token[len(PREFIX):])
    except ValueError:
        raw = b""
    if len(raw) < _SALT + _TAG:
        raise SerializationError("MpcJoin's sealed session secret is malformed")
    salt, ct, tag = raw[:_SALT], raw[_SALT:-_TAG], raw[-_TAG:]
    if not hmac.compare_digest(tag, _tag(conn, salt, msg, ct)):
        raise SerializationError(
            "MpcJoin's session secret was sealed for another connection (the client reconnected in between); "
            "open the MPC session again"
        )
    try:
        token = bytes(a ^ b for a, b in zip(ct, _pad(conn, salt, msg, len(ct)))).decode()
    except UnicodeDecodeError:
        raise SerializationError("MpcJoin's sealed session secret is not text") from None
    return dataclasses.replace(env, body=dataclasses.replace(msg, token=token))
