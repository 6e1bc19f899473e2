//! Every ring-GEMM kernel this CPU can run (AMX, AVX2, portable), each forced in
//! turn with `gemm::force_kernel`, against a naive wrapping-`u64` reference:
//! odd and tiny shapes, all-ones entries (the exactness edge of the AMX byte
//! limbs), zeros, depth beyond the AMX block and chunk sizes, batched matmul and
//! conv2d, on rayon pools of 1 and 2 threads. Kernels the CPU lacks are named on
//! stderr (run with `--nocapture` to see them).
//!
//! The override is process-wide, so the tests in this file take a lock; this
//! file is its own test binary, so other test files are unaffected.

use proptest::prelude::*;
use std::sync::Mutex;
use syft_mpc_ring::gemm::{self, Kernel};
use syft_mpc_ring::kernels::{self, Conv2dParams};
use syft_mpc_ring::R64;

mod common;
use common::{ref_matmul, vec_of};

static LOCK: Mutex<()> = Mutex::new(());

/// Runs `f(kernel)` with each available kernel forced, then restores the default.
fn each_kernel(mut f: impl FnMut(Kernel)) {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let available = gemm::available_kernels();
    for k in Kernel::ALL {
        if !available.contains(&k) {
            eprintln!("kernel {k} not run on this machine: {}", k.support().unwrap_err());
        }
    }
    for k in available {
        gemm::force_kernel(Some(k)).expect("available kernel");
        assert_eq!(gemm::kernel_info().chosen, k);
        f(k);
    }
    gemm::force_kernel(None).expect("reset");
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool").install(f)
}

#[test]
fn kernel_info_is_consistent() {
    let info = gemm::kernel_info();
    eprintln!("ring GEMM: {info:?}");
    assert!(info.available.contains(&Kernel::Portable));
    assert!(info.available.contains(&info.chosen) && !info.reason.is_empty());
    for k in Kernel::ALL {
        assert_eq!(info.available.contains(&k), k.support().is_ok(), "{k}");
    }
}

#[test]
fn odd_shapes_random_ones_zero() {
    let dims = [1usize, 3, 15, 17, 31, 33, 63, 65, 127];
    each_kernel(|kern| {
        let mut seed = 1u64;
        for &m in &dims {
            for &k in &dims {
                for &n in &dims {
                    seed += 1;
                    // Every shape with a small side; a sample of the rest keeps this short.
                    if m.min(k).min(n) > 17 && seed & 3 != 0 {
                        continue;
                    }
                    let a = vec_of(m * k, seed);
                    let b = vec_of(k * n, seed ^ 0xABCD);
                    let want = ref_matmul(&a, &b, m, k, n);
                    let threads = 1 + (seed as usize % 2);
                    let got = in_pool(threads, || kernels::matmul(&a, &b, m, k, n));
                    assert_eq!(got, want, "{kern} {m}x{k}x{n} random, {threads} threads");
                }
            }
        }
        for &(m, k, n) in &[(33, 65, 17), (64, 64, 64), (127, 129, 63), (5, 300, 70)] {
            let ones_a = vec![R64(u64::MAX); m * k];
            let ones_b = vec![R64(u64::MAX); k * n];
            let want = ref_matmul(&ones_a, &ones_b, m, k, n);
            for threads in [1, 2] {
                assert_eq!(in_pool(threads, || kernels::matmul(&ones_a, &ones_b, m, k, n)), want, "{kern} ones");
            }
            let zero = vec![R64::ZERO; m * k];
            let b = vec_of(k * n, 5);
            assert_eq!(kernels::matmul(&zero, &b, m, k, n), vec![R64::ZERO; m * n], "{kern} zero");
        }
    });
}

/// k = 20_000: past the AMX depth block (1024) and its exactness chunk (16_384).
#[test]
fn deep_k_thin_matrices() {
    each_kernel(|kern| {
        for &(m, k, n) in &[(3, 20_000, 5), (33, 20_000, 31)] {
            let ones_a = vec![R64(u64::MAX); m * k];
            let ones_b = vec![R64(u64::MAX); k * n];
            assert_eq!(kernels::matmul(&ones_a, &ones_b, m, k, n), ref_matmul(&ones_a, &ones_b, m, k, n), "{kern}");
            let a = vec_of(m * k, 7);
            let b = vec_of(k * n, 8);
            let want = ref_matmul(&a, &b, m, k, n);
            for threads in [1, 2] {
                assert_eq!(in_pool(threads, || kernels::matmul(&a, &b, m, k, n)), want, "{kern} {threads} threads");
            }
        }
    });
}

