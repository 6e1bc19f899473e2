"""The browser's ring and codec (python/syft_mpc/net/static/*.mjs) against the Rust core and the Python codec.

Node runs the JavaScript (no packages): ``node --test tests/js/`` for its own tests, and
``tests/js/ring_cli.mjs`` on inputs made here, whose outputs must equal the Rust ring ops
(``_native.ring_*``), the fixed-point codec (``syft_mpc.fixed_point``) and ``serde.encode``
bit for bit.
"""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import torch

from syft_mpc import _native, fixed_point
from syft_mpc.remote import serde
from syft_mpc.remote.messages import Command, Envelope, Err, Fetch, Ok, Store
from syft_mpc.remote.serde import ObjRef, PointerDesc

ROOT = pathlib.Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (apt-get install nodejs)")


def test_node_unit_tests() -> None:
    r = subprocess.run([NODE, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=120)  # type: ignore[list-item]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_js_ring_matches_rust_and_codec_matches_python() -> None:
    rng = np.random.default_rng(7)
    edges = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**32, 2**32 - 1], dtype=np.uint64)
    a = np.concatenate([edges, rng.integers(0, 2**64 - 1, 500, dtype=np.uint64, endpoint=True)])
    b = np.concatenate([edges[::-1], rng.integers(0, 2**64 - 1, 500, dtype=np.uint64, endpoint=True)])
    xs = np.concatenate([
        [0.0, -0.0, 2.5 / 65536, -2.5 / 65536, 0.5 / 65536, -1.5 / 65536, 1e9, -1e9, 123.456789],
        rng.normal(0, 1000, 300),
    ])
    enc = np.concatenate([edges, rng.integers(0, 2**64 - 1, 300, dtype=np.uint64, endpoint=True)])
    frames = [
        serde.encode(Envelope("me", [1, 2**63 - 1], Store(5, torch.arange(12, dtype=torch.float32).reshape(3, 4)))),
        serde.encode(Envelope("alice", [], Command("Tensor.add", (ObjRef(3), 2.5, None), {"alpha": 2}, 9, True))),
        serde.encode(Envelope("me", [], Fetch(4, True))),
        serde.encode(Ok(PointerDesc("tab1", 17, torch.Size([2, 3]), torch.int64, False))),
        serde.encode(Err("ValueError", "bad ✓")),
        serde.encode(Ok({"k": [torch.tensor([-1, 2**62], dtype=torch.int64), (True, b"\x00\xff", -7)]})),
        serde.encode(Ok(torch.tensor([2**64 - 1, 0], dtype=torch.uint64))),
        b"SYMP\x01\x14\x01\x00\x09",  # an Envelope claiming 9 fields in 3 bytes
    ]
    inp = {
        "a": [format(int(v), "x") for v in a],
        "b": [format(int(v), "x") for v in b],
        "xs": xs.tolist(),
        "enc": [format(int(v), "x") for v in enc],
        "frames": [base64.b64encode(f).decode() for f in frames],
    }
    r = subprocess.run([NODE, "tests/js/ring_cli.mjs"], cwd=ROOT, input=json.dumps(inp), capture_output=True, text=True, timeout=120)  # type: ignore[list-item]
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    u64 = lambda hs: np.array([int(h, 16) for h in hs], dtype=np.uint64)  # noqa: E731
    np.testing.assert_array_equal(u64(out["add"]), _native.ring_add(a, b))
    np.testing.assert_array_equal(u64(out["sub"]), _native.ring_sub(a, b))
    np.testing.assert_array_equal(u64(out["mul"]), _native.ring_mul(a, b))
    np.testing.assert_array_equal(u64(out["neg"]), _native.ring_neg(a))
    np.testing.assert_array_equal(u64(out["reconstruct"]), a)
    expect_enc = fixed_point.to_ring(fixed_point.encode(torch.from_numpy(xs)))
    np.testing.assert_array_equal(u64(out["encode"]), expect_enc)
    expect_dec = fixed_point.decode(fixed_point.from_ring(enc), dtype=torch.float64).numpy()
    np.testing.assert_array_equal(np.array(out["decode"]), expect_dec)
    for f, back in zip(frames[:-1], out["frames"][:-1]):
        assert base64.b64decode(back) == f
    assert out["frames"][-1].startswith("error: truncated")
