"""The control-plane codec: round trips, typed messages, and a decoder that only ever fails cleanly."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from syft_mpc.remote import messages, serde
from syft_mpc.errors import SerializationError
from syft_mpc.remote.serde import ObjRef, PointerDesc

DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.bool, torch.complex64, torch.complex128,
]


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
    n = int(np.prod(shape)) if shape else 1
    raw = draw(st.binary(min_size=n * torch.empty((), dtype=dtype).element_size(),
                         max_size=n * torch.empty((), dtype=dtype).element_size()))
    if dtype == torch.bool:
        t = torch.tensor(list(raw), dtype=torch.uint8).reshape(shape).bool() if n else torch.empty(shape, dtype=dtype)
    else:
        t = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape).clone() if n else torch.empty(shape, dtype=dtype)
    if draw(st.booleans()):  # non-contiguous views travel as their logical values
        t = t.transpose(0, -1) if t.ndim >= 2 else t
    if dtype.is_floating_point and draw(st.booleans()):
        t = t.clone().requires_grad_(True)
        if draw(st.booleans()):
            t.grad = torch.zeros_like(t)
    return t


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True),
    st.complex_numbers(allow_nan=False), st.text(max_size=20), st.binary(max_size=20),
    st.sampled_from([torch.float32, torch.int64, torch.bool, Ellipsis, torch.preserve_format, torch.device("cpu")]),
    st.builds(ObjRef, st.integers(0, 2**64 - 1)),
    st.builds(lambda a, b, c: slice(a, b, c), *(st.none() | st.integers(-5, 5) for _ in range(3))),
    st.lists(st.integers(0, 9), max_size=4).map(torch.Size),
    tensors(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5) | st.integers(-3, 3), inner, max_size=4),
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.requires_grad != b.requires_grad or (a.grad is None) != (b.grad is None):
            return False
        # compare raw bits, so NaNs and -0.0 count as equal to themselves
        ab, bb = a.detach().contiguous(), b.detach().contiguous()
        if a.dtype == torch.bfloat16:
            ab, bb = ab.view(torch.int16), bb.view(torch.int16)
        return ab.numpy().tobytes() == bb.numpy().tobytes() and (a.grad is None or same(a.grad, b.grad))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(values)
def test_round_trip(v: Any) -> None:
    assert same(serde.decode(serde.encode(v)), v)


@given(tensors())
def test_tensor_round_trip_keeps_dtype_shape_grad(t: torch.Tensor) -> None:
    out = serde.decode(serde.encode(t))
    assert same(out, t) and out.is_leaf


@given(st.binary(max_size=200))
def test_random_bytes_fail_cleanly(data: bytes) -> None:
    try:
        serde.decode(data)
    except SerializationError:
        pass


@given(values, st.data())
def test_corrupted_messages_fail_cleanly(v: Any, data: st.DataObject) -> None:
    enc = bytearray(serde.encode(messages.Envelope("me", [1, 2], messages.Command("torch.add", (v,), {}, 3, True))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(5, len(enc) - 1))
        enc[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(enc)))
    for blob in (bytes(enc), bytes(enc[:cut])):
        try:
            serde.decode(blob)
        except SerializationError:
            pass


def test_messages_round_trip() -> None:
    t = torch.randn(2, 3, requires_grad=True)
    msgs = [
        messages.Store(5, t),
        messages.Store(6, PointerDesc("bob", 9, torch.Size([2]), torch.int64, False)),
        messages.Fetch(5, True),
        messages.Command("Tensor.sum", (ObjRef(5),), {"dim": 0}, 11, False),
        messages.GetAttr(5, "grad", 12),
        messages.SetAttr(5, "grad", None),
        messages.Move(5, "alice", 13, False),
        messages.RemoteGet(5),
        messages.Describe(5, ["#a", "#b"], "a description"),
        messages.Describe(5, [], None),
        messages.Search(["#a", "words"]),
        messages.Ok((PointerDesc("bob", 1, None, torch.float32, True), 3, torch.Size([1]))),
        messages.Err("RuntimeError", "boom"),
    ]
    for m in msgs:
        env = messages.Envelope("me", [1, 2, 3], m)
        out = serde.decode(serde.encode(env))
        assert type(out.body) is type(m)
        if isinstance(m, messages.Store) and isinstance(m.obj, torch.Tensor):
            assert same(out.body.obj, t)
        else:
            assert out == env


def test_wire_format_header_and_tensor_layout() -> None:
    data = serde.encode(torch.tensor([1, 258], dtype=torch.int16))
    assert data[:5] == b"SYMP\x01"
    # tag, dtype code (int16 = 7), flags, ndim, dim, nbytes, little-endian raw values
    assert data[5:] == bytes([serde.T_TENSOR, 7, 0, 1]) + struct.pack("<QQ", 2, 4) + b"\x01\x00\x02\x01"


def test_bad_header_and_version() -> None:
    with pytest.raises(SerializationError, match="magic"):
        serde.decode(b"PICKLE")
    with pytest.raises(SerializationError, match="version"):
        serde.decode(b"SYMP\x07\x00")
    with pytest.raises(SerializationError, match="trailing"):
        serde.decode(serde.encode(1) + b"\x00")
    with pytest.raises(SerializationError, match="expected bytes"):
        serde.decode("SYMP")  # type: ignore[arg-type]


def test_limits_are_enforced() -> None:
    deep: Any = 1
    for _ in range(serde.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(SerializationError, match="nested"):
        serde.encode(deep)
    # the same nesting, hand-made, is refused by the decoder
    blob = b"SYMP\x01" + (bytes([serde.T_LIST]) + struct.pack("<I", 1)) * (serde.MAX_DEPTH + 2) + b"\x00"
    with pytest.raises(SerializationError, match="nested"):
        serde.decode(blob)
    # a length far beyond the message never allocates
    with pytest.raises(SerializationError, match="exceeds"):
        serde.decode(b"SYMP\x01" + bytes([serde.T_LIST]) + struct.pack("<I", 2**32 - 1))
    huge = b"SYMP\x01" + bytes([serde.T_TENSOR, 1, 0, 2]) + struct.pack("<QQQ", 2**40, 2**40, 2**62)
    with pytest.raises(SerializationError, match="cannot hold"):
        serde.decode(huge)
    with pytest.raises(SerializationError, match="rank"):
        serde.decode(b"SYMP\x01" + bytes([serde.T_TENSOR, 1, 0, 200]))
    with pytest.raises(SerializationError, match="64 bits"):
        serde.encode(2**64)


def test_schema_is_checked() -> None:
    good = serde.encode(messages.Fetch(5, True))
    # Fetch's second field must be a bool: patch the True into an int
    bad = good[:-1] + bytes([serde.T_INT]) + struct.pack("<q", 1)
    with pytest.raises(SerializationError, match="Fetch: field 1"):
        serde.decode(bad)
    with pytest.raises(SerializationError, match="unknown message kind"):
        serde.decode(b"SYMP\x01" + bytes([serde.T_STRUCT]) + struct.pack("<H", 999) + b"\x00")
    with pytest.raises(SerializationError, match="object id"):
        serde.decode(serde.encode(messages.Fetch(-1, True)))
    with pytest.raises(SerializationError, match="unknown dtype"):
        serde.decode(b"SYMP\x01" + bytes([serde.T_DTYPE, 99]))


def test_unsupported_values_are_refused() -> None:
    class Evil:
        def __reduce__(self) -> Any:
            return (print, ("pwned",))

    for v in (Evil(), object(), print, {1.5: 2}, np.int64(3), torch.sparse_coo_tensor([[0]], [1.0], (2,), check_invariants=True)):
        with pytest.raises(SerializationError):
            serde.encode(v)


def test_no_pickle_or_dynamic_code_in_the_package() -> None:
    import pathlib
    import re

    import syft_mpc

    root = pathlib.Path(syft_mpc.__file__).parent
    risky = r"import pickle|from pickle|pickle\.|cPickle|dill|torch\.load|allow_pickle=True|(?<![.\w])eval\(|(?<![.\w])exec\(|__import__"
    files = list(root.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        assert not re.search(risky, path.read_text()), path.relative_to(root)


@given(
    st.text(max_size=30),
    st.lists(values, max_size=3),
    st.dictionaries(st.text(max_size=5), values, max_size=3),
    st.integers(0, 2**63 - 1),
    st.booleans(),
    st.lists(st.integers(0, 2**63 - 1), max_size=5),
)
def test_random_commands_round_trip(op: str, args: list[Any], kwargs: dict[str, Any], rid: int, grad: bool,
                                    deletes: list[int]) -> None:
    env = messages.Envelope("me", deletes, messages.Command(op, tuple(args), kwargs, rid, grad))
    out = serde.decode(serde.encode(env))
    assert isinstance(out.body, messages.Command) and out.deletes == deletes and out.sender == "me"
    assert (out.body.op, out.body.return_id, out.body.grad_enabled) == (op, rid, grad)
    assert same(out.body.args, tuple(args)) and same(out.body.kwargs, kwargs)


@pytest.mark.parametrize("offset", [0, 1, 5])
def test_encode_parts_round_trip_without_copies(offset: int) -> None:
    """Large payloads travel by reference, land 8-byte aligned after `offset` bytes, and a
    writable received buffer is wrapped in place; the joined pieces equal `encode`."""
    big = torch.arange(40_000, dtype=torch.float64).reshape(200, 200)
    small = torch.tensor([1, 2, 3])
    value = {"a": big, "b": [small, "x"], "c": big.float()}
    parts = serde.encode_parts(value, offset=offset)
    assert any(isinstance(p, np.ndarray) and np.shares_memory(p, big.numpy()) for p in parts)
    joined = b"".join(parts)
    out = serde.decode(joined)  # read-only bytes: copied
    assert torch.equal(out["a"], big) and torch.equal(out["b"][0], small) and torch.equal(out["c"], big.float())
    msg = np.frombuffer(b"\0" * offset + joined, dtype=np.uint8).copy()  # as a received message
    got = serde.decode(memoryview(msg)[offset:])
    assert torch.equal(got["a"], big) and torch.equal(got["c"], big.float()) and got["b"][1] == "x"
    assert np.shares_memory(got["a"].numpy(), msg) and got["a"].numpy().ctypes.data % 8 == 0
    assert torch.equal(serde.decode(parts)["a"], big)
    with pytest.raises(SerializationError):
        serde.decode(np.zeros((2, 2), dtype=np.uint8))
