//! `share` and `reconstruct`: additive secret sharing of numpy `uint64` arrays, without a
//! session.

use crate::convert::{elems, ring, ring_out, same_shape};
use crate::errors::{shape, Result};
use numpy::{PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyList;
use syft_mpc_protocol as proto;
use syft_mpc_ring::prg::Prg;

type Out<'py> = Result<Bound<'py, PyArrayDyn<u64>>>;

/// Splits `x` into `n` additive shares (uniformly random, from the OS CSPRNG).
#[pyfunction]
pub fn share<'py>(py: Python<'py>, x: PyReadonlyArrayDyn<'py, u64>, n: usize) -> PyResult<Bound<'py, PyList>> {
    if n < 1 {
        return Err(shape("share: n must be at least 1").into());
    }
    let v = elems(&x);
    let shares = py.detach(|| proto::sharing::share(ring(&v), n, &mut Prg::from_entropy()));
    let list = PyList::empty(py);
    for s in shares {
        list.append(ring_out(py, s, x.shape())?)?;
    }
    Ok(list)
}

/// Sum of additive shares (all of one shape).
#[pyfunction]
pub fn reconstruct<'py>(py: Python<'py>, shares: Vec<PyReadonlyArrayDyn<'py, u64>>) -> Out<'py> {
    let Some(first) = shares.first() else {
        return Err(shape("reconstruct: need at least one share"));
    };
    let dims = first.shape().to_vec();
    for s in &shares {
        same_shape("reconstruct", &dims, s.shape())?;
    }
    let bufs: Vec<_> = shares.iter().map(elems).collect();
    let out = py.detach(|| {
        let views: Vec<&[syft_mpc_ring::R64]> = bufs.iter().map(|b| ring(b)).collect();
        proto::sharing::reconstruct(&views)
    });
    ring_out(py, out, &dims)
}
