"""The control-plane codec: a typed, versioned binary schema of plain values and tensors.

Every message between workers (also between two :class:`~syft_mpc.remote.workers.VirtualWorker`
objects in one process) is encoded here. No object serializer is used, nothing is imported or
looked up by a name taken from the wire: the decoder only builds the value types
listed below, and messages are a fixed set of :class:`Struct` classes.

Wire format (all integers little-endian)::

    frame   := b"SYMP" version:u8 value
    value   := tag:u8 payload
      0x00 None        0x01 False        0x02 True        0x0D Ellipsis
      0x03 int         i64
      0x04 float       f64
      0x05 complex     f64 f64
      0x06 str         len:u32 utf-8
      0x07 bytes       len:u32 raw
      0x08 list        n:u32 value*n
      0x09 tuple       n:u32 value*n
      0x0A dict        n:u32 (key value)*n      keys: str or int
      0x0B slice       value value value        start, stop, step: None or int
      0x0C dtype       code:u8
      0x0E Size        ndim:u8 i64*ndim
      0x0F device      str payload (validated by torch.device)
      0x10 memfmt      code:u8
      0x11 tensor      dtype:u8 flags:u8 ndim:u8 dims:u64*ndim nbytes:u64 [pad:u8 zero*pad] raw [grad tensor]
                       flags: 1 requires_grad, 2 a grad tensor follows, 4 padded: raw starts
                       8-byte aligned in the transport message (see encode_parts)
      0x12 objref      id:u64                    an object stored on the receiving worker
      0x13 pointer     location:str id:u64 shape:(None|Size) dtype:u8 requires_grad:u8
      0x14 struct      kind:u16 nfields:u8 value*nfields   (a message, see syft_mpc.remote.messages)

The decoder bounds everything it reads: the frame size (:data:`MAX_FRAME_BYTES`),
nesting depth (:data:`MAX_DEPTH`), tensor rank (:data:`MAX_NDIM`), and every length
against the bytes that remain, so random input ends in :class:`SerializationError`,
never in a large allocation or another exception. It also bounds what a message costs
once decoded: at most :data:`MAX_TENSORS` tensors (each costs ~1 KiB of Python and torch
objects and ~8 µs to build, whatever its size on the wire), and the memory it will take
(:data:`OBJECT_COST` per container element and per tensor, plus the tensor bytes it copies)
is charged against the memory budget in force (:func:`syft_mpc.limits.current`) before it is
allocated: too much ends in :class:`~syft_mpc.errors.ResourceLimitError`.

    >>> import torch
    >>> from syft_mpc.remote import serde
    >>> data = serde.encode({"x": torch.arange(3), "k": (1, 2.5, None, slice(0, 2))})
    >>> serde.decode(data)
    {'x': tensor([0, 1, 2]), 'k': (1, 2.5, None, slice(0, 2, None))}
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from syft_mpc import limits
from syft_mpc.errors import SerializationError

MAGIC = b"SYMP"
VERSION = 1
MAX_DEPTH = 64
MAX_NDIM = 32
MAX_FRAME_BYTES = 1 << 34  # 16 GiB: larger tensors must be split by the caller
MAX_STR_BYTES = 1 << 24
MAX_TENSORS = 1 << 14
"""Tensors one message may hold: 1 M 0-d tensors fit in 13 MB on the wire but cost ~1.25 GB
and ~9 s to decode; a model's state or an operation's operands are far fewer."""
OBJECT_COST = 64
"""Bytes charged per decoded container element (an upper bound on the Python object a value
of a few wire bytes becomes); a tensor is charged :data:`TENSOR_COST` plus the bytes it copies."""
TENSOR_COST = 1024

_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_I64_MAX = (1 << 63) - 1

T_NONE, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_COMPLEX, T_STR, T_BYTES = range(8)
T_LIST, T_TUPLE, T_DICT, T_SLICE, T_DTYPE, T_ELLIPSIS, T_SIZE, T_DEVICE = range(8, 16)
T_MEMFMT, T_TENSOR, T_OBJREF, T_POINTER, T_STRUCT = range(16, 21)

FLAG_REQUIRES_GRAD = 1
FLAG_HAS_GRAD = 2
FLAG_PADDED = 4
LARGE_PAYLOAD = 64 * 1024
"""Tensor payloads of at least this many bytes travel out of line in :func:`encode_parts`
(no copy) and are wrapped without a copy by :func:`decode` of a writable buffer."""

# dtype code -> (torch dtype, numpy dtype used to move the bytes)
_DTYPES: dict[int, tuple[torch.dtype, np.dtype[Any]]] = {
    1: (torch.float32, np.dtype("<f4")),
    2: (torch.float64, np.dtype("<f8")),
    3: (torch.float16, np.dtype("<f2")),
    4: (torch.bfloat16, np.dtype("<i2")),  # numpy has no bfloat16: move the bits as int16
    5: (torch.uint8, np.dtype("u1")),
    6: (torch.int8, np.dtype("i1")),
    7: (torch.int16, np.dtype("<i2")),
    8: (torch.int32, np.dtype("<i4")),
    9: (torch.int64, np.dtype("<i8")),
    10: (torch.bool, np.dtype("?")),
    11: (torch.complex64, np.dtype("<c8")),
    12: (torch.complex128, np.dtype("<c16")),
    13: (torch.uint16, np.dtype("<u2")),
    14: (torch.uint32, np.dtype("<u4")),
    15: (torch.uint64, np.dtype("<u8")),
}
_DTYPE_CODES: dict[torch.dtype, int] = {dt: code for code, (dt, _) in _DTYPES.items()}
_MEMFMTS: dict[int, torch.memory_format] = {
    1: torch.preserve_format,
    2: torch.contiguous_format,
    3: torch.channels_last,
    4: torch.channels_last_3d,
}
_MEMFMT_CODES = {fmt: code for code, fmt in _MEMFMTS.items()}
_LITTLE = sys.byteorder == "little"


def dtype_code(dtype: torch.dtype) -> int:
    """The wire code of a torch dtype (raises :class:`SerializationError` if unsupported)."""
    try:
        return _DTYPE_CODES[dtype]
    except KeyError:
        raise SerializationError(f"tensors of dtype {dtype} cannot be sent") from None


def dtype_from_code(code: int) -> torch.dtype:
    """The torch dtype of a wire code."""
    try:
        return _DTYPES[code][0]
    except KeyError:
        raise SerializationError(f"unknown dtype code {code}") from None


@dataclass(frozen=True)
class ObjRef:
    """Names an object in the object store of the worker that receives the message."""

    id: int


@dataclass(frozen=True)
class PointerDesc:
    """Describes a pointer: the object ``id`` stored on worker ``location``.

    Used to send a pointer to another worker (pointer chains), to return one from
    ``.get()``, and in replies to describe a result that stays remote.
    """

    location: str
    id: int
    shape: "torch.Size | None"
    dtype: torch.dtype
    requires_grad: bool


class Struct:
    """Base of the message classes: a dataclass with a fixed ``KIND`` and typed fields.

    Subclasses declare ``KIND`` (unique, 1..65535) and ``SCHEMA``: for each field in
    order, the tuple of Python types its value may have (``object`` for any value the
    codec supports). The decoder checks field count and types.
    """

    KIND: ClassVar[int] = 0
    SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ()


_STRUCTS: dict[int, type[Struct]] = {}
_VALIDATORS: dict[type, Callable[[Any], None]] = {}


def register(cls: type[Struct]) -> type[Struct]:
    """Class decorator: makes a :class:`Struct` dataclass decodable."""
    if cls.KIND in _STRUCTS or not 0 < cls.KIND < 1 << 16:
        raise ValueError(f"bad or duplicate struct kind {cls.KIND}")
    if len(cls.SCHEMA) != len(fields(cls)):  # type: ignore[arg-type]
        raise ValueError(f"{cls.__name__}: SCHEMA must list one type tuple per field")
    for types in cls.SCHEMA:
        if not isinstance(types, tuple) or not types:
            raise ValueError(f"{cls.__name__}: each SCHEMA entry must be a non-empty tuple of types")
    _STRUCTS[cls.KIND] = cls
    validate = getattr(cls, "validate", None)
    if validate is not None:
        _VALIDATORS[cls] = validate
    _register_struct_encoder(cls)
    return cls


# ----------------------------------------------------------------------------- encoding

_Encoder = Callable[[bytearray, Any, int], None]
_FIELDS: dict[type, tuple[str, ...]] = {}


def encode(value: object) -> bytes:
    """Encodes ``value`` as one frame (magic, version, value)."""
    out = bytearray(MAGIC)
    out.append(VERSION)
    _enc(out, value, 0)
    if len(out) > MAX_FRAME_BYTES:
        raise SerializationError(f"message of {len(out)} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    return bytes(out)


class _PartsOut(bytearray):
    """Encoder output of :func:`encode_parts`: large tensor payloads go to ``parts`` by
    reference; ``base`` is the transport offset of this bytearray's first byte."""

    parts: list[Any]
    base: int