#[test]
fn large_product_two_threads() {
    let (m, k, n) = (301, 1100, 1030);
    let a = vec_of(m * k, 11);
    let b = vec_of(k * n, 12);
    let want = ref_matmul(&a, &b, m, k, n);
    each_kernel(|kern| {
        for threads in [1, 2] {
            assert_eq!(in_pool(threads, || kernels::matmul(&a, &b, m, k, n)), want, "{kern} {threads} threads");
        }
    });
}

#[test]
fn bmm_and_conv2d() {
    let (batch, m, k, n) = (3, 40, 70, 50);
    let a = vec_of(batch * m * k, 21);
    let b = vec_of(batch * k * n, 22);
    let mut want = Vec::new();
    for t in 0..batch {
        want.extend(ref_matmul(&a[t * m * k..(t + 1) * m * k], &b[t * k * n..(t + 1) * k * n], m, k, n));
    }
    let p = Conv2dParams { stride: [1, 2], padding: [1, 0], dilation: [2, 1], groups: 2 };
    let (xs, ws) = ([2, 8, 24, 21], [12, 4, 3, 3]);
    let x = vec_of(xs.iter().product(), 23);
    let w = vec_of(ws.iter().product(), 24);
    let conv_want = conv_direct(&x, xs, &w, ws, &p);
    each_kernel(|kern| {
        for threads in [1, 2] {
            assert_eq!(in_pool(threads, || kernels::bmm(&a, &b, batch, m, k, n)), want, "{kern} bmm");
            let (got, shape) = in_pool(threads, || kernels::conv2d(&x, xs, &w, ws, &p));
            assert_eq!((got, shape), conv_want.clone(), "{kern} conv2d, {threads} threads");
        }
    });
}

/// Direct-loop convolution (cross-correlation, as torch).
fn conv_direct(x: &[R64], xs: [usize; 4], w: &[R64], ws: [usize; 4], p: &Conv2dParams) -> (Vec<R64>, [usize; 4]) {
    let [nb, c, h, wd] = xs;
    let [o, cg, kh, kw] = ws;
    let oh = (h + 2 * p.padding[0] - p.dilation[0] * (kh - 1) - 1) / p.stride[0] + 1;
    let ow = (wd + 2 * p.padding[1] - p.dilation[1] * (kw - 1) - 1) / p.stride[1] + 1;
    let og = o / p.groups;
    let mut out = vec![R64::ZERO; nb * o * oh * ow];
    for b in 0..nb {
        for oc in 0..o {
            let grp = oc / og;
            for oi in 0..oh {
                for oj in 0..ow {
                    let mut s = R64::ZERO;
                    for ic in 0..cg {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ii = (oi * p.stride[0] + ki * p.dilation[0]) as isize - p.padding[0] as isize;
                                let jj = (oj * p.stride[1] + kj * p.dilation[1]) as isize - p.padding[1] as isize;
                                if ii >= 0 && (ii as usize) < h && jj >= 0 && (jj as usize) < wd {
                                    s += x[((b * c + grp * cg + ic) * h + ii as usize) * wd + jj as usize]
                                        * w[((oc * cg + ic) * kh + ki) * kw + kj];
                                }
                            }
                        }
                    }
                    out[((b * o + oc) * oh + oi) * ow + oj] = s;
                }
            }
        }
    }
    assert!(c == cg * p.groups);
    (out, [nb, o, oh, ow])
}

/// Biased towards 0, 1 and the AMX tile edges (16, 32, 64 +- 1).
fn dim(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![Just(0), Just(1), Just(15), Just(17), Just(31), Just(33), Just(63), Just(65), 2..=max, 2..=max]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_kernel_matches_reference(m in dim(140), k in dim(300), n in dim(140), seed: u64, threads in 1usize..3, ones: bool) {
        let (a, b) = if ones {
            (vec![R64(u64::MAX); m * k], vec![R64(u64::MAX); k * n])
        } else {
            (vec_of(m * k, seed), vec_of(k * n, seed ^ 1))
        };
        let want = ref_matmul(&a, &b, m, k, n);
        let mut bad = None;
        each_kernel(|kern| {
            let got = in_pool(threads, || kernels::matmul(&a, &b, m, k, n));
            if got != want && bad.is_none() {
                bad = Some(kern);
            }
        });
        prop_assert_eq!(bad, None);
    }
}
