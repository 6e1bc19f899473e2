"""Memory a token holder can make a worker spend: real worker processes on 127.0.0.1, each
with a small budget (``--max-memory 256M``), so every refusal below happens before anything
large is allocated.

Each test is one finding of "workers that no client can take down": a request whose result
would not fit (an MPC product, a convolution with huge padding, a plaintext op) is refused
with a ResourceLimitError that names the request and the limit, and the share holders keep
serving; a message that decodes into too many objects is refused quickly and the worker's
memory comes back; an oversized error text still gets its answer; a bool tensor holding
other bytes than 0 and 1 is refused.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import ClassVar, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import syft_mpc as sy
from syft_mpc import _native, limits
from syft_mpc.errors import MpcError, RemoteError, ResourceLimitError, SerializationError
from syft_mpc.mpc_session import close_all_sessions
from syft_mpc.net.launch import LocalWorkers
from syft_mpc.remote import serde
from syft_mpc.remote.messages import Command, Envelope, Err, GetAttr, SetAttr, new_id
from syft_mpc.remote.workers import MAX_ERROR_CHARS, register_handler

hook = sy.TorchHook(torch)
BUDGET = "256M"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalWorkers]:
    with LocalWorkers(["bob", "alice", "carol"], grace_s=1.0, quiet=True, extra_args=["--max-memory", BUDGET]) as c:
        yield c
    close_all_sessions()


def connect(c: LocalWorkers, name: str, **kw: object) -> sy.SocketWorker:
    return sy.SocketWorker(hook, id=name, host="127.0.0.1", port=c.port(name), token=c.token, **kw)  # type: ignore[arg-type]


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_serving(c: LocalWorkers, *names: str) -> None:
    """Every named worker process is alive and answers an honest remote op."""
    for name in names:
        assert c.procs[name].poll() is None, f"worker {name} died"
        w = connect(c, name)
        x, y = torch.tensor([1.0, 2.0]).send(w), torch.tensor([3.0, 4.0]).send(w)
        assert torch.equal((x + y).get(), torch.tensor([4.0, 6.0]))


def test_shared_times_public_outer_product_is_refused_and_holders_keep_serving(cluster: LocalWorkers) -> None:
    """Finding 1: (2^17 x 1) shares @ a public (1 x 2^17) asks each holder for 128 GiB
    (matmul_public); it used to abort both. Now: a clear error, and both keep serving."""
    bob, alice, carol = (connect(cluster, n) for n in ("bob", "alice", "carol"))
    x = torch.ones(1 << 17, 1, dtype=torch.long).share(bob, alice, crypto_provider=carol)
    with pytest.raises(RemoteError, match=r"matmul_public.*\(131072, 1\).*memory budget of worker (bob|alice) \(256\.0 MiB\)") as e:
        (x @ torch.ones(1, 1 << 17, dtype=torch.long)).get()
    assert isinstance(e.value, MemoryError) and "--max-memory" in str(e.value)
    assert_serving(cluster, "bob", "alice")
    # The shares survived too, and MPC goes on.
    y = torch.full((1 << 17, 1), 2, dtype=torch.long).share(bob, alice, crypto_provider=carol)
    assert torch.equal((x + y).get()[:3], torch.full((3, 1), 3))


def test_interactive_products_too_large_are_refused(cluster: LocalWorkers) -> None:
    """Shared @ shared and a shared convolution with padding 65,536 (137 GB of output):
    refused by each holder before the Beaver product starts; padding 2^62: a clear error,
    not a panic; the session recovers."""
    bob, alice, carol = (connect(cluster, n) for n in ("bob", "alice", "carol"))
    a = torch.ones(1 << 16, 1).fix_prec().share(bob, alice, crypto_provider=carol)
    b = torch.ones(1, 1 << 16).fix_prec().share(bob, alice, crypto_provider=carol)
    with pytest.raises(MpcError, match="memory budget"):
        (a @ b).get()
    img = torch.ones(1, 1, 2, 2).fix_prec().share(bob, alice, crypto_provider=carol)
    w = torch.ones(1, 1, 1, 1).fix_prec().share(bob, alice, crypto_provider=carol)
    with pytest.raises(MpcError, match="memory budget"):
        F.conv2d(img, w, padding=65_536).get()
    # Padding 2^62 overflowed the kernel's size arithmetic (a panic that dropped the connection).
    with pytest.raises(MpcError, match="conv2d: output.*more elements than fit"):
        F.conv2d(img, w, padding=1 << 62).get()
    assert_serving(cluster, "bob", "alice", "carol")
    c = torch.tensor([1.5, -2.0]).fix_prec().share(bob, alice, crypto_provider=carol)
    torch.testing.assert_close((c * c).get().float_prec(), torch.tensor([2.25, 4.0]), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda x, y: x @ y, id="outer-matmul"),
        pytest.param(lambda x, y: x + y, id="broadcast-add"),
        pytest.param(lambda x, y: x.repeat(1, 1 << 20), id="repeat"),
        pytest.param(lambda x, y: torch.cat([x] * 4096), id="cat-one-operand-many-times"),
        pytest.param(lambda x, y: F.pad(x, (0, 1 << 30)), id="pad"),
        pytest.param(lambda x, y: x.expand(1 << 17, 1 << 17).get(), id="get-of-expanded-view"),
        pytest.param(lambda x, y: F.one_hot(torch.tensor([1 << 40]).send(x.location)), id="one-hot-data-dependent"),
        pytest.param(lambda x, y: torch.tensor([1, 2]).send(x.location).repeat_interleave(1 << 40), id="repeat-interleave"),
        pytest.param(lambda x, y: F.conv2d(torch.ones(1, 1, 2, 2).send(x.location), torch.ones(1, 1, 1, 1).send(x.location), padding=65_536), id="conv2d-padding"),
    ],
)
def test_plaintext_ops_with_huge_results_are_refused(cluster: LocalWorkers, make: object) -> None:
    bob = connect(cluster, "bob")
    x, y = torch.ones(1 << 17, 1).send(bob), torch.ones(1, 1 << 17).send(bob)
    with pytest.raises(RemoteError, match=r"memory budget of worker bob \(256\.0 MiB\)") as e:
        r = make(x, y)  # type: ignore[operator]
        bob.sync()  # an op posted without waiting reports its failure here
        if isinstance(r, sy.PointerTensor):
            r.get()
    assert isinstance(e.value, MemoryError)
    assert_serving(cluster, "bob")


def test_ring_kernels_report_sizes_that_cannot_exist() -> None:
    """The Rust kernels size their outputs with checked arithmetic and allocate fallibly:
    an impossible size is a ResourceLimitError (or a ShapeError for impossible geometry),
    never a panic (a BaseException) or an abort."""
    empty = np.zeros((1 << 40, 0), np.uint64)
    with pytest.raises(ResourceLimitError, match="matmul: output"):
        sy.ring_matmul(empty, np.zeros((0, 1 << 40), np.uint64))
    with pytest.raises(ResourceLimitError, match="bmm: output"):
        sy.ring_matmul(np.zeros((1 << 30, 1 << 20, 0), np.uint64), np.zeros((1 << 30, 0, 1 << 20), np.uint64))
    x, w = np.ones((1, 1, 2, 2), np.uint64), np.ones((1, 1, 1, 1), np.uint64)
    for pad in (1 << 62, (1 << 63) - 1):
        with pytest.raises(MpcError, match="conv2d"):
            _native.ring_conv2d(x, w, padding=(pad, pad))
    assert _native.ring_conv2d(x, w, padding=(1, 1)).shape == (1, 1, 4, 4)


class _Panic(BaseException):
    """Not an Exception, like pyo3's PanicException (what a Rust panic raises in Python)."""


