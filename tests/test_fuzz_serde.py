"""Fuzzing the control-plane decoder (`serde.decode`) and a worker's request handler.

Whatever bytes arrive, `serde.decode` either returns a value or raises `SerializationError`:
no other exception, no hang, no allocation beyond a small multiple of the input. Inputs:
random bytes, a grammar of near-valid encodings (right tags with wrong lengths, extreme
dimensions such as 2^63, unknown struct kinds and flags), and mutations of every valid
request type (bit flips, extreme integers written over lengths, truncations, splices).
`BaseWorker.handle` must turn any of those into an `Ok`/`Err` reply without raising.

Bounded for CI (a few hundred examples per test, a few seconds in all); for longer runs
raise `FUZZ_EXAMPLES`, e.g. `FUZZ_EXAMPLES=20000 pytest tests/test_fuzz_serde.py`, or use
the coverage-guided harness `fuzz/python/fuzz_serde.py` (atheris).
"""

from __future__ import annotations

import os
import pathlib
import random
import struct
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import syft_mpc as sy
from syft_mpc.remote import messages, serde
from syft_mpc.errors import SerializationError
from syft_mpc.remote.messages import Command, Envelope, Err, Fetch, GetAttr, Move, Ok, RemoteGet, SetAttr, Store
from syft_mpc.remote.serde import ObjRef, PointerDesc

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# Integers that break naive decoders: sign bits, 32/64-bit edges, lengths beyond any message.
EXTREME = [0, 1, 2, 7, 8, 255, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
extreme_u64 = st.sampled_from(EXTREME) | st.integers(0, 2**64 - 1)

MAX_SECONDS = 2.0  # one decode of a few KiB; a hang or a quadratic path shows up here


def check_decode(data: "bytes | bytearray | memoryview | np.ndarray") -> Any:
    """Decodes `data`: only SerializationError may escape; no hang, bounded memory."""
    n = len(data)
    t0 = time.monotonic()
    tracemalloc.start()
    try:
        value = serde.decode(data)
    except SerializationError as e:
        assert str(e)  # errors say what is wrong
        value = e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.monotonic() - t0 < MAX_SECONDS, f"decoding {n} bytes took {time.monotonic() - t0:.1f} s"
    # Python objects cost a few dozen bytes each; one input byte makes at most one object.
    assert peak < 256 * n + (1 << 20), f"decoding {n} bytes allocated {peak} bytes"
    return value


# ------------------------------------------------------------------ near-valid encodings
# A grammar of the wire format that gets tags right and lengths, dimensions, codes and
# counts sometimes wrong. Built with a seeded random.Random (hypothesis draws the seed):
# far faster than nested strategies, and a failure still reproduces from its seed.

def u8(v: int) -> bytes:
    return bytes([v & 0xFF])


def u16(v: int) -> bytes:
    return struct.pack("<H", v & 0xFFFF)


def u32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v & (2**64 - 1))


_ITEMSIZE = {1: 4, 2: 8, 3: 2, 4: 2, 5: 1, 6: 1, 7: 2, 8: 4, 9: 8, 10: 1, 11: 8, 12: 16, 13: 2, 14: 4, 15: 8}
_STRINGS = [b"cpu", b"cuda:0", b"meta", b"cuda:99999999999999999999", b"\xff\xfe", b"cpu:-1", b"mps", b"", b"torch.add"]
_DIMS = [0, 1, 2, 3, 4, 2**31, 2**32, 2**62, 2**63, 2**64 - 1]


def _extreme(rng: random.Random) -> int:
    return rng.choice(EXTREME) if rng.random() < 0.7 else rng.getrandbits(64)


def _length(rng: random.Random, true_len: int) -> bytes:
    """A u32 length: mostly right, sometimes off by one, sometimes extreme."""
    x = rng.random()
    if x < 0.6:
        return u32(true_len)
    if x < 0.8:
        return u32(max(0, true_len + rng.choice([-1, 1])))
    return u32(_extreme(rng))


