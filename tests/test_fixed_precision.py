"""Fixed-precision tensors: x.fix_prec() / .float_prec() (issue 5, stage 1)."""

from __future__ import annotations

import pytest
import torch

import syft_mpc as sy
from syft_mpc.encrypted.fixed_precision import FixedPrecisionTensor

hook = sy.TorchHook(torch)


def test_round_trip_default_precision() -> None:
    x = torch.tensor([0.5, -1.25, 3.0e4, -7.0e-5])
    fp = x.fix_prec()
    assert isinstance(fp, FixedPrecisionTensor)
    assert fp.base == 2 and fp.precision_fractional == 16
    assert fp.encoded.dtype == torch.int64
    assert torch.equal(fp.encoded[:3], torch.tensor([32768, -81920, 30000 * 65536]))
    assert torch.allclose(fp.float_prec(), x, atol=2**-16)
    assert torch.allclose(fp.float_precision(), x, atol=2**-16)


def test_base_10_pysyft_keywords() -> None:
    fp = torch.tensor([0.1, -2.345]).fix_precision(base=10, precision_fractional=3)
    assert fp.encoded.tolist() == [100, -2345]
    assert torch.allclose(fp.float_precision(), torch.tensor([0.1, -2.345]))


def test_ops_stay_fixed_point() -> None:
    a, b = torch.tensor([1.5, -2.0]), torch.tensor([0.25, 4.0])
    r = a.fix_prec() * b.fix_prec() + 1
    assert isinstance(r, FixedPrecisionTensor)
    assert torch.allclose(r.float_prec(), a * b + 1)
    s = a.fix_prec()
    s.add_(1)  # in place keeps the object
    assert torch.allclose(s.float_prec(), a + 1)


def test_errors_are_clear() -> None:
    with pytest.raises(TypeError, match="not in fixed precision"):
        torch.ones(2).float_prec()
    with pytest.raises(TypeError, match="already in fixed precision"):
        torch.ones(2).fix_prec().fix_prec()
    with pytest.raises(ValueError, match="fixed-point range|outside"):
        torch.tensor([1e20]).fix_prec()
    with pytest.raises(ValueError, match="different precisions"):
        _ = torch.ones(1).fix_prec() + torch.ones(1).fix_prec(precision_fractional=8)


def test_module_fix_precision_round_trip() -> None:
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    w = m.weight.detach().clone()
    m.fix_precision()
    assert isinstance(m.weight, FixedPrecisionTensor)
    m.float_precision()
    assert type(m.weight) is torch.nn.Parameter
    assert torch.allclose(m.weight, w, atol=2**-16)
