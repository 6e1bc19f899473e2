//! `syft_mpc._native`: the only crate that knows pyo3 and numpy.
//!
//! * [`errors`] — the one place where Rust errors become Python exceptions (the classes
//!   are declared in `syft_mpc.errors`).
//! * [`convert`] — numpy ↔ ring buffers (borrow in, move out).
//! * [`config`] — arguments sessions and connections share: secrets, party ids,
//!   addresses, timeouts, TCP and TLS settings.
//! * [`ring`] — Z_2^64 kernels and the fixed-point codec on numpy arrays.
//! * [`sharing`] — `share` / `reconstruct`.
//! * MPC sessions: [`party`] (`Party`), [`dealer`] (`Dealer`), [`request`] (`Request`),
//!   [`session`] (`memory_session`: parties and a dealer over in-memory channels).
//! * The control plane's authenticated TCP channel: [`listener`] (`Listener`),
//!   [`connection`] (`Connection`), [`message`] (messages in and out without copies).
//!
//! Every call that computes or waits on the network runs with the GIL released,
//! so two parties on two threads of one Python process make progress together.

mod config;
mod connection;
mod convert;
mod dealer;
mod errors;
mod listener;
mod message;
mod party;
mod request;
mod ring;
mod session;
mod sharing;

use pyo3::prelude::*;

/// Rust allocations of the extension (shares, masks, protocol buffers) ask for
/// transparent huge pages when large; Python's own allocations are untouched.
#[global_allocator]
static ALLOC: syft_mpc_ring::alloc::HugePageHint = syft_mpc_ring::alloc::HugePageHint;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    syft_mpc_ring::alloc::reuse_large_blocks();
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
    m.add_function(wrap_pyfunction!(ring::gemm_kernel_info, m)?)?;
    m.add_function(wrap_pyfunction!(ring::set_gemm_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(ring::simd_level_info, m)?)?;
    m.add_function(wrap_pyfunction!(ring::prg_info, m)?)?;
    m.add_function(wrap_pyfunction!(ring::encode, m)?)?;
    m.add_function(wrap_pyfunction!(ring::decode, m)?)?;
    m.add_function(wrap_pyfunction!(ring::fixed_point_info, m)?)?;
    m.add_class::<party::Party>()?;
    m.add_class::<dealer::Dealer>()?;
    m.add_class::<request::Request>()?;
    m.add_function(wrap_pyfunction!(session::memory_session, m)?)?;
    m.add_function(wrap_pyfunction!(sharing::share, m)?)?;
    m.add_function(wrap_pyfunction!(sharing::reconstruct, m)?)?;
    m.add_class::<listener::Listener>()?;
    m.add_class::<connection::Connection>()?;
    m.add_function(wrap_pyfunction!(config::worker_party_id, m)?)?;
    m.add_function(wrap_pyfunction!(config::check_token, m)?)?;
    m.add_function(wrap_pyfunction!(config::frame_mac_info, m)?)?;
    Ok(())
}
