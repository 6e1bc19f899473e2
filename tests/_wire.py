"""The transport's wire format by hand (rust/transport/src/frame.rs, handshake.rs), for tests
that must send what no `Connection` would: frames, the handshake, and after it the session
keys and per-frame tags (keyed BLAKE3 over seq | header | payload).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct

import blake3

FRAME_VERSION = 2
HANDSHAKE_VERSION = 2
HEADER_LEN = 10
TAG_LEN = 32
#: Frames each side sends in the handshake (hello, proof, verdict), untagged.
HANDSHAKE_FRAMES = 3


def header(length: int, final: bool = True) -> bytes:
    return b"SMPC" + bytes([FRAME_VERSION, 1 if final else 0]) + struct.pack("<I", length)


def frame(payload: bytes, final: bool = True) -> bytes:
    """One untagged frame (the handshake's): magic, version, flags, u32 length, payload."""
    return header(len(payload), final) + payload


def read_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_message(s: socket.socket, mac: "FrameMac | None" = None) -> bytes:
    """One message; with ``mac``, every frame's tag is read and checked."""
    out = b""
    while True:
        h = read_exact(s, HEADER_LEN)
        assert h[:5] == b"SMPC" + bytes([FRAME_VERSION]), h
        payload = read_exact(s, struct.unpack("<I", h[6:])[0])
        if mac is not None:
            assert read_exact(s, TAG_LEN) == mac.tag(h, payload), "bad tag from the worker"
        out += payload
        if h[5] & 1:
            return out


def token_key(token: str) -> bytes:
    return hashlib.sha256(b"syft-mpc session key v1\0" + token.encode()).digest()


class FrameMac:
    """One direction's tags: keyed BLAKE3 under ``key`` over ``seq u64 LE | header | payload``."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.seq = 0

    def tag(self, head: bytes, payload: bytes) -> bytes:
        t = blake3.blake3(struct.pack("<Q", self.seq) + head + payload, key=self.key).digest()
        self.seq += 1
        return t

    def frame(self, payload: bytes, final: bool = True) -> bytes:
        h = header(len(payload), final)
        return h + payload + self.tag(h, payload)


def session_keys(
    key: bytes, session: bytes, mine: "tuple[int, bytes]", theirs: "tuple[int, bytes]"
) -> "tuple[bytes, bytes]":
    """(send, receive) keys of the side ``mine`` after a plaintext handshake (HKDF-SHA256)."""
    low, high = (mine, theirs) if mine < theirs else (theirs, mine)
    prk = hmac.new(low[1] + high[1], key, hashlib.sha256).digest()

    def expand(what: bytes) -> bytes:
        info = b"syft-mpc transport v2 " + what + b"\0" + session + struct.pack("<II", low[0], high[0])
        return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()

    low_high, high_low = expand(b"low to high"), expand(b"high to low")
    return (low_high, high_low) if mine < theirs else (high_low, low_high)
