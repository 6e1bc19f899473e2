"""Ring kernels against numpy uint64 arithmetic (which wraps mod 2^64)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rand_u64
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import syft_mpc as sy

u64_arrays = hnp.arrays(
    np.uint64,
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    elements=st.integers(0, 2**64 - 1),
)


@given(st.data())
def test_elementwise_match_numpy(data: st.DataObject) -> None:
    a = data.draw(u64_arrays)
    b = data.draw(hnp.arrays(np.uint64, a.shape, elements=st.integers(0, 2**64 - 1)))
    np.testing.assert_array_equal(sy.ring_add(a, b), a + b)
    np.testing.assert_array_equal(sy.ring_sub(a, b), a - b)
    np.testing.assert_array_equal(sy.ring_mul(a, b), a * b)
    np.testing.assert_array_equal(sy.ring_neg(a), (np.uint64(0) - a).astype(np.uint64))
    k = data.draw(st.integers(0, 2**64 - 1))
    np.testing.assert_array_equal(sy.ring_scale(a, k), a * np.uint64(k))
    for f in (sy.ring_add, sy.ring_sub, sy.ring_mul):
        out = f(a, b)
        assert out.dtype == np.uint64 and out.shape == a.shape


@given(st.integers(0, 7), st.integers(0, 7), st.integers(0, 7), st.integers(0, 2**32))
def test_matmul_matches_numpy(m: int, k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rand_u64(rng, (m, k)), rand_u64(rng, (k, n))
    np.testing.assert_array_equal(sy.ring_matmul(a, b), a @ b)


@given(st.integers(0, 3), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 2**32))
def test_batched_matmul_matches_numpy(bt: int, m: int, k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rand_u64(rng, (bt, m, k)), rand_u64(rng, (bt, k, n))
    out = sy.ring_matmul(a, b)
    assert out.shape == (bt, m, n)
    np.testing.assert_array_equal(out, a @ b)


def test_large_matmul_uses_blocked_path(rng: np.random.Generator) -> None:
    a, b = rand_u64(rng, (257, 129)), rand_u64(rng, (129, 131))
    np.testing.assert_array_equal(sy.ring_matmul(a, b), a @ b)


def test_non_contiguous_inputs_are_read_in_logical_order(rng: np.random.Generator) -> None:
    a = rand_u64(rng, (6, 4))
    b = rand_u64(rng, (6, 5))
    np.testing.assert_array_equal(sy.ring_matmul(a.T, b), a.T @ b)  # Fortran-ordered view
    np.testing.assert_array_equal(sy.ring_add(a[::2], a[1::2]), a[::2] + a[1::2])
    np.testing.assert_array_equal(sy.ring_transpose(a), a.T)


@given(u64_arrays.filter(lambda a: a.ndim >= 1), st.data())
def test_sum_matches_numpy(a: np.ndarray, data: st.DataObject) -> None:
    axis = data.draw(st.integers(-a.ndim, a.ndim - 1))
    np.testing.assert_array_equal(sy.ring_sum(a, axis), a.sum(axis=axis, dtype=np.uint64))


def conv2d_reference(
    x: np.ndarray, w: np.ndarray, stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int
) -> np.ndarray:
    """Direct convolution in uint64 (wrapping), looping over kernel taps only."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), np.uint64)
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow), np.uint64)
    og = o // groups
    for oc in range(o):
        g = oc // og
        for ci in range(cg):
            for i in range(kh):
                for j in range(kw):
                    patch = xp[:, g * cg + ci, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
                    out[:, oc] += patch * w[oc, ci, i, j]
    return out


conv_cases = st.tuples(
    st.integers(1, 2),  # n
    st.integers(1, 2),  # groups
    st.integers(1, 2),  # channels per group
    st.integers(1, 2),  # out channels per group
    st.integers(1, 3),  # kh
    st.integers(1, 3),  # kw
    st.integers(1, 2),  # stride
    st.integers(0, 2),  # padding
    st.integers(1, 2),  # dilation
    st.integers(0, 2**32),
)


def make_conv(case: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    n, g, cg, og, kh, kw, s, p, d, seed = case
    rng = np.random.default_rng(seed)
    h = d * (kh - 1) + 1 + int(rng.integers(0, 4))
    wd = d * (kw - 1) + 1 + int(rng.integers(0, 4))
    x = rand_u64(rng, (n, g * cg, h, wd))
    w = rand_u64(rng, (g * og, cg, kh, kw))
    return x, w, dict(stride=(s, s), padding=(p, p), dilation=(d, d), groups=g)


@given(conv_cases)
def test_conv2d_matches_reference(case: tuple[int, ...]) -> None:
    x, w, kw = make_conv(case)
    np.testing.assert_array_equal(sy.ring_conv2d(x, w, **kw), conv2d_reference(x, w, **kw))  # type: ignore[arg-type]


def test_conv2d_matches_torch_semantics(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    x = rng.integers(-8, 8, size=(2, 4, 7, 6))
    w = rng.integers(-8, 8, size=(6, 2, 3, 2))
    args = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    ref = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64), **args)
    out = sy.ring_conv2d(x.astype(np.int64).view(np.uint64), w.astype(np.int64).view(np.uint64), **args)
    np.testing.assert_array_equal(out.view(np.int64), ref.numpy().astype(np.int64))


@pytest.mark.parametrize(
    "call",
    [
        lambda: sy.ring_add(np.zeros(3, np.uint64), np.zeros(4, np.uint64)),
        lambda: sy.ring_matmul(np.zeros((2, 3), np.uint64), np.zeros((4, 2), np.uint64)),
        lambda: sy.ring_matmul(np.zeros((2, 2, 3), np.uint64), np.zeros((3, 3, 2), np.uint64)),
        lambda: sy.ring_matmul(np.zeros(3, np.uint64), np.zeros(3, np.uint64)),
        lambda: sy.ring_conv2d(np.zeros((1, 3, 5, 5), np.uint64), np.zeros((2, 2, 3, 3), np.uint64)),
        lambda: sy.ring_conv2d(np.zeros((1, 1, 2, 2), np.uint64), np.zeros((1, 1, 3, 3), np.uint64)),
        lambda: sy.ring_conv2d(np.zeros((1, 1, 5, 5), np.uint64), np.zeros((1, 1, 3, 3), np.uint64), stride=(0, 1)),
        lambda: sy.ring_conv2d(np.zeros((1, 5, 5), np.uint64), np.zeros((1, 1, 3, 3), np.uint64)),
        lambda: sy.ring_sum(np.zeros((2, 3), np.uint64), 2),
        lambda: sy.ring_sum(np.zeros((), np.uint64), 0),
        lambda: sy.ring_transpose(np.zeros((2, 3, 4), np.uint64)),
    ],
)
def test_bad_shapes_raise_shape_error(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sy.ShapeError) as e:
        call()
    assert isinstance(e.value, ValueError) and isinstance(e.value, sy.MpcError)


def test_wrong_dtype_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        sy.ring_add(np.zeros(3, np.int64), np.zeros(3, np.int64))  # type: ignore[arg-type]


def test_results_own_their_memory(rng: np.random.Generator) -> None:
    a = rand_u64(rng, (3, 3))
    out = sy.ring_add(a, a)
    assert out.flags["C_CONTIGUOUS"] and out.flags["WRITEABLE"]
    assert not np.shares_memory(out, a)
