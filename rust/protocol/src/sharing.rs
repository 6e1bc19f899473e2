//! Additive n-party sharing outside a session (a data owner splitting its tensor,
//! a driver reconstructing a result). `x = Σ_i x_i mod 2^64`.
//!
//! Security: any `n − 1` shares are uniformly random and independent of `x`.

use syft_mpc_ring::prg::Prg;
use syft_mpc_ring::{kernels, R64};

/// Splits `x` into `n ≥ 1` additive shares; the first `n − 1` are PRG output.
pub fn share(x: &[R64], n: usize, prg: &mut Prg) -> Vec<Vec<R64>> {
    assert!(n >= 1, "sharing among zero parties");
    let mut shares: Vec<Vec<R64>> = (1..n).map(|_| prg.ring_vec(x.len())).collect();
    let mut last = x.to_vec();
    shares.iter().for_each(|s| kernels::sub_assign(&mut last, s));
    shares.push(last);
    shares
}

/// Sums shares of equal length.
pub fn reconstruct(shares: &[&[R64]]) -> Vec<R64> {
    let Some((first, rest)) = shares.split_first() else { return Vec::new() };
    let mut acc = first.to_vec();
    rest.iter().for_each(|s| kernels::add_assign(&mut acc, s));
    acc
}
