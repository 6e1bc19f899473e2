"""Memory budgets: every allocation whose size a peer's request chooses is checked here first.

A worker answers requests from clients that hold its token but may be buggy or hostile: one
``shared (2^17 x 1) @ public (1 x 2^17)`` asks for 128 GiB. Each worker has a
:class:`MemoryBudget` (``syft-mpc worker --max-memory``, ``$SYFT_MPC_MAX_MEMORY``, or the
``max_memory`` keyword of a worker); the code that would allocate on a request's behalf asks
:meth:`MemoryBudget.check` with the size first, and gets a :class:`~syft_mpc.errors.ResourceLimitError`
that names the request and the limit instead of an allocation failure, an abort, or the
kernel's OOM killer. The sizes come from shapes (:func:`nbytes`, overflow-checked) or from
a dry run of the operation on ``meta`` tensors (:func:`meta_output_bytes`), never from
allocating and seeing.

The budget bounds two things:

* each request's own allocations (a decoded message, an operation's result and working
  buffers) may not exceed ``max_bytes``;
* a worker process (``track_process=True``, what ``syft-mpc worker`` uses) also refuses an
  allocation of at least :data:`TRACK_MIN_BYTES` when its resident memory has grown since
  it started by so much that the allocation would take it past ``max_bytes``.

    >>> from syft_mpc.limits import MemoryBudget, parse_size
    >>> b = MemoryBudget(parse_size("64M"), name="worker bob")
    >>> b.check(1 << 20, "a test")
    >>> try:
    ...     b.check(1 << 30, "matmul of (32768, 1) @ (1, 32768)")
    ... except MemoryError as e:
    ...     print(type(e).__name__)
    ResourceLimitError
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from syft_mpc.errors import ResourceLimitError
from syft_mpc.net.env import ENV_MAX_MEMORY

if TYPE_CHECKING:
    import torch
# torch is imported where the meta dry run needs it: `syft-mpc worker` parses --max-memory
# before it binds its port, and must not wait for torch to load for that.

__all__ = [
    "DEFAULT_FRACTION",
    "MemoryBudget",
    "TRACK_MIN_BYTES",
    "current",
    "default_max_memory",
    "format_size",
    "meta_output_bytes",
    "nbytes",
    "parse_size",
    "rss_bytes",
    "trim_heap",
    "using",
]

DEFAULT_FRACTION = 0.5
"""Without ``--max-memory`` or ``$SYFT_MPC_MAX_MEMORY``, a worker's budget is this fraction of the machine's RAM."""
TRACK_MIN_BYTES = 1 << 20
"""Allocations below this size skip the resident-memory reading (it costs a read of /proc)."""
_MIN_DEFAULT = 256 << 20
_I64_MAX = (1 << 63) - 1
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: "str | int") -> int:
    """Bytes from ``"4G"``, ``"512MiB"``, ``"1.5g"`` or ``"1048576"`` (binary units); raises ValueError."""
    if isinstance(text, int) and not isinstance(text, bool):
        n = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
        if m is None:
            raise ValueError(f"cannot read a memory size from {text!r}: use bytes or a number with K, M, G or T (e.g. 4G)")
        n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise ValueError(f"a memory budget must be positive, got {text!r}")
    return n


def format_size(n: int) -> str:
    """``n`` bytes for people: ``"128.0 GiB"``."""
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if f < 1024 or unit == "PiB":
            return f"{int(f)} B" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{n} B"  # pragma: no cover


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume 8 GiB
        return 8 << 30


def default_max_memory() -> int:
    """``$SYFT_MPC_MAX_MEMORY`` if set, else :data:`DEFAULT_FRACTION` of the machine's RAM (at least 256 MiB)."""
    env = os.environ.get(ENV_MAX_MEMORY)
    if env:
        return parse_size(env)
    return max(_MIN_DEFAULT, int(_physical_memory() * DEFAULT_FRACTION))


