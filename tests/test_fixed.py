"""Fixed-point codec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import syft_mpc as sy


def test_negatives_decode_exactly() -> None:
    x = np.array([-1.5, -0.25, -1.0 / 65536, -3.0, 0.0, 1.5, 2.75, -12345.5])
    np.testing.assert_array_equal(sy.decode(sy.encode(x)), x)


def test_decimal_precision_3() -> None:
    x = np.array([-1.5, -0.001, -2.25, 3.141, 0.0, 1000.5])
    enc = sy.encode(x, base=10, precision=3)
    np.testing.assert_array_equal(enc.view(np.int64), np.array([-1500, -1, -2250, 3141, 0, 1000500]))
    np.testing.assert_array_equal(sy.decode(enc, base=10, precision=3), x)


def test_encoding_is_twos_complement_of_the_scaled_value() -> None:
    enc = sy.encode(np.array([1.0, -1.0, 0.5]))
    np.testing.assert_array_equal(enc.view(np.int64), [65536, -65536, 32768])


@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5), elements=st.floats(-1e9, 1e9)),
    st.integers(0, 32),
)
def test_round_trip_within_half_ulp(x: np.ndarray, bits: int) -> None:
    d = sy.decode(sy.encode(x, precision=bits), precision=bits)
    assert d.shape == x.shape and d.dtype == np.float64
    assert np.all(np.abs(d - x) <= 0.5 / 2**bits + 1e-9 * np.abs(x))


def test_limits() -> None:
    scale, limit = sy.fixed_point_info()
    assert scale == 2**16 and limit == 2.0**47
    sy.encode(np.array([limit * 0.999, -limit * 0.999]))
    with pytest.raises(sy.FixedPointError, match="outside the fixed-point range"):
        sy.encode(np.array([0.0, limit * 1.01]))
    with pytest.raises(sy.FixedPointError, match="NaN"):
        sy.encode(np.array([np.nan]))
    with pytest.raises(sy.FixedPointError):
        sy.encode(np.array([1.0]), base=3, precision=2)
    with pytest.raises(ValueError):  # FixedPointError is a ValueError
        sy.encode(np.array([np.inf]))


def test_decode_of_extreme_ring_values() -> None:
    raw = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64)
    d = sy.decode(raw)
    expected = np.array([0, 1, 2**63 - 1, -(2**63), -1], dtype=np.float64) / 2**16
    np.testing.assert_array_equal(d, expected)
