//! Every kernel against a naive reference written here with plain wrapping
//! `u64` loops: random shapes including empty dimensions, one-element
//! tensors and sizes that do not divide the matmul tiles (3 x 8, KC = 256).

use proptest::prelude::*;
use syft_mpc_ring::kernels::{self, Conv2dParams};
use syft_mpc_ring::R64;

mod common;
use common::{ref_matmul, vec_of};

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * shape[i + 1];
    }
    st
}

/// Multi-index of flat position `flat` in `shape` (row-major).
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for i in (0..shape.len()).rev() {
        idx[i] = flat % shape[i];
        flat /= shape[i];
    }
    idx
}

/// Dimension sizes biased towards the edges: 0, 1, tile +- 1, and random.
fn dim(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![Just(0), Just(1), 2..=max, 2..=max, 2..=max]
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool").install(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn matmul_matches_reference(m in dim(70), k in dim(70), n in dim(70), seed: u64, threads in 1usize..5) {
        let a = vec_of(m * k, seed);
        let b = vec_of(k * n, seed ^ 1);
        let got = in_pool(threads, || kernels::matmul(&a, &b, m, k, n));
        prop_assert_eq!(got, ref_matmul(&a, &b, m, k, n));
    }

    #[test]
    fn matmul_deep_k_crosses_kc_blocks(m in 1usize..20, k in 250usize..600, n in 1usize..20, seed: u64) {
        let a = vec_of(m * k, seed);
        let b = vec_of(k * n, seed ^ 2);
        prop_assert_eq!(kernels::matmul(&a, &b, m, k, n), ref_matmul(&a, &b, m, k, n));
    }

    #[test]
    fn matmul_acc_adds_into_output(m in dim(40), k in dim(40), n in dim(40), seed: u64) {
        let a = vec_of(m * k, seed);
        let b = vec_of(k * n, seed ^ 3);
        let init = vec_of(m * n, seed ^ 4);
        let mut out = init.clone();
        kernels::matmul_acc(&a, &b, m, k, n, &mut out);
        let want: Vec<R64> = ref_matmul(&a, &b, m, k, n).iter().zip(&init).map(|(&x, &y)| x + y).collect();
        prop_assert_eq!(out, want);
    }

    #[test]
    fn bmm_matches_reference(batch in dim(5), m in dim(30), k in dim(30), n in dim(30), seed: u64) {
        let a = vec_of(batch * m * k, seed);
        let b = vec_of(batch * k * n, seed ^ 5);
        let got = kernels::bmm(&a, &b, batch, m, k, n);
        let mut want = Vec::new();
        for t in 0..batch {
            want.extend(ref_matmul(&a[t * m * k..(t + 1) * m * k], &b[t * k * n..(t + 1) * k * n], m, k, n));
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn elementwise_match_reference(len in prop_oneof![0usize..10, 10usize..5000, 40_000usize..70_000], seed: u64, k: u64) {
        let a = vec_of(len, seed);
        let b = vec_of(len, seed ^ 6);
        let f = |op: fn(u64, u64) -> u64| -> Vec<R64> { a.iter().zip(&b).map(|(x, y)| R64(op(x.0, y.0))).collect() };
        let add = f(u64::wrapping_add);
        let sub = f(u64::wrapping_sub);
        let mul = f(u64::wrapping_mul);
        prop_assert_eq!(kernels::add(&a, &b), add.clone());
        prop_assert_eq!(kernels::sub(&a, &b), sub.clone());
        prop_assert_eq!(kernels::mul(&a, &b), mul.clone());
        prop_assert_eq!(kernels::neg(&a), a.iter().map(|x| R64(x.0.wrapping_neg())).collect::<Vec<_>>());
        prop_assert_eq!(kernels::scale(&a, R64(k)), a.iter().map(|x| R64(x.0.wrapping_mul(k))).collect::<Vec<_>>());
        let mut acc = a.clone();
        kernels::add_assign(&mut acc, &b);
        prop_assert_eq!(&acc, &add);
        let mut acc = a.clone();
        kernels::sub_assign(&mut acc, &b);
        prop_assert_eq!(&acc, &sub);
        let mut acc = a.clone();
        kernels::mul_assign(&mut acc, &b);
        prop_assert_eq!(&acc, &mul);
    }

    #[test]
    fn sum_axis_matches_reference(shape in prop::collection::vec(dim(12), 1..5), axis_pick: usize, seed: u64) {
        let axis = axis_pick % shape.len();
        let a = vec_of(shape.iter().product(), seed);
        let mut out_shape = shape.clone();
        out_shape.remove(axis);
        let mut want = vec![0u64; out_shape.iter().product()];
        let ost = strides(&out_shape);
        for (flat, v) in a.iter().enumerate() {
            let mut idx = unravel(flat, &shape);
            idx.remove(axis);
            let o: usize = idx.iter().zip(&ost).map(|(i, s)| i * s).sum();
            want[o] = want[o].wrapping_add(v.0);
        }
        prop_assert_eq!(kernels::sum_axis(&a, &shape, axis), want.into_iter().map(R64).collect::<Vec<_>>());
    }

    #[test]
    fn sum_axis_large_matches_reference(outer in 1usize..4, len in 1usize..300, inner in prop_oneof![Just(1usize), 1usize..700], seed: u64) {
        let shape = [outer, len, inner];
        let a = vec_of(outer * len * inner, seed);
        let mut want = vec![R64::ZERO; outer * inner];
        for o in 0..outer {
            for l in 0..len {
                for i in 0..inner {
                    want[o * inner + i] += a[(o * len + l) * inner + i];
                }
            }
        }
        prop_assert_eq!(kernels::sum_axis(&a, &shape, 1), want);
    }

    #[test]
    fn transpose_matches_reference(rows in prop_oneof![dim(80), 150usize..400], cols in prop_oneof![dim(80), 150usize..400], seed: u64) {
        let a = vec_of(rows * cols, seed);
        let got = kernels::transpose(&a, rows, cols);
        let mut want = vec![R64::ZERO; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                want[c * rows + r] = a[r * cols + c];
            }
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn permute_matches_reference(
        shape in prop::collection::vec(prop_oneof![Just(0usize), Just(1usize), 2usize..9, 2usize..40], 1..6),
        keys in prop::collection::vec(any::<u32>(), 6),
        seed: u64,
    ) {
        let nd = shape.len();
        let mut axes: Vec<usize> = (0..nd).collect();
        axes.sort_by_key(|&i| keys[i]);
        let len: usize = shape.iter().product();
        prop_assume!(len <= 400_000);
        let a = vec_of(len, seed);
        let out_shape: Vec<usize> = axes.iter().map(|&ax| shape[ax]).collect();
        let ist = strides(&shape);
        let want: Vec<R64> = (0..len)
            .map(|flat| {
                let oidx = unravel(flat, &out_shape);
                let src: usize = oidx.iter().zip(&axes).map(|(&i, &ax)| i * ist[ax]).sum();
                a[src]
            })
            .collect();
        prop_assert_eq!(kernels::permute(&a, &shape, &axes), want);
    }

    #[test]
    fn conv2d_matches_direct_loops(
        n in 0usize..3, g in 1usize..4, cpg in 1usize..4, opg in 1usize..4,
        h in 1usize..12, w in 1usize..12, kh in 1usize..4, kw in 1usize..4,
        stride in (1usize..4, 1usize..4), padding in (0usize..3, 0usize..3), dilation in (1usize..3, 1usize..3),
        seed: u64,
    ) {
        let p = Conv2dParams { stride: [stride.0, stride.1], padding: [padding.0, padding.1], dilation: [dilation.0, dilation.1], groups: g };
        let (c, o) = (cpg * g, opg * g);
        let xs = [n, c, h, w];
        let ws = [o, cpg, kh, kw];
        let Ok(os) = p.output_shape(xs, ws) else {
            // The kernel does not fit the padded input: nothing to compare.
            prop_assume!(false);
            unreachable!()
        };
        let [_, _, oh, ow] = os;
        let x = vec_of(n * c * h * w, seed);
        let wt = vec_of(o * cpg * kh * kw, seed ^ 7);
        let (got, got_shape) = kernels::conv2d(&x, xs, &wt, ws, &p);
        prop_assert_eq!(got_shape, os);
        let mut want = vec![0u64; n * o * oh * ow];
        for b in 0..n {
            for oc in 0..o {
                let grp = oc / opg;
                for oi in 0..oh {
                    for oj in 0..ow {
                        let mut s = 0u64;
                        for ic in 0..cpg {
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let ii = (oi * p.stride[0] + ki * p.dilation[0]) as isize - p.padding[0] as isize;
                                    let jj = (oj * p.stride[1] + kj * p.dilation[1]) as isize - p.padding[1] as isize;
                                    if ii < 0 || jj < 0 || ii >= h as isize || jj >= w as isize {
                                        continue;
                                    }
                                    let xv = x[((b * c + grp * cpg + ic) * h + ii as usize) * w + jj as usize].0;
                                    let wv = wt[((oc * cpg + ic) * kh + ki) * kw + kj].0;
                                    s = s.wrapping_add(xv.wrapping_mul(wv));
                                }
                            }
                        }
                        want[((b * o + oc) * oh + oi) * ow + oj] = s;
                    }
                }
            }
        }
        prop_assert_eq!(got, want.into_iter().map(R64).collect::<Vec<_>>());
    }
}

