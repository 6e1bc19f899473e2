"""Packaging: exports, stubs that match the binary, and an import that leaves torch alone."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import syft_mpc as sy
from syft_mpc import errors


def test_version_and_exports() -> None:
    assert sy.__version__ == sy._native.__version__
    for name in sy.__all__:
        assert hasattr(sy, name), name
    assert sy.DEFAULT_FRAC_BITS == 16


def test_error_hierarchy() -> None:
    # One tree, declared in Python: the native module raises these very classes and defines none.
    assert not hasattr(sy._native, "MpcError") and not hasattr(sy._native, "ShapeError")
    with pytest.raises(errors.ShapeError) as info:
        sy.ring_add(np.zeros(2, np.uint64), np.zeros(3, np.uint64))
    assert type(info.value) is errors.ShapeError
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert cls.__module__ == "syft_mpc.errors" and issubclass(cls, errors.MpcError), name
        assert getattr(sy, name, cls) is cls, name
    assert issubclass(sy.ValidationError, RuntimeError) and issubclass(sy.UnsupportedModelError, ValueError)
    assert issubclass(sy.TransportError, sy.MpcError)
    assert issubclass(sy.PeerTimeout, sy.TransportError) and issubclass(sy.PeerTimeout, TimeoutError)
    assert issubclass(sy.PeerDisconnected, sy.TransportError) and issubclass(sy.PeerDisconnected, ConnectionError)
    assert issubclass(sy.AuthenticationError, sy.TransportError)
    assert issubclass(sy.WorkerBusy, sy.TransportError) and not issubclass(sy.WorkerBusy, sy.PeerDisconnected)
    assert issubclass(sy.ProtocolError, sy.MpcError)
    assert issubclass(sy.ShapeError, sy.MpcError) and issubclass(sy.ShapeError, ValueError)
    assert issubclass(sy.FixedPointError, sy.MpcError) and issubclass(sy.FixedPointError, ValueError)
    assert sy.ShapeError.__module__ == "syft_mpc.errors"


def test_errors_pickle_across_processes() -> None:
    try:
        sy.encode(np.array([np.nan]))
    except sy.FixedPointError as e:
        e2 = pickle.loads(pickle.dumps(e))
        assert type(e2) is sy.FixedPointError and str(e2) == str(e)


def test_import_does_not_modify_torch() -> None:
    pytest.importorskip("torch")
    code = textwrap.dedent(
        """
        import torch
        def snapshot():
            return (
                {k: id(v) for k, v in vars(torch).items()},
                {k: id(v) for k, v in vars(torch.Tensor).items()},
                {k: id(v) for k, v in vars(torch.nn.functional).items()},
                torch.overrides.has_torch_function_unary(torch.ones(1)),
            )
        before = snapshot()
        import syft_mpc, syft_mpc.mpc, syft_mpc.errors
        assert snapshot() == before, "importing syft_mpc changed torch"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_stubs_match_the_binary() -> None:
    pytest.importorskip("mypy")
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "syft_mpc._native"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_docstring_examples() -> None:
    import doctest

    import syft_mpc.errors
    import syft_mpc.mpc

    for mod in (sy, syft_mpc.mpc, syft_mpc.errors):
        res = doctest.testmod(mod, verbose=False)
        assert res.failed == 0, mod.__name__