def rss_bytes() -> int:
    """This process's resident memory (0 where /proc is missing: then only per-request limits apply)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_libc: Any = None


def trim_heap() -> None:
    """Gives the heap's free memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).
    A message that decoded into many small objects leaves their memory in malloc's free
    lists, in every thread's arena that touched it: ten 1 M-tensor messages kept +250 MB
    resident until this was called after each large message."""
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim  # noqa: B018  (a libc without it: no trimming)
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


try:
    _PAGE = int(os.sysconf("SC_PAGE_SIZE"))
except (ValueError, OSError, AttributeError):
    _PAGE = 4096


class MemoryBudget:
    """The memory one worker may spend on its peers' requests.

    Args:
        max_bytes: the budget (default :func:`default_max_memory`).
        name: who owns it, for error messages (``"worker bob"``).
        track_process: also count how much this process's resident memory grew since the
            budget was made (a worker process: its stored objects count against it too).
    """

    __slots__ = ("max_bytes", "name", "baseline")

    def __init__(self, max_bytes: "int | str | None" = None, *, name: str = "this worker", track_process: bool = False) -> None:
        self.max_bytes = default_max_memory() if max_bytes is None else parse_size(max_bytes)
        self.name = name
        self.baseline = rss_bytes() if track_process else None

    def __repr__(self) -> str:
        return f"MemoryBudget({format_size(self.max_bytes)} for {self.name})"

    def used(self) -> int:
        """Bytes this process's resident memory grew since the budget was made (0 when not tracked)."""
        return 0 if self.baseline is None else max(0, rss_bytes() - self.baseline)

    def check(self, n: int, what: str) -> None:
        """Raises :class:`ResourceLimitError` unless ``n`` more bytes, for ``what``, fit in the budget."""
        if n > self.max_bytes:
            raise ResourceLimitError(
                f"{what} needs {format_size(n)}, more than the memory budget of {self.name} "
                f"({format_size(self.max_bytes)}); nothing was allocated. Make the operands smaller or split "
                "the operation, or start the worker with a larger --max-memory (or $SYFT_MPC_MAX_MEMORY)"
            )
        if self.baseline is not None and n >= TRACK_MIN_BYTES:
            used = self.used()
            if used + n > self.max_bytes:
                raise ResourceLimitError(
                    f"{what} needs {format_size(n)}, but {self.name} already uses {format_size(used)} of its "
                    f"memory budget of {format_size(self.max_bytes)}; nothing was allocated. Free objects on the "
                    "worker (drop pointers, .get() results), make the operands smaller, or start the worker with "
                    "a larger --max-memory"
                )


_default: "MemoryBudget | None" = None
_CURRENT: "contextvars.ContextVar[MemoryBudget | None]" = contextvars.ContextVar("syft_mpc_memory_budget", default=None)


def current() -> MemoryBudget:
    """The budget of the request this thread is running (set by :func:`using`), else the process default."""
    b = _CURRENT.get()
    if b is not None:
        return b
    global _default
    if _default is None:
        _default = MemoryBudget(name="this process")
    return _default


@contextlib.contextmanager
def using(budget: MemoryBudget) -> Iterator[MemoryBudget]:
    """Makes ``budget`` the :func:`current` one in this thread for the block (a worker answering a request)."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def nbytes(shape: Sequence[int], itemsize: int, what: str) -> int:
    """Bytes of a tensor of ``shape``: the product of the dimensions, refused with
    :class:`ResourceLimitError` when it does not fit 64-bit sizes (a negative dimension is
    the caller's error to report)."""
    n = itemsize
    for d in shape:
        n *= max(int(d), 0)
        if n > _I64_MAX:
            raise ResourceLimitError(
                f"{what}: a tensor of shape {tuple(int(x) for x in shape)} has more bytes than fit in 64 bits; "
                "make the operands smaller"
            )
    return n


def _to_meta(v: Any, seen: "dict[int, torch.Tensor]") -> Any:
    import torch

    if isinstance(v, torch.Tensor):
        m = torch.empty_strided(v.size(), v.stride(), dtype=v.dtype, device="meta")
        seen[id(m)] = m
        return m
    tv = type(v)
    if tv is tuple or tv is list:
        return tv(_to_meta(x, seen) for x in v)
    if tv is dict:
        return {k: _to_meta(x, seen) for k, x in v.items()}
    return v


def _new_bytes(v: Any, inputs: "dict[int, torch.Tensor]") -> int:
    import torch

    if isinstance(v, torch.Tensor):
        # A view (or an in-place op's input) shares memory that already exists.
        if id(v) in inputs or v._base is not None:
            return 0
        return v.nelement() * v.element_size()
    if isinstance(v, (tuple, list)):
        return sum(_new_bytes(x, inputs) for x in v)
    return 0


def meta_output_bytes(fn: Callable[..., Any], args: Any, kwargs: Any) -> "int | None":
    """Bytes of the new tensors ``fn(*args, **kwargs)`` would return, found by running it on
    ``meta`` tensors of the same shapes, dtypes and strides (nothing is allocated or computed).
    Views of the inputs count 0. None when the dry run fails (an output whose size depends
    on the data, e.g. ``nonzero``; or the real call would fail too)."""
    import torch

    inputs: "dict[int, torch.Tensor]" = {}
    try:
        margs = _to_meta(tuple(args), inputs)
        mkwargs = _to_meta(dict(kwargs), inputs)
        with torch.no_grad():
            out = fn(*margs, **mkwargs)
        return _new_bytes(out, inputs)
    except Exception:
        return None