/// At least 10^6 outputs, several row blocks per thread, two NC column blocks
/// and a ragged edge in every dimension.
#[test]
fn matmul_large() {
    let (m, k, n) = (301, 263, 4099);
    let a = vec_of(m * k, 11);
    let b = vec_of(k * n, 12);
    assert!(m * n >= 1_000_000);
    let want = ref_matmul(&a, &b, m, k, n);
    for threads in [1, 2, 3] {
        assert_eq!(in_pool(threads, || kernels::matmul(&a, &b, m, k, n)), want, "{threads} threads");
    }
}

/// A wide, short product (m < threads): the column split path.
#[test]
fn matmul_wide_short_many_threads() {
    let (m, k, n) = (2, 40, 1000);
    let a = vec_of(m * k, 13);
    let b = vec_of(k * n, 14);
    assert_eq!(in_pool(7, || kernels::matmul(&a, &b, m, k, n)), ref_matmul(&a, &b, m, k, n));
}

/// Extreme values: the limb split must carry correctly for all-ones inputs.
#[test]
fn matmul_all_ones_bits() {
    let (m, k, n) = (31, 77, 45);
    let a = vec![R64(u64::MAX); m * k];
    let b = vec![R64(u64::MAX); k * n];
    assert_eq!(kernels::matmul(&a, &b, m, k, n), ref_matmul(&a, &b, m, k, n));
}