def test_a_base_exception_in_a_handler_becomes_an_error_answer() -> None:
    """Last line of defence: whatever still panics in Rust becomes an error reply."""

    @dataclass
    class Boom(serde.Struct):
        KIND: ClassVar[int] = 65001
        SCHEMA: ClassVar[tuple[tuple[type, ...], ...]] = ()

    serde.register(Boom)

    def boom(worker: object, body: object) -> tuple[object, None]:
        raise _Panic("called `Option::unwrap()` on a `None` value")

    register_handler(Boom, boom)
    w = sy.VirtualWorker(hook, id="panicky")
    reply = serde.decode(w.handle(serde.encode(Envelope("me", [], Boom()))))
    assert isinstance(reply, Err) and reply.err_type == "_Panic" and "unwrap" in reply.message
    assert torch.equal(torch.ones(2).send(w).get(), torch.ones(2))


def _many_tensor_frame(n: int) -> bytes:
    """An Envelope whose body is a Command with ``n`` 0-d tensors as arguments, built from
    the bytes of one (encoding 1 M tensors in Python would take the test seconds)."""
    t = torch.tensor(1.0)
    one = serde.encode(t)[5:]
    frame = serde.encode(Envelope("me", [], Command("torch.no_such_op", (t,), {}, new_id(), False)))
    head = bytes([serde.T_TUPLE]) + struct.pack("<I", 1) + one
    i = frame.index(head)
    return frame[:i] + bytes([serde.T_TUPLE]) + struct.pack("<I", n) + one * n + frame[i + len(head) :]