def _bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def _str(rng: random.Random, tag: int) -> bytes:
    raw = rng.choice(_STRINGS) if rng.random() < 0.5 else _bytes(rng, rng.randrange(24))
    return u8(tag) + _length(rng, len(raw)) + raw


def _size(rng: random.Random) -> bytes:
    dims = [rng.choice(EXTREME) if rng.random() < 0.5 else rng.randrange(-3, 6) for _ in range(rng.randrange(5))]
    ndim = rng.choice([len(dims), len(dims), 33, 255])
    return b"\x0e" + u8(ndim) + b"".join(struct.pack("<q", max(-(2**63), min(d, 2**63 - 1))) for d in dims)


def _tensor(rng: random.Random) -> bytes:
    code = rng.choice(list(range(17)) + [255])
    flags = rng.choice([0, 1, 2, 3, 4, 5, 7, 8, 255])
    dims = [rng.choice(_DIMS) for _ in range(rng.randrange(5))]
    ndim = rng.choice([len(dims), len(dims), 33, 255])
    numel = 1
    for d in dims:
        numel *= d
    true_nbytes = numel * _ITEMSIZE.get(code, 1)
    nbytes = rng.choice([true_nbytes, true_nbytes, true_nbytes + 1, _extreme(rng)])
    out = b"\x11" + u8(code) + u8(flags) + u8(ndim) + b"".join(u64(d) for d in dims) + u64(nbytes)
    if flags & 4:
        out += u8(rng.choice([0, 3, 7, 8, 255])) + bytes(rng.randrange(9))
    if true_nbytes <= 64:
        out += _bytes(rng, true_nbytes)
    out += _bytes(rng, rng.randrange(4))
    if flags & 2 and rng.random() < 0.5:
        out += _tensor(rng) if rng.random() < 0.5 else rng.choice([b"", b"\x11", b"\x00"])
    return out


def _leaf(rng: random.Random) -> bytes:
    k = rng.randrange(12)
    if k == 0:
        return rng.choice([b"\x00", b"\x01", b"\x02", b"\x0d"])  # None, False, True, Ellipsis
    if k == 1:
        return rng.choice([b"\x03", b"\x04"]) + _bytes(rng, 8)  # int, float
    if k == 2:
        return b"\x05" + _bytes(rng, 16)  # complex
    if k == 3:
        return rng.choice([b"\x0c", b"\x10"]) + u8(rng.randrange(40))  # dtype, memory format
    if k == 4:
        return b"\x12" + u64(_extreme(rng))  # objref
    if k == 5:
        return u8(rng.randrange(256))  # any tag, no payload
    if k in (6, 7):
        return _str(rng, rng.choice([0x06, 0x07, 0x0F]))  # str, bytes, device
    if k == 8:
        return _size(rng)
    return _tensor(rng)


def gen_value(rng: random.Random, depth: int = 0) -> bytes:
    if depth >= 4 or rng.random() < 0.45:
        return _leaf(rng)
    k = rng.randrange(5)
    if k == 0:  # list / tuple
        items = [gen_value(rng, depth + 1) for _ in range(rng.randrange(4))]
        return u8(rng.choice([8, 9])) + _length(rng, len(items)) + b"".join(items)
    if k == 1:  # dict
        pairs = [gen_value(rng, depth + 1) + gen_value(rng, depth + 1) for _ in range(rng.randrange(3))]
        return b"\x0a" + _length(rng, len(pairs)) + b"".join(pairs)
    if k == 2:  # slice (sometimes one part short)
        return b"\x0b" + b"".join(gen_value(rng, depth + 1) for _ in range(rng.choice([3, 3, 2])))
    if k == 3:  # pointer
        return (b"\x13" + _str(rng, 0)[1:] + u64(_extreme(rng)) + (_size(rng) if rng.random() < 0.5 else b"\x00")
                + u8(rng.randrange(20)) + u8(rng.randrange(3)))
    kinds = sorted(serde._STRUCTS)  # struct: a known kind with its field count, mostly
    kind = rng.choice(kinds) if rng.random() < 0.9 else rng.randrange(2**16)
    cls = serde._STRUCTS.get(kind)
    n = len(cls.SCHEMA) if cls is not None else rng.randrange(6)
    nf = rng.choice([n, n, n, n + 1, 255])
    return b"\x14" + u16(kind) + u8(nf) + b"".join(gen_value(rng, depth + 1) for _ in range(n))


