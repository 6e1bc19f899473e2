//! Every protocol against plaintext, for 2 and 3 parties over the in-memory channels
//! (each party and the dealer on its own thread, as they would be in processes).

use proptest::prelude::*;
use std::time::Duration;
use syft_mpc_protocol::{sharing, Conv2dParams, Dealer, Party, ProtocolError};
use syft_mpc_ring::prg::Prg;
use syft_mpc_ring::{kernels, R64};
use syft_mpc_transport::{memory_mesh, memory_pair, Channel};

/// Runs `f` on every party of an n-party session with a dealer; returns each party's output.
fn run<T: Send>(n: usize, f: impl Fn(&mut Party) -> T + Sync) -> Vec<T> {
    let mesh = memory_mesh(n);
    let (to_dealer, dealer_ends): (Vec<_>, Vec<_>) =
        (0..n).map(|i| memory_pair((&format!("party {i}"), "dealer"))).unzip();
    std::thread::scope(|s| {
        let dealer = s.spawn(move || {
            let chans = dealer_ends.into_iter().map(|c| Box::new(c) as Box<dyn Channel>).collect();
            Dealer::new(chans).and_then(|mut d| d.serve())
        });
        let handles: Vec<_> = mesh
            .into_iter()
            .zip(to_dealer)
            .enumerate()
            .map(|(i, (row, dealer_ch))| {
                let f = &f;
                s.spawn(move || {
                    let peers = row.into_iter().map(|c| c.map(|c| Box::new(c) as Box<dyn Channel>)).collect();
                    let mut p = Party::new(i, peers, Box::new(dealer_ch)).expect("session setup");
                    let out = f(&mut p);
                    p.close().expect("close");
                    out
                })
            })
            .collect();
        let outs = handles.into_iter().map(|h| h.join().expect("party panicked")).collect();
        dealer.join().expect("dealer panicked").expect("dealer failed");
        outs
    })
}

fn shares_of(x: &[R64], n: usize) -> Vec<Vec<R64>> {
    sharing::share(x, n, &mut Prg::from_entropy())
}

fn reveal(outs: &[Vec<R64>]) -> Vec<R64> {
    sharing::reconstruct(&outs.iter().map(|v| v.as_slice()).collect::<Vec<_>>())
}

fn ring(v: &[i64]) -> Vec<R64> {
    v.iter().map(|&x| R64::from_i64(x)).collect()
}

fn run_bilinear(n: usize, x: &[R64], y: &[R64], f: impl Fn(&mut Party, &[R64], &[R64]) -> Vec<R64> + Sync) -> Vec<R64> {
    let xs = shares_of(x, n);
    let ys = shares_of(y, n);
    reveal(&run(n, |p| f(p, &xs[p.id()], &ys[p.id()])))
}