#[test]
fn conv2d_large_batch() {
    let p = Conv2dParams { stride: [1, 2], padding: [1, 0], dilation: [2, 1], groups: 2 };
    let (xs, ws) = ([3, 4, 20, 17], [6, 2, 3, 3]);
    let x = vec_of(xs.iter().product(), 15);
    let w = vec_of(ws.iter().product(), 16);
    let (got, os) = kernels::conv2d(&x, xs, &w, ws, &p);
    // Same result as the per-group matmul formulation computed by hand.
    assert_eq!(got.len(), os.iter().product::<usize>());
    let [_, _, oh, ow] = os;
    let mut want = vec![R64::ZERO; got.len()];
    for b in 0..3 {
        for oc in 0..6 {
            let grp = oc / 3;
            for oi in 0..oh {
                for oj in 0..ow {
                    let mut s = R64::ZERO;
                    for ic in 0..2 {
                        for ki in 0..3 {
                            for kj in 0..3 {
                                let ii = (oi + 2 * ki) as isize - 1;
                                let jj = 2 * oj + kj;
                                if ii >= 0 && (ii as usize) < 20 && jj < 17 {
                                    s += x[((b * 4 + grp * 2 + ic) * 20 + ii as usize) * 17 + jj]
                                        * w[((oc * 2 + ic) * 3 + ki) * 3 + kj];
                                }
                            }
                        }
                    }
                    want[((b * 6 + oc) * oh + oi) * ow + oj] = s;
                }
            }
        }
    }
    assert_eq!(got, want);
}
