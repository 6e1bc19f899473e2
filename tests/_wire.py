"""The transport's wire format by hand (rust/transport/src/frame.rs, handshake.rs), for tests
that must send what no `Connection` would: frames, the handshake, and after it the session
keys and per-frame tags (POLYVAL over header | payload | lengths, masked with keyed BLAKE3 of
the sequence number; `FrameMac` in rust/transport/src/frame.rs). The field arithmetic here is
written from RFC 8452 with Python integers, independently of the Rust code it checks.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct

import blake3

FRAME_VERSION = 3
HANDSHAKE_VERSION = 2
HEADER_LEN = 10
TAG_LEN = 16
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


#: x^128 + x^127 + x^126 + x^121 + 1, POLYVAL's field polynomial (RFC 8452, section 3).
_POLY = (1 << 128) | (1 << 127) | (1 << 126) | (1 << 121) | 1


def _clmul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        b >>= 1
    return r


def _mod(x: int) -> int:
    for i in range(x.bit_length() - 1, 127, -1):
        if x >> i & 1:
            x ^= _POLY << (i - 128)
    return x


def _x_inverse_128() -> int:
    x_inv = (1 << 127) | (1 << 126) | (1 << 125) | (1 << 120)  # (P - 1) / x, since P(0) = 1
    r = 1
    for _ in range(128):
        r = _mod(_clmul(r, x_inv))
    return r


_X_INV_128 = _x_inverse_128()


def polyval(h: bytes, data: bytes) -> bytes:
    """POLYVAL(H, X_1..X_n) of ``data`` zero-padded to whole blocks: S_j = (S_{j-1} ^ X_j) * H * x^-128."""
    hv, s = int.from_bytes(h, "little"), 0
    data += bytes(-len(data) % 16)
    for i in range(0, len(data), 16):
        s = _mod(_clmul(_mod(_clmul(s ^ int.from_bytes(data[i : i + 16], "little"), hv)), _X_INV_128))
    return s.to_bytes(16, "little")


class FrameMac:
    """One direction's tags under the direction key ``key``."""

    def __init__(self, key: bytes) -> None:
        self.h = blake3.blake3(key, derive_key_context="syft_mpc frame MAC v3: POLYVAL key H").digest()[:16]
        self.pad_key = blake3.blake3(key, derive_key_context="syft_mpc frame MAC v3: pad key K").digest()
        self.seq = 0

    def tag(self, head: bytes, payload: bytes) -> bytes:
        pad16 = lambda b: b + bytes(-len(b) % 16)  # noqa: E731
        lengths = struct.pack("<QQ", 8 * len(head), 8 * len(payload))
        hashed = polyval(self.h, pad16(head) + pad16(payload) + lengths)
        pad = blake3.blake3(struct.pack("<Q", self.seq), key=self.pad_key).digest()[:16]
        self.seq += 1
        return bytes(a ^ b for a, b in zip(hashed, pad))

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
