//! `syft_mpc._native`: the only crate that knows pyo3 and numpy.
//!
//! * [`errors`] — the one place where Rust errors become Python exceptions.
//! * [`convert`] — numpy ↔ ring buffers (borrow in, move out).
//! * [`ring`] — Z_2^64 kernels and the fixed-point codec on numpy arrays.
//! * `session` — `Party` / `Dealer` sessions over in-memory channels or TCP.
//! * `channel` — `Listener` / `Connection`: the control plane's authenticated TCP channel.
//!
//! Every call that computes or waits on the network runs with the GIL released,
//! so two parties on two threads of one Python process make progress together.

mod channel;
mod convert;
mod errors;
mod ring;
mod session;

use pyo3::prelude::*;

/// Rust allocations of the extension (shares, masks, protocol buffers) ask for
/// transparent huge pages when large; Python's own allocations are untouched.
#[global_allocator]
static ALLOC: syft_mpc_ring::alloc::HugePageHint = syft_mpc_ring::alloc::HugePageHint;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    syft_mpc_ring::alloc::reuse_large_blocks();
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_FRAC_BITS", syft_mpc_ring::fixed::DEFAULT_FRAC_BITS)?;
    m.add_function(wrap_pyfunction!(ring::ring_add, m)?)?;
    m.add_function(wrap_pyfunction!(ring::ring_sub, m)?)?;
    m.add_function(wrap_pyfunction!(ring::ring_mul, m)?)?;
    m.add_function(wrap_pyfunction!(ring::ring_neg, m)?)?;
    m.add_function(wrap_pyfunction!(ring::ring_scale, m)?)?;
    m.add_function(wrap_pyfunction!(ring::ring_matmul, m)?)?;
    m.add_function(wrap_pyfunction!(ring::ring_conv2d, m)?)?;
    m.add_function(wrap_pyfunction!(ring::ring_sum, m)?)?;
    m.add_function(wrap_pyfunction!(ring::ring_transpose, m)?)?;
    m.add_function(wrap_pyfunction!(ring::encode, m)?)?;
    m.add_function(wrap_pyfunction!(ring::decode, m)?)?;
    m.add_function(wrap_pyfunction!(ring::fixed_point_info, m)?)?;
    session::register(m)?;
    channel::register(m)?;
    Ok(())
}