#[test]
fn comparisons_of_empty_tensors_are_empty() {
    for n in 2..=3 {
        let outs = run(n, |p| (p.ltz(&[]).unwrap(), p.relu(&[]).unwrap(), p.relu_with_mask(&[]).unwrap()));
        assert!(outs.iter().all(|(lt, re, (y, m))| lt.is_empty() && re.is_empty() && y.is_empty() && m.is_empty()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn mul_matches_plaintext(n in 2usize..=3, v in prop::collection::vec((any::<u64>(), any::<u64>()), 0..300)) {
        let x: Vec<R64> = v.iter().map(|p| R64(p.0)).collect();
        let y: Vec<R64> = v.iter().map(|p| R64(p.1)).collect();
        let z = run_bilinear(n, &x, &y, |p, a, b| p.mul(a, b).unwrap());
        prop_assert_eq!(z, kernels::mul(&x, &y));
    }

    #[test]
    fn matmul_matches_plaintext(n in 2usize..=3, batch in 1usize..3, m in 0usize..9, k in 0usize..9, c in 0usize..9, seed in any::<u64>()) {
        let mut prg = Prg::new(syft_mpc_ring::prg::Seed([seed as u8; 16]));
        let x = prg.ring_vec(batch * m * k);
        let y = prg.ring_vec(batch * k * c);
        let z = run_bilinear(n, &x, &y, |p, a, b| p.bmm(a, b, batch, m, k, c).unwrap());
        prop_assert_eq!(z, kernels::bmm(&x, &y, batch, m, k, c));
    }

    #[test]
    fn conv2d_matches_plaintext(n in 2usize..=3, h in 3usize..7, w in 3usize..7, stride in 1usize..3, pad in 0usize..2, dil in 1usize..3, groups in 1usize..3) {
        let (batch, cg, og, kh) = (2, 2, 2, 2);
        let xs = [batch, cg * groups, h, w];
        let ws = [og * groups, cg, kh, kh];
        let params = Conv2dParams { stride: [stride, stride], padding: [pad, pad], dilation: [dil, dil], groups };
        let mut prg = Prg::from_entropy();
        let x = prg.ring_vec(xs.iter().product());
        let wt = prg.ring_vec(ws.iter().product());
        let z = run_bilinear(n, &x, &wt, |p, a, b| p.conv2d(a, xs, b, ws, &params).unwrap().0);
        prop_assert_eq!(z, kernels::conv2d(&x, xs, &wt, ws, &params).0);
    }

    #[test]
    fn truncate_within_one_unit(n in 2usize..=4, v in prop::collection::vec(-(1i64 << 62)..(1i64 << 62), 0..200), bits in 1u32..40) {
        let x = ring(&v);
        let xs = shares_of(&x, n);
        let z = reveal(&run(n, |p| p.truncate(&xs[p.id()], 1 << bits).unwrap()));
        for (zi, vi) in z.iter().zip(&v) {
            let want = vi >> bits; // arithmetic shift = floor division
            prop_assert!((zi.to_i64() - want).abs() <= 1, "{} >> {} = {} got {}", vi, bits, want, zi.to_i64());
        }
    }

    /// The fused product-then-truncation of every bilinear map against plaintext.
    #[test]
    fn truncated_products_match_plaintext(
        n in 2usize..=3,
        v in prop::collection::vec((-(1i64 << 28)..(1i64 << 28), -(1i64 << 28)..(1i64 << 28)), 1..60),
        bits in 1u32..24,
    ) {
        let (xv, yv): (Vec<i64>, Vec<i64>) = v.iter().copied().unzip();
        let (x, y) = (ring(&xv), ring(&yv));
        let within_one = |got: &[R64], want: &[R64]| {
            got.iter().zip(want).all(|(g, w)| (g.to_i64() - (w.to_i64() >> bits)).abs() <= 1)
        };
        let d = 1u64 << bits;
        let z = run_bilinear(n, &x, &y, |p, a, b| p.mul_truncated(a, b, d).unwrap());
        prop_assert!(within_one(&z, &kernels::mul(&x, &y)));
        // (1 x len) @ (len x 1), and the same as a 1x1 convolution over len channels.
        let len = x.len();
        let z = run_bilinear(n, &x, &y, |p, a, b| p.bmm_truncated(a, b, 1, 1, len, 1, d).unwrap());
        prop_assert!(within_one(&z, &kernels::matmul(&x, &y, 1, len, 1)));
        let prm = Conv2dParams::default();
        let z = run_bilinear(n, &x, &y, |p, a, b| p.conv2d_truncated(a, [1, len, 1, 1], b, [1, len, 1, 1], &prm, d).unwrap().0);
        prop_assert!(within_one(&z, &kernels::matmul(&x, &y, 1, len, 1)));
    }

    #[test]
    fn truncate_decimal_divisor(v in prop::collection::vec(-(1i64 << 61)..(1i64 << 61), 1..100)) {
        let x = ring(&v);
        let xs = shares_of(&x, 3);
        let z = reveal(&run(3, |p| p.truncate(&xs[p.id()], 1000).unwrap()));
        for (zi, vi) in z.iter().zip(&v) {
            prop_assert!((zi.to_i64() - vi.div_euclid(1000)).abs() <= 1);
        }
    }

    #[test]
    fn ltz_and_relu_are_exact(n in 2usize..=3, v in prop::collection::vec(any::<i64>(), 0..300)) {
        let x = ring(&v);
        let xs = shares_of(&x, n);
        let outs = run(n, |p| {
            let (lt, re) = (p.ltz(&xs[p.id()]).unwrap(), p.relu(&xs[p.id()]).unwrap());
            let (re2, mask) = p.relu_with_mask(&xs[p.id()]).unwrap();
            (lt, re, re2, mask)
        });
        let lt = reveal(&outs.iter().map(|o| o.0.clone()).collect::<Vec<_>>());
        let re = reveal(&outs.iter().map(|o| o.1.clone()).collect::<Vec<_>>());
        let re2 = reveal(&outs.iter().map(|o| o.2.clone()).collect::<Vec<_>>());
        let mask = reveal(&outs.iter().map(|o| o.3.clone()).collect::<Vec<_>>());
        for i in 0..v.len() {
            prop_assert_eq!(lt[i].0, (v[i] < 0) as u64);
            prop_assert_eq!(re[i].to_i64(), v[i].max(0));
            prop_assert_eq!(re2[i].to_i64(), v[i].max(0));
            prop_assert_eq!(mask[i].0, (v[i] >= 0) as u64);
        }
    }

    #[test]
    fn ltz_times_selects_whole_vectors(
        n in 2usize..=3,
        v in prop::collection::vec((any::<i64>(), any::<i64>(), any::<i64>()), 0..200),
        k in 0usize..=2,
    ) {
        let x = ring(&v.iter().map(|t| t.0).collect::<Vec<_>>());
        let payload: Vec<i64> = [v.iter().map(|t| t.1).collect::<Vec<_>>(), v.iter().map(|t| t.2).collect()].concat();
        let p = ring(&payload[..k * v.len()]);
        let (xs, ps) = (shares_of(&x, n), shares_of(&p, n));
        let got = reveal(&run(n, |party| party.ltz_times(&xs[party.id()], &ps[party.id()]).unwrap()));
        prop_assert_eq!(got.len(), p.len());
        for (j, g) in got.iter().enumerate() {
            let want = if v[j % v.len()].0 < 0 { payload[j] } else { 0 };
            prop_assert_eq!(g.to_i64(), want);
        }
    }

    /// Several thresholds on one opening and one set of tables: every block of every payload
    /// vector is multiplied by its own threshold's bit, exactly (values and thresholds whose
    /// differences do not overflow, ties included).
    #[test]
    fn below_times_selects_per_threshold(
        n in 2usize..=3,
        v in prop::collection::vec(prop_oneof![-(1i64 << 62)..(1i64 << 62), -3i64..3], 1..120),
        raw in prop::collection::vec(prop_oneof![-(1i64 << 62)..(1i64 << 62), -3i64..3, Just(-(1i64 << 62))], 1..=4),
        k in 1usize..=2,
        seed in any::<u64>(),
    ) {
        let mut thresholds = raw.clone();
        thresholds.push(v[0]); // a tie: x < t is false for x = t
        let (len, t) = (v.len(), thresholds.len());
        let payload: Vec<i64> = (0..k * t * len).map(|j| (j as i64).wrapping_mul(seed as i64 | 1)).collect();
        let (xs, ps) = (shares_of(&ring(&v), n), shares_of(&ring(&payload), n));
        let th = ring(&thresholds);
        let got = reveal(&run(n, |party| party.below_times(&xs[party.id()], &th, &ps[party.id()]).unwrap()));
        prop_assert_eq!(got.len(), payload.len());
        for (j, g) in got.iter().enumerate() {
            let (ti, i) = ((j / len) % t, j % len);
            let want = if v[i] < thresholds[ti] { payload[j] } else { 0 };
            prop_assert_eq!(g.to_i64(), want, "value {} threshold {}", v[i], thresholds[ti]);
        }
    }

    #[test]
    fn input_without_communication(n in 2usize..=4, owner in 0usize..4, v in prop::collection::vec(any::<u64>(), 0..100)) {
        let owner = owner % n;
        let x: Vec<R64> = v.iter().map(|&u| R64(u)).collect();
        let outs = run(n, |p| {
            let mine = (p.id() == owner).then_some(x.as_slice());
            let before = p.stats();
            let s = p.input(owner, mine, x.len()).unwrap();
            assert_eq!(p.stats(), before, "input must not communicate");
            s
        });
        prop_assert_eq!(reveal(&outs), x);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The shared series against the same series in float64 at the true angle: within the
    /// fixed-point encodings' rounding and a unit of the output.
    #[test]
    fn fourier_series_matches_float(
        n in 2usize..=3,
        v in prop::collection::vec(any::<i64>(), 0..150),
        coef in prop::collection::vec((-1.0f64..1.0, -1.0f64..1.0), 1..=9),
        multiplier in prop_oneof![Just(1u64), Just(2731), Just(1 << 16), any::<u64>()],
        out_bits in 0u32..=28,
    ) {
        // Magnitudes summing to at most 1, as the protocol requires.
        let total: f64 = coef.iter().map(|(a, b)| a.abs() + b.abs()).sum::<f64>().max(1.0);
        let (a, b): (Vec<f64>, Vec<f64>) = coef.iter().map(|(a, b)| (a / total, b / total)).unzip();
        let divisor = 1u64 << (29 - out_bits.max(1)).min(28);
        let scale = (1u64 << 29) as f64 / divisor as f64;
        let x = ring(&v);
        let xs = shares_of(&x, n);
        let got = reveal(&run(n, |p| p.fourier(&xs[p.id()], multiplier, &a, &b, divisor).unwrap()));
        // Each dealer value is off by ≤ 2^−13, weighing (|P| + |Q|) ≤ √2·(|a| + |b|) in all; each
        // public factor by ≤ 2^−18; the division by a unit.
        let tol = std::f64::consts::SQRT_2 * (2.0f64).powi(-13) + a.len() as f64 * (2.0f64).powi(-17) + 2.0 / scale + 1e-12;
        for (g, xv) in got.iter().zip(&x) {
            let t = xv.0.wrapping_mul(multiplier) as u32;
            let theta = f64::from(t) * std::f64::consts::TAU / 4_294_967_296.0;
            let want: f64 = (0..a.len()).map(|k| {
                let kt = theta * (k + 1) as f64;
                a[k] * kt.cos() + b[k] * kt.sin()
            }).sum();
            let err = (g.to_i64() as f64 / scale - want).abs();
            prop_assert!(err <= tol, "got {} want {want} (err {err:e} > {tol:e})", g.to_i64() as f64 / scale);
        }
    }
}

#[test]
fn fourier_rejects_bad_coefficients_and_divisors() {
    let x = [R64(1), R64(2)];
    let outs = run(2, |p| {
        [
            p.fourier(&x, 1, &[0.5], &[0.1, 0.2], 1 << 13),
            p.fourier(&x, 1, &[f64::NAN], &[0.1], 1 << 13),
            p.fourier(&x, 1, &[0.7], &[0.7], 1 << 13),
            p.fourier(&x, 1, &[], &[], 1 << 13),
            p.fourier(&x, 1, &[0.1], &[0.1], 0),
            p.fourier(&x, 1, &[0.1], &[0.1], 1 << 29),
        ]
        .map(|r| r.map_err(|e| e.to_string()).unwrap_err())
    });
    for o in outs {
        assert!(o[0].contains("1 cosine and 2 sine"), "{}", o[0]);
        assert!(o[1].contains("sum to NaN"), "{}", o[1]);
        assert!(o[2].contains("must be at most 1"), "{}", o[2]);
        assert!(o[3].contains("0 harmonics"), "{}", o[3]);
        assert!(o[4].contains("divided by 0"), "{}", o[4]);
        assert!(o[5].contains("2^28"), "{}", o[5]);
    }
}

#[test]
fn ltz_times_rejects_a_partial_payload() {
    let outs = run(2, |p| p.ltz_times(&[R64(1), R64(2)], &[R64(3), R64(4), R64(5)]).map_err(|e| e.to_string()));
    for o in outs {
        assert!(o.unwrap_err().contains("whole vectors of 2"));
    }
}

#[test]
fn comparison_at_the_edges() {
    let v = vec![0, -1, 1, i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1, 1 << 62, -(1 << 62), 15, 16, -16, -17];
    for n in [2, 3] {
        let x = ring(&v);
        let xs = shares_of(&x, n);
        let outs = run(n, |p| p.relu(&xs[p.id()]).unwrap());
        let re = reveal(&outs);
        for i in 0..v.len() {
            assert_eq!(re[i].to_i64(), v[i].max(0), "relu({}) with {n} parties", v[i]);
        }
    }
}

#[test]
fn large_mul_crosses_many_frames_and_counts_rounds() {
    let len = 1 << 20;
    let mut prg = Prg::from_entropy();
    let x = prg.ring_vec(len);
    let y = prg.ring_vec(len);
    let xs = shares_of(&x, 2);
    let ys = shares_of(&y, 2);
    let outs = run(2, |p| {
        let before = p.stats();
        let z = p.mul(&xs[p.id()], &ys[p.id()]).unwrap();
        let after = p.stats();
        (
            z,
            syft_mpc_protocol::Stats {
                rounds: after.rounds - before.rounds,
                bytes_sent: after.bytes_sent - before.bytes_sent,
                ..after
            },
        )
    });
    assert_eq!(reveal(&outs.iter().map(|o| o.0.clone()).collect::<Vec<_>>()), kernels::mul(&x, &y));
    for (_, st) in &outs {
        assert_eq!(st.rounds, 1);
        assert_eq!(st.bytes_sent, 16 * len as u64);
    }
    assert_eq!(outs[0].1.dealer_bytes_received, 16, "party 0 only gets its seed");
    assert_eq!(outs[1].1.dealer_bytes_received, 16 + 8 * len as u64, "the last party gets c");
}

/// The last party's msb shares of a truncation pair travel in the bytes that count for the
/// divisor (2 for d ≤ 2^16, 4 for d ≤ 2^32, else 8), alone and after a product, 2 and 3 parties.
#[test]
fn truncation_pairs_send_only_the_msb_bytes_that_count() {
    let len = 999; // odd: the narrow field ends inside a word
    let v: Vec<i64> = (0..len as i64).map(|i| ((i - 500) * 7919) << 20).collect();
    let x = ring(&v);
    for n in [2, 3] {
        let xs = shares_of(&x, n);
        let one = vec![R64::from_i64(1); len];
        let ones = shares_of(&one, n);
        for (bits, per_elem) in [(1u32, 10u64), (16, 10), (17, 12), (32, 12), (33, 16), (40, 16)] {
            let d = 1u64 << bits;
            let outs = run(n, |p| {
                let before = p.stats().dealer_bytes_received;
                let z = p.truncate(&xs[p.id()], d).unwrap();
                let trunc_bytes = p.stats().dealer_bytes_received - before;
                let zp = p.mul_truncated(&xs[p.id()], &ones[p.id()], d).unwrap();
                (z, zp, trunc_bytes)
            });
            assert_eq!(outs[n - 1].2, per_elem * len as u64, "d = 2^{bits}, {n} parties");
            for got in [
                reveal(&outs.iter().map(|o| o.0.clone()).collect::<Vec<_>>()),
                reveal(&outs.iter().map(|o| o.1.clone()).collect::<Vec<_>>()),
            ] {
                for (g, w) in got.iter().zip(&v) {
                    assert!((g.to_i64() - (w >> bits)).abs() <= 1, "{w} >> {bits}: got {}", g.to_i64());
                }
            }
        }
    }
}

#[test]
fn comparison_rounds_and_bytes() {
    let len = 1000;
    let x = Prg::from_entropy().ring_vec(len);
    let xs = shares_of(&x, 2);
    let st = run(2, |p| {
        p.relu(&xs[p.id()]).unwrap();
        p.stats()
    });
    assert_eq!(st[0].rounds, 6);
    let per_elem = st[0].bytes_sent as f64 / len as f64;
    assert!(per_elem < 25.0, "{per_elem} bytes per element");
}

#[test]
fn preprocessing_runs_ahead_and_checks_order() {
    use syft_mpc_protocol::Request;
    let x = ring(&[3, -4, 5]);
    let xs = shares_of(&x, 2);
    let outs = run(2, |p| {
        p.preprocess(&[Request::Mul { len: 3 }, Request::Compare { len: 3, thresholds: 1, products: 1 }]).unwrap();
        let sq = p.mul(&xs[p.id()], &xs[p.id()]).unwrap();
        let before = p.stats().dealer_bytes_received;
        p.relu(&xs[p.id()]).unwrap();
        assert_eq!(p.stats().dealer_bytes_received, before, "online phase must not wait for the dealer");
        p.preprocess(&[Request::Mul { len: 3 }]).unwrap();
        let err = p.relu(&xs[p.id()]).unwrap_err().to_string();
        assert!(err.contains("same sequence"), "{err}");
        sq
    });
    assert_eq!(reveal(&outs), ring(&[9, 16, 25]));
}

#[test]
fn prefetched_material_is_used_in_order() {
    use syft_mpc_protocol::Request;
    let x = ring(&[3 << 8, -4 << 8, 5 << 8]);
    let xs = shares_of(&x, 2);
    let outs = run(2, |p| {
        let me = &xs[p.id()];
        // Asked for ahead, answers unread; a preprocess behind them reads them all, in order.
        p.prefetch(&[Request::Mul { len: 3 }, Request::Trunc { len: 3, divisor: 256 }]).unwrap();
        p.preprocess(&[Request::Mul { len: 3 }]).unwrap();
        let sq = p.mul(me, me).unwrap();
        let sq = p.truncate(&sq, 256).unwrap();
        let before = p.stats().dealer_bytes_received;
        let cube = p.mul(&sq, me).unwrap();
        assert_eq!(p.stats().dealer_bytes_received, before, "preprocessed material is already here");
        // A wrong operation after a prefetch is refused, and the material stays for the right one.
        p.prefetch(&[Request::Mul { len: 3 }]).unwrap();
        let err = p.relu(me).unwrap_err().to_string();
        assert!(err.contains("same sequence"), "{err}");
        let cube2 = p.mul(&sq, me).unwrap();
        (p.open(&sq).unwrap(), p.open(&cube).unwrap(), p.open(&cube2).unwrap())
    });
    let (sq, cube, cube2) = &outs[0];
    assert_eq!(cube, cube2);
    assert!(sq.iter().zip([9i64 << 8, 16 << 8, 25 << 8]).all(|(g, w)| (g.to_i64() - w).abs() <= 1), "{sq:?}");
    assert!(cube.iter().zip([27i64 << 16, -64 << 16, 125 << 16]).all(|(g, w)| (g.to_i64() - w).abs() <= 1 << 8));
}

#[test]
fn truncated_product_with_bad_input_loses_nothing() {
    let x = ring(&[7 << 4, 9 << 4]);
    let xs = shares_of(&x, 3);
    let outs = run(3, |p| {
        let me = &xs[p.id()];
        let shape = p.mul_truncated(me, &me[..1], 16).unwrap_err().to_string();
        let zero = p.mul_truncated(me, me, 0).unwrap_err().to_string();
        let ok = p.mul_truncated(me, me, 16).unwrap();
        (shape, zero, ok)
    });
    assert!(outs[0].0.contains("mul of 2 and 1"), "{}", outs[0].0);
    assert!(outs[0].1.contains("divisor of 0"), "{}", outs[0].1);
    let z = reveal(&outs.into_iter().map(|o| o.2).collect::<Vec<_>>());
    assert!(z.iter().zip([49i64 << 4, 81 << 4]).all(|(g, w)| (g.to_i64() - w).abs() <= 1), "{z:?}");
}

#[test]
fn shape_errors_are_reported() {
    let out = run(2, |p| {
        let a = p.mul(&[R64(1)], &[R64(1), R64(2)]).unwrap_err();
        let b = p.matmul(&[R64(1); 6], &[R64(1); 5], 2, 3, 2).unwrap_err();
        (a.to_string(), b.to_string())
    });
    assert!(out[0].0.contains("mul of 1 and 2"), "{}", out[0].0);
    assert!(out[0].1.contains("2x3"), "{}", out[0].1);
}

#[test]
fn local_truncation_refuses_three_parties() {
    let out = run(3, |p| p.truncate_local(&[R64(1)], 16).map(|_| ()).unwrap_err().to_string());
    assert!(out[0].contains("2 parties"));
}

#[test]
fn vanished_peer_is_named_within_the_timeout() {
    let mesh = memory_mesh(2);
    let (d0, _dealer0) = memory_pair(("party 0", "dealer"));
    let mut rows = mesh.into_iter();
    let row0 = rows.next().unwrap();
    let row1 = rows.next().unwrap();
    // The dealer sends party 0 its seed, then party 1 vanishes before the protocol runs.
    let mut dealer0 = _dealer0;
    dealer0.send(&[0u8; 16]).unwrap();
    let peer1 = std::thread::spawn(move || {
        let mut ch = row1.into_iter().flatten().next().unwrap();
        let mut s = [0u8; 16];
        ch.recv_into(&mut s).unwrap(); // pairwise seed, then disappear
        std::thread::sleep(Duration::from_millis(50));
    });
    let peers = row0.into_iter().map(|c| c.map(|c| Box::new(c) as Box<dyn Channel>)).collect();
    let mut p = Party::new(0, peers, Box::new(d0)).unwrap();
    p.set_timeout(Duration::from_millis(300));
    let t = std::time::Instant::now();
    let err = p.open(&[R64(1)]).unwrap_err();
    peer1.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, ProtocolError::Transport(_)));
    assert!(err.to_string().contains("party 1"), "{err}");
}

#[test]
fn failed_operation_leaves_no_stale_dealer_answer_behind() {
    use syft_mpc_protocol::Request;
    let mut rows = memory_mesh(2).into_iter();
    let (row0, row1) = (rows.next().unwrap(), rows.next().unwrap());
    let (to_dealer, dealer_ends): (Vec<_>, Vec<_>) =
        (0..2).map(|i| memory_pair((&format!("party {i}"), "dealer"))).unzip();
    let mut to_dealer = to_dealer.into_iter();
    let (d0, d1) = (to_dealer.next().unwrap(), to_dealer.next().unwrap());
    let dealer = std::thread::spawn(move || {
        let chans = dealer_ends.into_iter().map(|c| Box::new(c) as Box<dyn Channel>).collect();
        Dealer::new(chans).and_then(|mut d| d.serve())
    });
    let boxed = |row: Vec<Option<_>>| row.into_iter().map(|c| c.map(|c| Box::new(c) as Box<dyn Channel>)).collect();
    // Party 0 joins, then vanishes before the product.
    let p0 = std::thread::spawn(move || drop(Party::new(0, boxed(row0), Box::new(d0)).unwrap()));
    let mut p1 = Party::new(1, boxed(row1), Box::new(d1)).unwrap();
    p0.join().unwrap();
    p1.set_timeout(Duration::from_millis(300));
    let x = vec![R64(3); 8];
    assert!(matches!(p1.mul(&x, &x).unwrap_err(), ProtocolError::Transport(_)));
    // The triple's correction is still unread: the dealer may not be asked for more.
    for err in [p1.preprocess(&[Request::Mul { len: 8 }]).unwrap_err(), p1.mul(&x, &x).unwrap_err()] {
        assert!(matches!(err, ProtocolError::Dealer(_)) && err.to_string().contains("out of step"), "{err}");
    }
    drop(p1); // no goodbye behind the unread answer: dropping the channel ends the dealer
    assert!(dealer.join().unwrap().is_err());
}

#[test]
fn malformed_requests_are_rejected() {
    use syft_mpc_protocol::Request;
    assert!(Request::decode(&[]).is_err());
    assert!(Request::decode(&[9]).is_err());
    let mut huge = vec![1u8];
    huge.extend(u64::MAX.to_le_bytes());
    assert!(Request::decode(&huge).unwrap_err().to_string().contains("exceeds"));
    let r = Request::Conv2d {
        x_shape: [1, 2, 5, 5],
        w_shape: [4, 1, 3, 3],
        params: Conv2dParams { groups: 2, ..Default::default() },
    };
    assert_eq!(Request::decode(&r.encode()).unwrap(), r);
    let zero = Request::Trunc { len: 4, divisor: 0 };
    assert!(Request::decode(&zero.encode()).unwrap_err().to_string().contains("divisor of 0"));
}

/// Chi-square statistic of the top 4 bits of `v` against the uniform distribution (15 d.o.f.).
fn chi2_top_nibble(v: &[R64]) -> f64 {
    let mut counts = [0f64; 16];
    v.iter().for_each(|x| counts[(x.0 >> 60) as usize] += 1.0);
    let expect = v.len() as f64 / 16.0;
    counts.iter().map(|c| (c - expect).powi(2) / expect).sum()
}

#[test]
fn shares_are_uniform_whatever_the_secret() {
    // 15 degrees of freedom: P(chi2 > 68.0) < 1e-8, so 18 checks per run never raise a false
    // alarm in practice (at P < 0.001 each they did, once in ~50 runs); a share that depends on
    // the secret, or a broken PRG, gives values in the thousands.
    const CHI2_15_LIMIT: f64 = 68.0;
    let len = 1 << 16;
    for secret in [vec![R64::ZERO; len], vec![R64(u64::MAX); len], ring(&vec![1 << 40; len])] {
        for n in [2, 3] {
            let shares = shares_of(&secret, n);
            for s in &shares {
                assert!(chi2_top_nibble(s) < CHI2_15_LIMIT, "share not uniform for n={n}");
            }
        }
        // What a party sees during a Beaver mul (ε = x − a) is uniform too.
        let xs = shares_of(&secret, 2);
        let seen = run(2, |p| {
            let mine = &xs[p.id()];
            p.mul(mine, mine).unwrap();
            p.input(0, (p.id() == 0).then_some(&secret[..]), len).unwrap()
        });
        assert!(chi2_top_nibble(&seen[1]) < CHI2_15_LIMIT, "input share of party 1 not uniform");
    }
}
