//! Ring kernels (Z_2^64 on numpy `uint64` arrays) and the fixed-point codec.
//!
//! Each function: validate shapes (the kernels `assert!`), borrow the inputs,
//! run with the GIL released, move the result into a new numpy array.

use crate::convert::{conv_params, elems, f64_out, matmul_dims, ring, ring_out, same_shape, shape4};
use crate::errors::{shape, Result};
use numpy::{PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use syft_mpc_ring::choice::Choice;
use syft_mpc_ring::fixed::FixedPoint;
use syft_mpc_ring::{gemm, kernels, R64};

type Out<'py> = Result<Bound<'py, PyArrayDyn<u64>>>;

fn binary<'py>(
    py: Python<'py>,
    op: &str,
    a: PyReadonlyArrayDyn<'py, u64>,
    b: PyReadonlyArrayDyn<'py, u64>,
    f: fn(&[R64], &[R64]) -> Vec<R64>,
) -> Out<'py> {
    same_shape(op, a.shape(), b.shape())?;
    let (x, y) = (elems(&a), elems(&b));
    let out = py.detach(|| f(ring(&x), ring(&y)));
    ring_out(py, out, a.shape())
}

/// `a + b` element-wise in Z_2^64 (same shapes).
#[pyfunction]
pub fn ring_add<'py>(py: Python<'py>, a: PyReadonlyArrayDyn<'py, u64>, b: PyReadonlyArrayDyn<'py, u64>) -> Out<'py> {
    binary(py, "ring_add", a, b, kernels::add)
}

/// `a - b` element-wise in Z_2^64 (same shapes).
#[pyfunction]
pub fn ring_sub<'py>(py: Python<'py>, a: PyReadonlyArrayDyn<'py, u64>, b: PyReadonlyArrayDyn<'py, u64>) -> Out<'py> {
    binary(py, "ring_sub", a, b, kernels::sub)
}

/// `a * b` element-wise in Z_2^64 (same shapes).
#[pyfunction]
pub fn ring_mul<'py>(py: Python<'py>, a: PyReadonlyArrayDyn<'py, u64>, b: PyReadonlyArrayDyn<'py, u64>) -> Out<'py> {
    binary(py, "ring_mul", a, b, kernels::mul)
}

/// `-a` in Z_2^64.
#[pyfunction]
pub fn ring_neg<'py>(py: Python<'py>, a: PyReadonlyArrayDyn<'py, u64>) -> Out<'py> {
    let x = elems(&a);
    let out = py.detach(|| kernels::neg(ring(&x)));
    ring_out(py, out, a.shape())
}

/// `k * a` for a public constant `k` in Z_2^64.
#[pyfunction]
pub fn ring_scale<'py>(py: Python<'py>, a: PyReadonlyArrayDyn<'py, u64>, k: u64) -> Out<'py> {
    let x = elems(&a);
    let out = py.detach(|| kernels::scale(ring(&x), R64(k)));
    ring_out(py, out, a.shape())
}

/// A pool of exactly `n` worker threads (cached), for callers that pin the thread count.
fn pool(n: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: Mutex<BTreeMap<usize, Arc<rayon::ThreadPool>>> = Mutex::new(BTreeMap::new());
    if n == 0 {
        return Err(shape("threads must be at least 1"));
    }
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = pools.get(&n) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(move |i| format!("syft-mpc-{n}-{i}"))
            .build()
            .map_err(|e| shape(format!("cannot start {n} threads: {e}")))?,
    );
    pools.insert(n, p.clone());
    Ok(p)
}

/// Runs `f` on the global pool, or on a pool of `threads` threads.
fn on_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> Result<T> {
    match threads {
        None => Ok(f()),
        Some(n) => Ok(pool(n)?.install(f)),
    }
}

/// `(m,k) @ (k,n)` or batched `(b,m,k) @ (b,k,n)` in Z_2^64.
/// `threads` pins the number of worker threads (default: all cores).
#[pyfunction]
#[pyo3(signature = (a, b, threads=None))]
pub fn ring_matmul<'py>(
    py: Python<'py>,
    a: PyReadonlyArrayDyn<'py, u64>,
    b: PyReadonlyArrayDyn<'py, u64>,
    threads: Option<usize>,
) -> Out<'py> {
    let (batch, m, k, n) = matmul_dims(a.shape(), b.shape())?;
    let (x, y) = (elems(&a), elems(&b));
    match batch {
        None => {
            let out = py.detach(|| on_threads(threads, || kernels::try_matmul(ring(&x), ring(&y), m, k, n)))??;
            ring_out(py, out, &[m, n])
        }
        Some(bt) => {
            let out = py.detach(|| on_threads(threads, || kernels::try_bmm(ring(&x), ring(&y), bt, m, k, n)))??;
            ring_out(py, out, &[bt, m, n])
        }
    }
}

/// 2-d convolution (cross-correlation, as `torch.nn.functional.conv2d`) in Z_2^64.
#[pyfunction]
#[pyo3(
    signature = (x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1),
    text_signature = "(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)"
)]
pub fn ring_conv2d<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, u64>,
    w: PyReadonlyArrayDyn<'py, u64>,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Out<'py> {
    let xs = shape4("input", x.shape())?;
    let ws = shape4("weight", w.shape())?;
    let (p, out_shape) = conv_params(xs, ws, stride, padding, dilation, groups)?;
    let (xv, wv) = (elems(&x), elems(&w));
    let (out, s) = py.detach(|| kernels::try_conv2d(ring(&xv), xs, ring(&wv), ws, &p))?;
    debug_assert_eq!(s, out_shape);
    ring_out(py, out, &s)
}

