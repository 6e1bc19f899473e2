//! Helpers shared by the ring crate's integration tests (each test binary uses a subset).
#![allow(dead_code)]

use syft_mpc_ring::R64;

/// `len` pseudo-random ring elements from `seed` (splitmix64: full 64-bit values, so every
/// limb of a split multiply is exercised).
pub fn vec_of(len: usize, seed: u64) -> Vec<R64> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            R64(z ^ (z >> 31))
        })
        .collect()
}

/// The scalar reference: `(m, k) @ (k, n)` in Z_2^64, row-major, three plain loops.
pub fn ref_matmul(a: &[R64], b: &[R64], m: usize, k: usize, n: usize) -> Vec<R64> {
    let mut c = vec![R64::ZERO; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0u64;
            for p in 0..k {
                s = s.wrapping_add(a[i * k + p].0.wrapping_mul(b[p * n + j].0));
            }
            c[i * n + j] = R64(s);
        }
    }
    c
}
