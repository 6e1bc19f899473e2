//! Every vector level of the element-wise passes this CPU can run (AVX-512,
//! AVX2, portable), each forced in turn with `simd::force`, against scalar
//! wrapping-`u64` references: random values, all-ones, lengths that are not
//! multiples of any vector width, empty buffers, one and two threads, and the
//! PRG stream (VAES at the AVX-512 level) against the stream at the portable
//! level. Levels the CPU lacks are named on stderr (`--nocapture`).
//!
//! The override is process-wide, so the tests take a lock; this file is its own
//! test binary.

use std::sync::Mutex;
use syft_mpc_ring::prg::{Prg, Seed};
use syft_mpc_ring::simd::{self, Simd};
use syft_mpc_ring::{kernels, R64};

mod common;
use common::vec_of;

static LOCK: Mutex<()> = Mutex::new(());

fn each_level(mut f: impl FnMut(Simd)) {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let available = simd::available();
    for s in Simd::ALL {
        if !available.contains(&s) {
            eprintln!("SIMD level {s} not run on this machine");
        }
    }
    for s in available {
        simd::force(Some(s)).expect("available level");
        assert_eq!(simd::level(), s);
        f(s);
    }
    simd::force(None).expect("reset");
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool").install(f)
}

fn scalar(a: &[R64], b: &[R64], f: impl Fn(u64, u64) -> u64) -> Vec<R64> {
    a.iter().zip(b).map(|(x, y)| R64(f(x.0, y.0))).collect()
}

/// Lengths around the 4-, 8- and 16-lane widths, the parallel chunk (2^15) and empty.
const LENS: [usize; 14] = [0, 1, 3, 7, 8, 9, 15, 17, 31, 33, 1000, 4097, (1 << 15) + 5, 3 * (1 << 15) + 13];

#[test]
fn element_wise_passes_match_scalar_at_every_level() {
    each_level(|lvl| {
        for (i, &len) in LENS.iter().enumerate() {
            for ones in [false, true] {
                let (a, b) = if ones {
                    (vec![R64(u64::MAX); len], vec![R64(u64::MAX); len])
                } else {
                    (vec_of(len, 1 + i as u64), vec_of(len, 100 + i as u64))
                };
                let k = R64(0xDEAD_BEEF_1234_5679);
                for threads in [1, 2] {
                    let ctx = format!("{lvl} len {len} ones {ones} threads {threads}");
                    in_pool(threads, || {
                        assert_eq!(kernels::add(&a, &b), scalar(&a, &b, u64::wrapping_add), "add {ctx}");
                        assert_eq!(kernels::sub(&a, &b), scalar(&a, &b, u64::wrapping_sub), "sub {ctx}");
                        assert_eq!(kernels::mul(&a, &b), scalar(&a, &b, u64::wrapping_mul), "mul {ctx}");
                        assert_eq!(kernels::neg(&a), scalar(&a, &a, |x, _| x.wrapping_neg()), "neg {ctx}");
                        assert_eq!(kernels::scale(&a, k), scalar(&a, &a, |x, _| x.wrapping_mul(k.0)), "scale {ctx}");
                        let mut out = vec![R64::ZERO; len];
                        kernels::add_into(&mut out, &a, &b);
                        assert_eq!(out, scalar(&a, &b, u64::wrapping_add), "add_into {ctx}");
                        kernels::sub_into(&mut out, &a, &b);
                        assert_eq!(out, scalar(&a, &b, u64::wrapping_sub), "sub_into {ctx}");
                        let mut acc = a.clone();
                        kernels::mul_assign(&mut acc, &b);
                        assert_eq!(acc, scalar(&a, &b, u64::wrapping_mul), "mul_assign {ctx}");
                        kernels::add_assign(&mut acc, &b);
                        kernels::sub_assign(&mut acc, &a);
                        let want: Vec<R64> = a
                            .iter()
                            .zip(&b)
                            .map(|(x, y)| R64(x.0.wrapping_mul(y.0).wrapping_add(y.0).wrapping_sub(x.0)))
                            .collect();
                        assert_eq!(acc, want, "add_assign/sub_assign {ctx}");
                        // A fused pass as the protocols write them (truncation, Beaver).
                        let mut fused = vec![R64::ZERO; len];
                        kernels::for_chunks_mut(&mut fused, |o, c| {
                            for ((v, &x), &y) in c.iter_mut().zip(&a[o..]).zip(&b[o..]) {
                                *v = x * y + k - R64(x.0 >> 13) * k;
                            }
                        });
                        let want: Vec<R64> = a
                            .iter()
                            .zip(&b)
                            .map(|(x, y)| {
                                R64(x.0.wrapping_mul(y.0).wrapping_add(k.0).wrapping_sub((x.0 >> 13).wrapping_mul(k.0)))
                            })
                            .collect();
                        assert_eq!(fused, want, "for_chunks_mut {ctx}");
                    });
                }
            }
        }
    });
}

#[test]
fn sum_axis_matches_scalar_at_every_level() {
    let shape = [3usize, 37, 129];
    let a = vec_of(shape.iter().product(), 9);
    let mut want = vec![R64::ZERO; 3 * 129];
    for o in 0..3 {
        for l in 0..37 {
            for j in 0..129 {
                want[o * 129 + j] += a[(o * 37 + l) * 129 + j];
            }
        }
    }
    each_level(|lvl| assert_eq!(kernels::sum_axis(&a, &shape, 1), want, "{lvl}"));
}

/// The PRG stream does not depend on the level (VAES at AVX-512, AES-NI below).
#[test]
fn prg_stream_is_the_same_at_every_level() {
    let seed = Seed([0x42; 16]);
    let reference = {
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        simd::force(Some(Simd::Portable)).expect("portable");
        let mut p = Prg::new(seed);
        let v: Vec<Vec<R64>> = LENS.iter().map(|&n| p.ring_vec(n)).collect();
        simd::force(None).expect("reset");
        v
    };
    each_level(|lvl| {
        for threads in [1, 2] {
            let mut p = Prg::new(seed);
            let got: Vec<Vec<R64>> = in_pool(threads, || LENS.iter().map(|&n| p.ring_vec(n)).collect());
            assert!(got == reference, "{lvl}, {threads} threads");
        }
    });
}

#[test]
fn levels_are_consistent() {
    assert_eq!(simd::SIMD_ENV, "SYFT_MPC_SIMD");
    for s in Simd::ALL {
        assert_eq!(simd::available().contains(&s), s.supported());
    }
    assert!(simd::available().contains(&Simd::Portable));
}