/// Normalises a possibly negative axis.
pub fn norm_axis(axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a >= ndim as isize {
        return Err(shape(format!("axis {axis} is out of range for an array of {ndim} dimensions")));
    }
    Ok(a as usize)
}

/// Sum along `axis` (removed from the shape) in Z_2^64.
#[pyfunction]
#[pyo3(signature = (a, axis=0))]
pub fn ring_sum<'py>(py: Python<'py>, a: PyReadonlyArrayDyn<'py, u64>, axis: isize) -> Out<'py> {
    let s = a.shape().to_vec();
    let ax = norm_axis(axis, s.len())?;
    let x = elems(&a);
    let out = py.detach(|| kernels::sum_axis(ring(&x), &s, ax));
    let mut out_shape = s;
    out_shape.remove(ax);
    ring_out(py, out, &out_shape)
}

/// Transpose of a 2-d array.
#[pyfunction]
pub fn ring_transpose<'py>(py: Python<'py>, a: PyReadonlyArrayDyn<'py, u64>) -> Out<'py> {
    let &[r, c] = a.shape() else {
        return Err(shape(format!("ring_transpose: expected a 2-d array, got shape {:?}", a.shape())));
    };
    let x = elems(&a);
    let out = py.detach(|| kernels::transpose(ring(&x), r, c));
    ring_out(py, out, &[c, r])
}

// The Python defaults below spell out the ring crate's default precision.
const _: () = assert!(syft_mpc_ring::fixed::DEFAULT_FRAC_BITS == 16);

/// Fixed-point encoding `round(x * base**precision)` into Z_2^64 (two's complement).
#[pyfunction]
#[pyo3(signature = (x, base=2, precision=16))]
pub fn encode<'py>(py: Python<'py>, x: PyReadonlyArrayDyn<'py, f64>, base: u32, precision: u32) -> Out<'py> {
    let fp = FixedPoint::new(base, precision)?;
    let v = elems(&x);
    let out = py.detach(|| fp.encode(&v))?;
    ring_out(py, out, x.shape())
}

/// Fixed-point decoding; exact for negatives.
#[pyfunction]
#[pyo3(signature = (x, base=2, precision=16))]
pub fn decode<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, u64>,
    base: u32,
    precision: u32,
) -> Result<Bound<'py, PyArrayDyn<f64>>> {
    let fp = FixedPoint::new(base, precision)?;
    let v = elems(&x);
    let out = py.detach(|| fp.decode(ring(&v)));
    f64_out(py, out, x.shape())
}

/// `(scale, limit)` of a fixed-point precision: values encode as `round(x * scale)`, `|x| < limit`.
#[pyfunction]
#[pyo3(signature = (base=2, precision=16))]
pub fn fixed_point_info(base: u32, precision: u32) -> Result<(u64, f64)> {
    let fp = FixedPoint::new(base, precision)?;
    Ok((fp.scale(), fp.limit()))
}

/// The ring GEMM kernel that `ring_matmul`, the protocols' matmuls and convolutions use on
/// this machine: `{"chosen": name, "available": [names, best first], "reason": why}`.
/// `SYFT_MPC_GEMM=amx|avx512|avx2|portable` (read once per process) forces one; a kernel the
/// CPU or OS cannot run falls back to the best available, and `reason` says so.
#[pyfunction]
pub fn gemm_kernel_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    choice_dict(py, gemm::kernel_info(), gemm::Kernel::name)
}

/// The vector level of the element-wise ring passes (add, mul, masking, truncation, the
/// protocols' fused passes): `{"chosen": name, "available": [names, best first], "reason": why}`.
/// `SYFT_MPC_SIMD=avx512|avx2|portable` (read once per process) forces one, with the
/// fallback rule of `gemm_kernel_info`.
#[pyfunction]
pub fn simd_level_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    choice_dict(py, syft_mpc_ring::simd::info(), syft_mpc_ring::simd::Simd::name)
}

/// A run-time choice as `{"chosen": name, "available": [names], "reason": why}`.
fn choice_dict<T: Copy>(py: Python<'_>, c: Choice<T>, name: fn(T) -> &'static str) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("chosen", name(c.chosen))?;
    d.set_item("available", c.available.into_iter().map(name).collect::<Vec<_>>())?;
    d.set_item("reason", c.reason)?;
    Ok(d)
}

/// The AES-128-CTR path that expands PRG seeds into shares and masks:
/// `{"chosen": name, "available": [names, best first]}` (`vaes`, `aes-ni`, `portable`).
/// Every path gives the same stream; VAES runs at the AVX-512 element-wise level only.
#[pyfunction]
pub fn prg_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("chosen", syft_mpc_ring::prg::path())?;
    d.set_item("available", syft_mpc_ring::prg::available_paths())?;
    Ok(d)
}

/// Forces the ring GEMM kernel for the whole process (`None`: the default again), for tests
/// and benchmarks that compare kernels. Raises ShapeError (a ValueError) for an unknown name
/// or a kernel this CPU or OS cannot run; calls already running keep their kernel.
#[pyfunction]
#[pyo3(signature = (name=None))]
pub fn set_gemm_kernel(name: Option<&str>) -> Result<()> {
    let kernel = match name {
        None => None,
        Some(n) => Some(gemm::Kernel::ALL.into_iter().find(|k| k.name() == n).ok_or_else(|| {
            let names: Vec<_> = gemm::Kernel::ALL.iter().map(|k| k.name()).collect();
            shape(format!("unknown GEMM kernel {n:?}; one of {}", names.join(", ")))
        })?),
    };
    gemm::force_kernel(kernel).map_err(shape)
}
