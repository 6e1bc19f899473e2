//! Secure multi-party computation over additive shares in Z_2^64.
//!
//! Model: `n ≥ 2` semi-honest parties holding additive shares, plus a dealer
//! (the `crypto_provider`) that is honest-but-curious and does not collude with
//! any party (the PySyft/CrypTen "trusted third party" model). The dealer only
//! produces correlated randomness; it never sees shares or openings.
//!
//! * [`Party`] — one party's end of a session: sharing, opening, Beaver
//!   mul/matmul/conv2d, truncation, comparison and ReLU, Fourier series.
//! * [`Dealer`] — serves seed-compressed correlated randomness.
//! * [`sharing`] — splitting and reconstructing outside a session.
//!
//! Protocols are generic over [`syft_mpc_transport::Channel`], so the same code
//! runs over the in-memory twin in tests and over TCP between processes.

mod beaver;
mod compare;
mod correlated;
mod dealer;
mod error;
mod fourier;
mod party;
pub mod sharing;
pub mod tcp;
mod trunc;

pub use correlated::{Request, MAX_FOURIER_DIVISOR, MAX_HARMONICS, MAX_REQUEST_ELEMENTS};
pub use dealer::Dealer;
pub use error::ProtocolError;
pub use party::{Party, Stats};
pub use syft_mpc_ring::kernels::Conv2dParams;

pub type Result<T> = std::result::Result<T, ProtocolError>;
