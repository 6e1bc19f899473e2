"""Coverage-guided fuzzing of the control-plane decoder (`syft_mpc.serde.decode`) with atheris.

    pip install atheris                      # wheels for CPython 3.11 on Linux x86-64
    python fuzz/python/fuzz_serde.py fuzz/work/serde fuzz/corpus/serde -max_total_time=300

Every input goes through `serde.decode` (which also builds the `messages` structs and runs
their validators); any exception other than `SerializationError` is a crash: atheris stops
and writes the input to `crash-<sha1>`. Add a crashing input to `fuzz/corpus/serde/` once it
is fixed; `tests/test_fuzz_serde.py` (hypothesis, part of the test suite) covers the same
decoder in bounded time. `--write-seeds DIR` writes the seed corpus (valid requests).
"""

from __future__ import annotations

import hashlib
import pathlib
import sys

import atheris

with atheris.instrument_imports(include=["syft_mpc"]):
    import torch

    from syft_mpc import messages, serde
    from syft_mpc.errors import SerializationError
    from syft_mpc.serde import ObjRef, PointerDesc


def seeds() -> list[bytes]:
    """Valid encodings of every request type, a hello and both replies."""
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_(True)
    t.grad = torch.ones(2, 3)
    bodies: "list[serde.Struct | None]" = [
        None,
        messages.Store(5, t),
        messages.Store(6, PointerDesc("alice", 9, torch.Size([2, 3]), torch.int64, False)),
        messages.Fetch(5, True),
        messages.Command("torch.add", (ObjRef(5), 2.5), {"alpha": 2}, 11, True),
        messages.Command("op.getitem", (ObjRef(5), (slice(0, 1), Ellipsis, None)), {}, 12, False),
        messages.GetAttr(5, "grad", 14),
        messages.SetAttr(5, "requires_grad", False),
        messages.Move(5, "alice", 15, True),
        messages.Ok({"k": [1, "x", torch.Size([1]), 3 + 4j, b"raw", torch.device("cpu")]}),
        messages.Err("RuntimeError", "boom"),
    ]
    out = [serde.encode(messages.Envelope("me", [1, 2], b)) for b in bodies]
    out.append(serde.encode({"uid": "0123abcd", "peers": {"alice": "127.0.0.1:8778"}}))
    return out


def test_one(data: bytes) -> None:
    try:
        serde.decode(data)
    except SerializationError:
        pass


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        d = pathlib.Path(sys.argv[2])
        d.mkdir(parents=True, exist_ok=True)
        for s in seeds():
            (d / hashlib.sha1(s).hexdigest()[:16]).write_bytes(s)
        return
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