grammar = st.integers(0, 2**64 - 1).map(lambda seed: gen_value(random.Random(seed)))


def framed(body: bytes) -> bytes:
    return serde.MAGIC + bytes([serde.VERSION]) + body


# ------------------------------------------------------------------ valid requests to mutate

_PLAN = messages.PlanDef(
    3, "p", (messages.Var(0), [1.5, None]), 1, [torch.ones(2)],
    [("aten.add.Tensor", (messages.Var(0), messages.Var(1)), {"alpha": 2}),
     ("aten.view.default", (messages.Var(2), [-1]), {})],
    (messages.Var(3),),
)


def valid_requests() -> list[bytes]:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_(True)
    t.grad = torch.ones(2, 3)
    bodies: list[Any] = [
        None,
        Store(5, t),
        Store(6, PointerDesc("alice", 9, torch.Size([2, 3]), torch.int64, False)),
        Fetch(5, True),
        Command("torch.add", (ObjRef(5), 2.5), {"alpha": 2}, 11, True),
        Command("op.getitem", (ObjRef(5), (slice(0, 1), Ellipsis, None)), {}, 12, False),
        Command("Tensor.sum", (ObjRef(5),), {"dim": 0, "dtype": torch.float64}, 13, False),
        GetAttr(5, "grad", 14),
        SetAttr(5, "requires_grad", False),
        Move(5, "alice", 15, True),
        RemoteGet(6),
        messages.Describe(5, ["#digits", "#data"], "scikit-learn's digits"),
        messages.Search(["#digits", "hospital"]),
        messages.MpcLeave("s"),
        messages.PlanStore(7, _PLAN),
        messages.TrainConfigStore(8, [4, 1], [_PLAN, _PLAN], [_PLAN, _PLAN], _PLAN, [torch.ones(2)], [9], True, 3, 1, 42),
        messages.TrainConfigStore(10, [4, 1], [_PLAN, _PLAN], [_PLAN, _PLAN], None, [], [], False, -1, 1, 7),
        messages.Fit(8, "mnist"),
        messages.Evaluate(8, "mnist_testing", True, 10, True, True),
        messages.PlanRun(7, (ObjRef(5), torch.ones(2)), [16, 17]),
        messages.PlanStore(8, messages.ProtocolDef(9, [("w1", "alice", 0)], [_PLAN], ["#t"], "d")),
        messages.ProtocolRun(8, (ObjRef(5),), 18),
        Ok({"k": [1, "x", torch.Size([1]), 3 + 4j, b"raw", torch.device("cpu"), torch.channels_last]}),
        Err("RuntimeError", "boom"),
    ]
    out = [serde.encode(Envelope("me", [1, 2, 2**63 - 1], b)) for b in bodies]
    out.append(serde.encode({"uid": "0123abcd", "peers": {"alice": "127.0.0.1:8778"}}))  # a hello
    return out


