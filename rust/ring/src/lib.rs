//! Arithmetic in the ring Z_2^64 for secret sharing: the [`R64`] element type,
//! vectorised multi-threaded kernels, a fixed-point codec and an AES-CTR PRG.
//!
//! This crate has no I/O and knows nothing about parties or protocols.

pub mod alloc;
pub mod choice;
pub mod fixed;
pub mod gemm;
mod gemm_amx;
pub mod kernels;
pub mod prg;
mod r64;
pub mod simd;

pub use r64::{as_ring, as_ring_mut, as_u64, as_u64_mut, R64};