def encode_parts(value: object, offset: int = 0) -> "list[bytes | np.ndarray]":
    """Encodes ``value`` like :func:`encode`, as a list of pieces whose concatenation is the frame.

    Tensor payloads of at least :data:`LARGE_PAYLOAD` bytes are not copied: their piece is a
    ``uint8`` numpy view of the tensor's memory (keep the tensor unchanged until the pieces
    are sent), preceded by padding so that the payload starts 8-byte aligned when the frame
    is sent after ``offset`` other bytes (e.g. 1 for a one-byte frame kind). The receiver
    can then wrap it without a copy (:func:`decode` of a writable buffer). Meant for
    ``_native.Connection.send``, which sends the pieces as one message without joining them.
    """
    out = _PartsOut(MAGIC)
    out.append(VERSION)
    out.parts = []
    out.base = offset
    _enc(out, value, 0)
    parts = out.parts
    if out:
        parts.append(bytes(out))
    total = out.base + len(out) - offset
    if total > MAX_FRAME_BYTES:
        raise SerializationError(f"message of {total} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    return parts


def _enc(out: bytearray, v: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise SerializationError(f"value nested deeper than {MAX_DEPTH} levels")
    fn = _ENCODERS.get(type(v))
    if fn is None:
        fn = _encoder_for(v)
    fn(out, v, depth)


def _enc_none(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_NONE)


def _enc_bool(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_TRUE if v else T_FALSE)


def _enc_int(out: bytearray, v: Any, depth: int) -> None:
    v = int(v)
    if not -(1 << 63) <= v < 1 << 63:
        raise SerializationError(f"integer {v} does not fit in 64 bits")
    out.append(T_INT)
    out += _I64.pack(v)


def _enc_float(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_FLOAT)
    out += _F64.pack(v)


def _enc_complex(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_COMPLEX)
    out += _C128.pack(v.real, v.imag)


def _put_str(out: bytearray, s: str) -> None:
    b = s.encode("utf-8")
    if len(b) > MAX_STR_BYTES:
        raise SerializationError(f"string of {len(b)} bytes exceeds {MAX_STR_BYTES}")
    out += _U32.pack(len(b))
    out += b


def _enc_str(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_STR)
    _put_str(out, v)


def _enc_bytes(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_BYTES)
    out += _U32.pack(len(v))
    out += v


def _enc_list(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_LIST)
    out += _U32.pack(len(v))
    for item in v:
        _enc(out, item, depth + 1)


def _enc_tuple(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_TUPLE)
    out += _U32.pack(len(v))
    for item in v:
        _enc(out, item, depth + 1)


def _enc_dict(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_DICT)
    out += _U32.pack(len(v))
    for k, item in v.items():
        if type(k) is not str and type(k) is not int:
            raise SerializationError(f"dict keys must be str or int, not {type(k).__name__}")
        _enc(out, k, depth + 1)
        _enc(out, item, depth + 1)


def _enc_slice(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_SLICE)
    for part in (v.start, v.stop, v.step):
        if part is not None and type(part) is not int:
            raise SerializationError("slice bounds must be None or int")
        _enc(out, part, depth + 1)


def _enc_dtype(out: bytearray, v: Any, depth: int) -> None:
    out += bytes((T_DTYPE, dtype_code(v)))


def _enc_ellipsis(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_ELLIPSIS)


def _enc_size(out: bytearray, v: Any, depth: int) -> None:
    if len(v) > MAX_NDIM:
        raise SerializationError(f"Size of rank {len(v)} exceeds {MAX_NDIM}")
    out += bytes((T_SIZE, len(v)))
    for d in v:
        out += _I64.pack(d)


def _enc_device(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_DEVICE)
    _put_str(out, str(v))


def _enc_memfmt(out: bytearray, v: Any, depth: int) -> None:
    out += bytes((T_MEMFMT, _MEMFMT_CODES[v]))


def _enc_tensor(out: bytearray, t: Any, depth: int) -> None:
    if "_syft_ptr" in t.__dict__:
        raise SerializationError("a remote parameter cannot be sent as a tensor; use its pointer")
    code = dtype_code(t.dtype)
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        raise SerializationError(f"only dense tensors can be sent (got layout {t.layout}, device {t.device})")
    if t.ndim > MAX_NDIM:
        raise SerializationError(f"tensor rank {t.ndim} exceeds {MAX_NDIM}")
    data = t.detach()
    if data.device.type != "cpu":
        data = data.cpu()
    if data.dtype == torch.bfloat16:
        data = data.view(torch.int16)
    arr = data.contiguous().numpy()
    if not _LITTLE:
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    raw = arr.reshape(-1).view(np.uint8)  # the tensor's memory, no copy
    nbytes = raw.nbytes
    grad = t.grad if t.requires_grad and t.is_leaf else None
    flags = (FLAG_REQUIRES_GRAD if t.requires_grad else 0) | (FLAG_HAS_GRAD if grad is not None else 0)
    parts_out = out if isinstance(out, _PartsOut) and nbytes >= LARGE_PAYLOAD else None  # payload by reference
    if parts_out is not None:
        flags |= FLAG_PADDED
    out += bytes((T_TENSOR, code, flags, t.ndim))
    for d in t.shape:
        out += _U64.pack(d)
    out += _U64.pack(nbytes)
    if parts_out is not None:
        pad = -(parts_out.base + len(parts_out) + 1) % 8
        parts_out.append(pad)
        parts_out += bytes(pad)
        parts_out.parts.append(bytes(parts_out))
        parts_out.parts.append(raw)
        parts_out.base += len(parts_out) + nbytes
        parts_out.clear()
    else:
        out += memoryview(raw)
    if grad is not None:
        if depth >= MAX_DEPTH:
            raise SerializationError(f"value nested deeper than {MAX_DEPTH} levels")
        _enc_tensor(out, grad, depth + 1)


def _enc_objref(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_OBJREF)
    out += _U64.pack(v.id)


def _enc_pointer(out: bytearray, v: Any, depth: int) -> None:
    out.append(T_POINTER)
    _put_str(out, v.location)
    out += _U64.pack(v.id)
    _enc(out, v.shape, depth + 1)
    out += bytes((dtype_code(v.dtype), 1 if v.requires_grad else 0))


def _enc_struct(out: bytearray, v: Any, depth: int) -> None:
    names = _FIELDS[type(v)]
    out.append(T_STRUCT)
    out += _U16.pack(v.KIND)
    out.append(len(names))
    for name in names:
        _enc(out, getattr(v, name), depth + 1)


_ENCODERS: dict[type, _Encoder] = {
    type(None): _enc_none,
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    list: _enc_list,
    tuple: _enc_tuple,
    dict: _enc_dict,
    slice: _enc_slice,
    torch.dtype: _enc_dtype,
    type(Ellipsis): _enc_ellipsis,
    torch.Size: _enc_size,
    torch.device: _enc_device,
    torch.memory_format: _enc_memfmt,
    torch.Tensor: _enc_tensor,
    ObjRef: _enc_objref,
    PointerDesc: _enc_pointer,
}


def _encoder_for(v: Any) -> _Encoder:
    # Subclasses: tensor subclasses (Parameter), int/float subclasses (IntEnum, numpy float64),
    # named tuples (torch.return_types). Anything else is refused.
    if isinstance(v, torch.Tensor):
        return _enc_tensor
    if isinstance(v, bool):
        return _enc_bool
    if isinstance(v, int):
        return _enc_int
    if isinstance(v, float):
        return _enc_float
    if isinstance(v, torch.Size):
        return _enc_size
    if isinstance(v, tuple):
        return _enc_tuple
    tv = type(v)
    raise SerializationError(f"values of type {tv.__module__}.{tv.__qualname__} cannot be sent to a worker")


def _register_struct_encoder(cls: type[Struct]) -> None:
    _FIELDS[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    _ENCODERS[cls] = _enc_struct


# ----------------------------------------------------------------------------- decoding


_unpack_i64 = _I64.unpack_from
_unpack_u64 = _U64.unpack_from
_unpack_u32 = _U32.unpack_from
_unpack_f64 = _F64.unpack_from


class _Reader:
    """A cursor over one frame. Every read checks the bytes left before it advances."""

    __slots__ = ("buf", "view", "pos", "end", "tensors", "charged", "budget")

    def __init__(self, buf: "bytes | memoryview") -> None:
        self.buf = buf
        self.view = memoryview(buf)  # made once: a memoryview per tensor payload was a third of a 0-d tensor's cost
        self.pos = 0
        self.end = len(buf)
        self.tensors = 0
        self.charged = 0  # bytes the decoded values will take (an upper bound), checked before they exist
        self.budget = limits.current()

    def charge(self, n: int) -> None:
        self.charged = c = self.charged + n
        if c > self.budget.max_bytes:
            self.budget.check(c, f"decoding a message of {self.end} bytes (it holds {self.tensors} tensors so far)")

    def _short(self, n: int) -> SerializationError:
        return SerializationError(f"truncated message: needed {n} bytes at offset {self.pos}, {self.end - self.pos} left")

    def take(self, n: int) -> memoryview:
        p = self.pos
        if n < 0 or n > self.end - p:
            raise self._short(n)
        self.pos = p + n
        return self.view[p : p + n]

    def u8(self) -> int:
        p = self.pos
        if p >= self.end:
            raise self._short(1)
        self.pos = p + 1
        return self.buf[p]

    def unpack(self, s: struct.Struct) -> Any:
        p = self.pos
        if s.size > self.end - p:
            raise self._short(s.size)
        self.pos = p + s.size
        return s.unpack_from(self.buf, p)[0]

    def count(self) -> int:
        p = self.pos
        if p + 4 > self.end:
            raise self._short(4)
        n: int = _unpack_u32(self.buf, p)[0]
        self.pos = p = p + 4
        if n > self.end - p:  # every element takes at least one byte
            raise SerializationError(f"length {n} at offset {p} exceeds the {self.end - p} bytes left")
        return n

    def elements(self) -> int:
        """A container's element count, charged before its elements are decoded."""
        n = self.count()
        self.charge((n + 1) * OBJECT_COST)
        return n

    def string(self) -> str:
        n = self.count()
        if n > MAX_STR_BYTES:
            raise SerializationError(f"string of {n} bytes exceeds {MAX_STR_BYTES}")
        p = self.pos
        self.pos = p + n
        try:
            return str(self.buf[p : p + n], "utf-8")
        except UnicodeDecodeError as e:
            raise SerializationError(f"invalid utf-8 in string: {e}") from None


def decode(data: "bytes | bytearray | memoryview | np.ndarray | list[Any] | tuple[Any, ...]") -> Any:
    """Decodes one frame made by :func:`encode` (or the pieces of :func:`encode_parts`, joined);
    raises :class:`SerializationError` on bad input.

    A large (≥ :data:`LARGE_PAYLOAD`) writable ``memoryview`` or ``uint8`` numpy array, e.g.
    a message received by ``_native.Connection``, is read in place: large tensor payloads
    become tensors sharing its memory when aligned. Other inputs are copied first.
    """
    if isinstance(data, (list, tuple)):  # the pieces of encode_parts
        try:
            data = b"".join(data)
        except TypeError:
            raise SerializationError("expected bytes-like pieces") from None
    if not isinstance(data, bytes):
        if isinstance(data, np.ndarray):
            if data.dtype != np.uint8 or data.ndim != 1:
                raise SerializationError(f"expected a 1-d uint8 array, got {data.dtype} of rank {data.ndim}")
            data = data.data  # its memory, as a memoryview
        if not isinstance(data, (bytearray, memoryview)):
            raise SerializationError(f"expected bytes, got {type(data).__name__}")
        if type(data) is memoryview and not data.readonly and data.nbytes >= LARGE_PAYLOAD and data.c_contiguous:
            data = data.cast("B") if data.format != "B" else data
        else:
            data = bytes(data)
    if len(data) > MAX_FRAME_BYTES:
        raise SerializationError(f"message of {len(data)} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    if len(data) < 5 or data[:4] != MAGIC:
        raise SerializationError("not a syft_mpc message (bad magic)")
    if data[4] != VERSION:
        raise SerializationError(f"unsupported message version {data[4]} (this side speaks version {VERSION})")
    r = _Reader(data)
    r.pos = 5
    value = _dec(r, 0)
    if r.pos != r.end:
        raise SerializationError(f"{r.end - r.pos} trailing bytes after the message")
    return value


def _dec(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise SerializationError(f"message nested deeper than {MAX_DEPTH} levels")
    p = r.pos
    if p >= r.end:
        raise r._short(1)
    tag = r.buf[p]
    r.pos = p + 1
    if tag < _N_DECODERS:
        return _DECODERS[tag](r, depth)
    raise SerializationError(f"unknown value tag {tag:#x} at offset {p}")


def _dec_int(r: _Reader, depth: int) -> Any:
    p = r.pos
    if p + 8 > r.end:
        raise r._short(8)
    r.pos = p + 8
    return _unpack_i64(r.buf, p)[0]


def _dec_float(r: _Reader, depth: int) -> Any:
    p = r.pos
    if p + 8 > r.end:
        raise r._short(8)
    r.pos = p + 8
    return _unpack_f64(r.buf, p)[0]


def _dec_complex(r: _Reader, depth: int) -> Any:
    re_ = r.unpack(_F64)
    return complex(re_, r.unpack(_F64))


def _dec_str(r: _Reader, depth: int) -> Any:
    return r.string()


def _dec_bytes(r: _Reader, depth: int) -> Any:
    return bytes(r.take(r.count()))


def _dec_list(r: _Reader, depth: int) -> Any:
    depth += 1
    return [_dec(r, depth) for _ in range(r.elements())]


def _dec_tuple(r: _Reader, depth: int) -> Any:
    depth += 1
    return tuple([_dec(r, depth) for _ in range(r.elements())])


def _dec_dict(r: _Reader, depth: int) -> Any:
    d: dict[Any, Any] = {}
    for _ in range(r.elements()):
        k = _dec(r, depth + 1)
        if type(k) is not str and type(k) is not int:
            raise SerializationError(f"dict keys must be str or int, not {type(k).__name__}")
        d[k] = _dec(r, depth + 1)
    return d


def _dec_slice(r: _Reader, depth: int) -> Any:
    parts = [_dec(r, depth + 1) for _ in range(3)]
    if any(p is not None and type(p) is not int for p in parts):
        raise SerializationError("slice bounds must be None or int")
    return slice(*parts)


def _dec_dtype(r: _Reader, depth: int) -> Any:
    return dtype_from_code(r.u8())


def _dec_size(r: _Reader, depth: int) -> Any:
    n = r.u8()
    if n > MAX_NDIM:
        raise SerializationError(f"Size of rank {n} exceeds {MAX_NDIM}")
    dims = [int(r.unpack(_I64)) for _ in range(n)]
    if any(d < 0 for d in dims):
        raise SerializationError(f"negative dimension in Size {dims}")
    return torch.Size(dims)


def _dec_device(r: _Reader, depth: int) -> Any:
    s = r.string()
    try:
        return torch.device(s)
    except (RuntimeError, ValueError, TypeError):
        raise SerializationError(f"invalid device {s!r}") from None


def _dec_memfmt(r: _Reader, depth: int) -> Any:
    code = r.u8()
    if code not in _MEMFMTS:
        raise SerializationError(f"unknown memory format code {code}")
    return _MEMFMTS[code]


def _dec_tensor(r: _Reader, depth: int) -> torch.Tensor:
    code = r.u8()
    if code not in _DTYPES:
        raise SerializationError(f"unknown dtype code {code}")
    dtype, npdtype = _DTYPES[code]
    flags = r.u8()
    if flags & ~(FLAG_REQUIRES_GRAD | FLAG_HAS_GRAD | FLAG_PADDED):
        raise SerializationError(f"unknown tensor flags {flags:#x}")
    ndim = r.u8()
    if ndim > MAX_NDIM:
        raise SerializationError(f"tensor rank {ndim} exceeds {MAX_NDIM}")
    shape = [int(r.unpack(_U64)) for _ in range(ndim)]
    nbytes = int(r.unpack(_U64))
    numel = 1
    strided = 1  # torch's largest stride: the product of the dimensions, zeros counted as 1
    for d in shape:
        numel *= d
        strided *= d or 1
    if numel * npdtype.itemsize != nbytes:
        raise SerializationError(f"tensor of shape {shape} and dtype {dtype} cannot hold {nbytes} bytes")
    if strided > _I64_MAX:  # only possible with a zero dimension: nbytes bounds the others
        raise SerializationError(f"tensor dimensions {shape} overflow 64-bit strides")
    if flags & FLAG_PADDED:
        pad = r.u8()
        if pad > 7:
            raise SerializationError(f"tensor padding of {pad} bytes (at most 7)")
        r.take(pad)
    raw = r.take(nbytes)
    r.tensors += 1
    if r.tensors > MAX_TENSORS:
        raise SerializationError(
            f"a message holds more than {MAX_TENSORS} tensors; send fewer, larger tensors (stack them)"
        )
    if dtype == torch.bool and numel and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise SerializationError("a bool tensor holds bytes other than 0 and 1")
    in_place = nbytes >= LARGE_PAYLOAD and not raw.readonly and _LITTLE
    r.charge(TENSOR_COST + (0 if in_place else nbytes))
    if numel:
        arr = np.frombuffer(raw, dtype=npdtype, count=numel)
        # In place only for large payloads of a writable received buffer (see decode).
        if not (in_place and arr.flags.aligned):
            if in_place:  # misaligned after all: copied, so charged
                r.charge(nbytes)
            arr = arr.copy()
        if not _LITTLE:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        t = torch.from_numpy(arr)
        if dtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        if ndim != 1:
            t = t.reshape(shape)
    else:  # no elements: nothing to allocate, whatever the dimensions say
        t = torch.empty(shape, dtype=dtype)
    if flags & FLAG_REQUIRES_GRAD:
        if not (dtype.is_floating_point or dtype.is_complex):
            raise SerializationError(f"a tensor of dtype {dtype} cannot require grad")
        t.requires_grad_(True)
    if flags & FLAG_HAS_GRAD:
        if depth >= MAX_DEPTH or r.u8() != T_TENSOR:
            raise SerializationError("a tensor's grad must be a tensor")
        grad = _dec_tensor(r, depth + 1)
        if not flags & FLAG_REQUIRES_GRAD or grad.shape != t.shape or grad.dtype != t.dtype:
            raise SerializationError("a tensor's grad must match its shape and dtype and need requires_grad")
        t.grad = grad
    return t


def _dec_objref(r: _Reader, depth: int) -> Any:
    p = r.pos
    if p + 8 > r.end:
        raise r._short(8)
    r.pos = p + 8
    return ObjRef(_unpack_u64(r.buf, p)[0])


def _dec_pointer(r: _Reader, depth: int) -> Any:
    loc = r.string()
    pid = int(r.unpack(_U64))
    shape = _dec(r, depth + 1)
    if shape is not None and not isinstance(shape, torch.Size):
        raise SerializationError("a pointer's shape must be None or a Size")
    dt = dtype_from_code(r.u8())
    rg = r.u8()
    if rg > 1:
        raise SerializationError("bad requires_grad byte in pointer")
    return PointerDesc(loc, pid, shape, dt, bool(rg))


def _dec_struct(r: _Reader, depth: int) -> Struct:
    kind = int(r.unpack(_U16))
    cls = _STRUCTS.get(kind)
    if cls is None:
        raise SerializationError(f"unknown message kind {kind}")
    n = r.u8()
    spec = cls.SCHEMA
    if n != len(spec):
        raise SerializationError(f"{cls.__name__} has {len(spec)} fields, the message has {n}")
    depth += 1
    values = [_dec(r, depth) for _ in spec]
    for i, (v, types) in enumerate(zip(values, spec)):
        if type(v) not in types and not isinstance(v, types):
            raise SerializationError(
                f"{cls.__name__}: field {i} has type {type(v).__name__}, "
                f"expected {' or '.join(t.__name__ for t in types)}"
            )
    obj = cls(*values)
    validate = _VALIDATORS.get(cls)
    if validate is not None:
        validate(obj)
    return obj


_ANY = (object,)


def _const(value: Any) -> Callable[[_Reader, int], Any]:
    return lambda r, depth: value


_DECODERS: list[Callable[[_Reader, int], Any]] = [
    _const(None),  # T_NONE
    _const(False),  # T_FALSE
    _const(True),  # T_TRUE
    _dec_int,
    _dec_float,
    _dec_complex,
    _dec_str,
    _dec_bytes,
    _dec_list,
    _dec_tuple,
    _dec_dict,
    _dec_slice,
    _dec_dtype,
    _const(Ellipsis),  # T_ELLIPSIS
    _dec_size,
    _dec_device,
    _dec_memfmt,
    _dec_tensor,
    _dec_objref,
    _dec_pointer,
    _dec_struct,
]
_N_DECODERS = len(_DECODERS)
assert _N_DECODERS == T_STRUCT + 1