def test_decoding_is_bounded_in_objects_and_memory_returns(cluster: LocalWorkers) -> None:
    """Finding 5: 1 M 0-d tensors in a 13 MB message cost +1.25 GB and 8-10 s to decode.
    Now the decoder stops at serde.MAX_TENSORS, and ten such messages leave the worker's
    memory where it was (it grew by +2.3 GB before)."""
    frame = _many_tensor_frame(1_000_000)
    assert len(frame) < 16 << 20
    with pytest.raises(SerializationError, match=f"more than {serde.MAX_TENSORS} tensors"):
        serde.decode(frame)
    bob = connect(cluster, "bob")
    pid = cluster.procs["bob"].pid
    bob.sync()
    t0 = time.monotonic()
    reply = serde.decode(bob._deliver(frame))
    refused_s = time.monotonic() - t0
    assert isinstance(reply, Err) and f"more than {serde.MAX_TENSORS} tensors" in reply.message
    assert refused_s < 5.0, refused_s  # a fraction of the cap's cost; was 8-10 s for the whole message
    before = rss_kb(pid)
    for _ in range(10):
        bob = connect(cluster, "bob")  # the worker closes a connection after a malformed message
        reply = serde.decode(bob._deliver(frame))
        assert isinstance(reply, Err) and f"more than {serde.MAX_TENSORS} tensors" in reply.message
    grown_mb = (rss_kb(pid) - before) / 1024
    assert grown_mb < 64, f"worker RSS grew {grown_mb:.0f} MB after 10 messages of 1 M tensors"
    assert_serving(cluster, "bob")


def test_decoded_containers_are_charged_against_the_budget() -> None:
    """A list of 200 k empty lists is 1 MB on the wire and ~13 MB decoded: with an 8 MiB
    budget it is refused before its elements are built."""
    n = 200_000
    frame = serde.encode(None)[:5] + bytes([serde.T_LIST]) + struct.pack("<I", n) + serde.encode([])[5:] * n
    with limits.using(limits.MemoryBudget("8M", name="worker test")):
        with pytest.raises(ResourceLimitError, match=r"decoding a message of \d+ bytes.*worker test \(8\.0 MiB\)"):
            serde.decode(frame)
    assert len(serde.decode(frame)) == n  # the default budget allows it


def test_bool_tensor_with_other_bytes_is_refused(cluster: LocalWorkers) -> None:
    """Finding 7: a bool tensor holding byte 7 was accepted (torch then reads it as True or
    not depending on the kernel)."""
    good = serde.encode(torch.tensor([True, False, True]))
    bad = good[:-3] + bytes([1, 7, 1])
    assert torch.equal(serde.decode(good), torch.tensor([True, False, True]))
    with pytest.raises(SerializationError, match="bool tensor"):
        serde.decode(bad)
    bob = connect(cluster, "bob")
    frame = serde.encode(Envelope("me", [], Command("torch.add", (torch.tensor([True, False, True]),), {}, new_id(), False)))
    i = frame.index(bytes([1, 0, 1]))
    reply = serde.decode(bob._deliver(frame[:i] + bytes([1, 7, 1]) + frame[i + 3 :]))
    assert isinstance(reply, Err) and "bool tensor" in reply.message
    assert_serving(cluster, "bob")


def test_error_text_over_16_mib_still_gets_an_answer(cluster: LocalWorkers) -> None:
    """Finding 7: GetAttr with a 16 MiB attribute name fails with a message over the 16 MiB
    string limit; encoding that reply raised in handle_envelope and the client got nothing."""
    bob = connect(cluster, "bob")
    x = torch.ones(2).send(bob)
    name = "a" * (serde.MAX_STR_BYTES - 16)
    reply = serde.decode(bob._deliver(serde.encode(Envelope("me", [], GetAttr(x.id_at_location, name, new_id())))))
    assert isinstance(reply, Err) and reply.err_type == "UnsupportedOperationError"
    assert len(reply.message) < MAX_ERROR_CHARS + 200 and "error message cut from" in reply.message
    assert torch.equal(x.get(), torch.ones(2))


def test_posted_request_error_over_64_kib_is_reported_by_sync(cluster: LocalWorkers) -> None:
    """Finding 7: a posted request's error over 64 KiB was dropped and sync answered Ok."""
    bob = connect(cluster, "bob")
    x = torch.ones(2).send(bob)
    sy.local_worker._send(bob, SetAttr(x.id_at_location, "b" * 100_000, 1.0))  # posted: no reply
    with pytest.raises(RemoteError, match=r"error message cut from 100\d+ .*cannot be set remotely.*earlier request sent without waiting"):
        bob.sync()
    assert torch.equal(x.get(), torch.ones(2))


def test_virtual_worker_takes_a_budget_and_the_cli_checks_it() -> None:
    w = sy.VirtualWorker(hook, id="small", max_memory="1M")
    assert w.memory_budget.max_bytes == 1 << 20
    p = torch.ones(1 << 10).send(w)
    with pytest.raises(RemoteError, match=r"memory budget of worker small \(1\.0 MiB\)"):
        p.reshape(-1, 1) * p  # (1024, 1024) float32: 4 MiB
    assert torch.equal((p * p).get(), torch.ones(1 << 10))
    with pytest.raises(ValueError, match="memory size"):
        limits.MemoryBudget("lots")
    out = subprocess.run(
        [sys.executable, "-m", "syft_mpc", "worker", "--id", "x", "--port", "0", "--max-memory", "lots"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "--max-memory" in out.stderr and "memory size" in out.stderr
