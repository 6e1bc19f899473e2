//! numpy ↔ ring buffers: borrow in (no copy for C-contiguous arrays), move out; and a
//! session's counters as a dict.

use crate::errors::{shape, Result};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::borrow::Cow;
use syft_mpc_protocol as proto;
use syft_mpc_ring::R64;

/// The elements of `a` in row-major order: a borrowed view of numpy's memory when the
/// array is C-contiguous (the usual case), a copy otherwise. `Cow<[u64]>` is `Send`,
/// so it can cross into a GIL-released section.
///
/// While the GIL is released another Python thread could still write to the array
/// through numpy itself; as with every numpy extension, do not mutate an array that
/// a running call is reading.
pub fn elems<'a, T: numpy::Element + Copy>(a: &'a PyReadonlyArrayDyn<'_, T>) -> Cow<'a, [T]> {
    // `as_slice` also accepts Fortran order (memory order != logical order), so check C order first.
    if a.is_c_contiguous() {
        if let Ok(s) = a.as_slice() {
            return Cow::Borrowed(s);
        }
    }
    Cow::Owned(a.as_array().iter().copied().collect())
}

/// Ring view of a `uint64` buffer.
pub fn ring(v: &[u64]) -> &[R64] {
    syft_mpc_ring::as_ring(v)
}

/// Moves a ring vector into a new numpy `uint64` array of `shape` (no copy).
pub fn ring_out<'py>(py: Python<'py>, v: Vec<R64>, shape_: &[usize]) -> Result<Bound<'py, PyArrayDyn<u64>>> {
    let v: Vec<u64> = bytemuck::allocation::cast_vec(v);
    let arr = ArrayD::from_shape_vec(IxDyn(shape_), v)
        .map_err(|e| shape(format!("internal: result does not fit shape {shape_:?}: {e}")))?;
    Ok(arr.into_pyarray(py))
}

/// Moves a float vector into a new numpy `float64` array of `shape` (no copy).
pub fn f64_out<'py>(py: Python<'py>, v: Vec<f64>, shape_: &[usize]) -> Result<Bound<'py, PyArrayDyn<f64>>> {
    let arr = ArrayD::from_shape_vec(IxDyn(shape_), v)
        .map_err(|e| shape(format!("internal: result does not fit shape {shape_:?}: {e}")))?;
    Ok(arr.into_pyarray(py))
}

pub fn same_shape(op: &str, a: &[usize], b: &[usize]) -> Result<()> {
    if a != b {
        return Err(shape(format!("{op}: operands have shapes {a:?} and {b:?}; they must be equal (no broadcasting)")));
    }
    Ok(())
}

/// `(batch, m, k, n)` of a 2-d `(m,k)@(k,n)` or 3-d batched `(b,m,k)@(b,k,n)` product.
pub fn matmul_dims(a: &[usize], b: &[usize]) -> Result<(Option<usize>, usize, usize, usize)> {
    match (a, b) {
        (&[m, k], &[k2, n]) if k == k2 => Ok((None, m, k, n)),
        (&[ba, m, k], &[bb, k2, n]) if ba == bb && k == k2 => Ok((Some(ba), m, k, n)),
        _ => Err(shape(format!(
            "matmul: shapes {a:?} and {b:?} do not fit; expected (m, k) @ (k, n) or (batch, m, k) @ (batch, k, n)"
        ))),
    }
}

pub fn shape4(what: &str, s: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(s)
        .map_err(|_| shape(format!("conv2d: {what} must be 4-d (N, C, H, W) / (O, C/groups, KH, KW), got shape {s:?}")))
}

/// Conv2d geometry, checked so that the ring kernel's asserts can never fire.
pub fn conv_params(
    x: [usize; 4],
    w: [usize; 4],
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Result<(syft_mpc_ring::kernels::Conv2dParams, [usize; 4])> {
    let p = syft_mpc_ring::kernels::Conv2dParams {
        stride: [stride.0, stride.1],
        padding: [padding.0, padding.1],
        dilation: [dilation.0, dilation.1],
        groups,
    };
    let out = p.output_shape(x, w).map_err(shape)?;
    Ok((p, out))
}

/// A session's communication counters as a dict (`Party.stats`, `Dealer.stats`).
pub fn stats_dict<'py>(py: Python<'py>, s: proto::Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("rounds", s.rounds)?;
    d.set_item("bytes_sent", s.bytes_sent)?;
    d.set_item("bytes_received", s.bytes_received)?;
    d.set_item("dealer_bytes_received", s.dealer_bytes_received)?;
    Ok(d)
}