VALID = valid_requests()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    b = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, max(0, len(b) - 1)))
        if op == 0 and b:
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and b:
            b[pos] = draw(st.integers(0, 255))
        elif op == 2:  # an extreme u32 or u64 over whatever is there (lengths, dims, ids)
            v = draw(extreme_u64)
            w = u32(v) if draw(st.booleans()) else u64(v)
            b[pos : pos + len(w)] = w
        elif op == 3:
            del b[draw(st.integers(0, len(b))) :]
        elif op == 4:
            b[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == 5:
            other = draw(st.sampled_from(VALID))
            b = b[:pos] + other[draw(st.integers(0, len(other))) :]
        else:
            del b[pos : pos + draw(st.integers(1, 8))]
    return bytes(b)


# ------------------------------------------------------------------ tests

@fuzz
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check_decode(data)
    check_decode(framed(data))  # past the header, into the value decoder


@fuzz
@given(grammar, st.binary(max_size=3))
def test_near_valid_encodings(body: bytes, tail: bytes) -> None:
    check_decode(framed(body))
    check_decode(framed(body + tail))


@fuzz
@given(mutated())
def test_mutated_requests(data: bytes) -> None:
    check_decode(data)
    check_decode(bytearray(data))
    check_decode(np.frombuffer(data, dtype=np.uint8).copy())  # as the native channel hands it over


@fuzz
@given(st.integers(0, 40), st.sampled_from(EXTREME), st.booleans())
def test_large_writable_buffer_read_in_place(pos: int, value: int, wide: bool) -> None:
    """A ≥ 64 KiB writable buffer takes the zero-copy path; corrupt its header fields."""
    msg = bytearray(serde.encode(Envelope("me", [], Store(3, torch.zeros(20_000)))))
    w = u64(value) if wide else u32(value)
    at = 5 + pos
    msg[at : at + len(w)] = w
    check_decode(memoryview(np.frombuffer(msg, dtype=np.uint8).copy()))


@pytest.mark.parametrize(
    "dims",
    [[0, 2**63], [0, 2**64 - 1], [2**62, 2**62, 0], [0, 2**32, 2**32], [2**63, 0, 2**63]],
    ids=["0x2^63", "0x2^64-1", "2^62x2^62x0", "0x2^32x2^32", "2^63x0x2^63"],
)
def test_empty_tensor_with_huge_dimensions_is_refused(dims: list[int]) -> None:
    """Regression: a zero-element tensor whose other dimensions overflow int64 (or their
    product does) raised TypeError/RuntimeError from torch instead of SerializationError."""
    blob = framed(b"\x11\x01\x00" + u8(len(dims)) + b"".join(u64(d) for d in dims) + u64(0))
    with pytest.raises(SerializationError, match="dimension"):
        serde.decode(blob)
    size = framed(b"\x0e" + u8(2) + struct.pack("<qq", 2**62, 2**62))  # a Size is only metadata
    assert serde.decode(size) == torch.Size([2**62, 2**62])


def test_valid_seeds_decode() -> None:
    for data in VALID:
        assert not isinstance(check_decode(data), SerializationError)


def test_committed_corpus_replays() -> None:
    """The atheris harness's seeds, and any input a fuzzer once crashed on (added there
    after the fix), still decode or fail cleanly."""
    corpus = pathlib.Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "serde"
    files = sorted(p for p in corpus.iterdir() if p.is_file())
    assert len(files) >= 5, corpus
    for p in files:
        check_decode(p.read_bytes())


# A worker's handler: decoded or not, every input becomes an Ok/Err reply.
hook = sy.TorchHook(torch)


@pytest.fixture(scope="module")
def worker() -> sy.VirtualWorker:
    return sy.VirtualWorker(hook, id="fuzz-target", known_workers={})


def _reset(w: sy.VirtualWorker) -> None:
    with w._lock:
        w._objects.clear()
        w._objects[5] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        w._objects[1] = torch.ones(2)


# The pointer layer's requests (and replies, refused by a worker). Other request types reach
# the network or the disk (MPC sessions, checkpoints) and are not run here.
_CORE = (type(None), Store, Fetch, Command, GetAttr, SetAttr, Move, RemoteGet, messages.Describe, messages.Search, Ok, Err)


@fuzz
@given(mutated() | grammar.map(framed))
def test_worker_handle_never_raises(worker: sy.VirtualWorker, data: bytes) -> None:
    try:
        env = serde.decode(data)
    except SerializationError:
        env = None
    assume(not isinstance(env, Envelope) or type(env.body) in _CORE)
    _reset(worker)
    reply = worker.handle(data)
    decoded = serde.decode(reply)
    assert isinstance(decoded, (Ok, Err)), decoded


