//! Throughput of the non-matmul kernels (elements/s), to check they run at
//! memory speed: `cargo run --release --example kernels_throughput -p syft-mpc-ring`.

use std::time::Instant;
use syft_mpc_ring::prg::{Prg, Seed};
use syft_mpc_ring::{kernels, simd, R64};

fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut t = f64::INFINITY;
    for _ in 0..reps {
        let t0 = Instant::now();
        std::hint::black_box(f());
        t = t.min(t0.elapsed().as_secs_f64());
    }
    t
}

/// The element-wise passes at each vector level this CPU has, on buffers in
/// L2 (32 Ki elements, the protocols' chunk) and in memory (8 Mi elements).
fn per_level() {
    for n in [1usize << 15, 1 << 23] {
        let a: Vec<R64> = (0..n as u64).map(|i| R64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))).collect();
        let b: Vec<R64> = a.iter().map(|x| R64(x.0.rotate_left(17))).collect();
        let mut out = vec![R64::ZERO; n];
        let mut acc = a.clone();
        let reps = if n < 1 << 20 { 4000 } else { 10 };
        let inner = |t: f64| n as f64 / t / 1e9;
        for level in simd::available() {
            simd::force(Some(level)).expect("available");
            let add = best(reps, || kernels::add_into(&mut out, &a, &b));
            let mul = best(reps, || kernels::mul_assign(&mut acc, &b));
            let fused = best(reps, || {
                kernels::for_chunks_mut(&mut out, |o, c| {
                    for ((v, &x), &y) in c.iter_mut().zip(&a[o..]).zip(&b[o..]) {
                        *v = x * y + x;
                    }
                })
            });
            println!(
                "n={n:>8} simd {level:<8} add_into {:6.2}  mul_assign {:6.2}  fused a*b+a {:6.2} Gelem/s",
                inner(add),
                inner(mul),
                inner(fused)
            );
        }
        simd::force(None).expect("reset");
    }
    let mut prg = Prg::new(Seed([3; 16]));
    for n in [1usize << 12, 1 << 21] {
        let mut v = vec![R64::ZERO; n];
        for level in simd::available() {
            simd::force(Some(level)).expect("available");
            let t = best(if n < 1 << 20 { 20_000 } else { 20 }, || prg.fill(&mut v));
            println!("prg fill n={n:>8} simd {level:<8} {:.2} GB/s", n as f64 * 8.0 / t / 1e9);
        }
    }
    simd::force(None).expect("reset");
}

fn main() {
    if std::env::args().any(|a| a == "--levels") {
        return per_level();
    }
    let n = 1 << 23;
    let a: Vec<R64> = (0..n as u64).map(|i| R64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))).collect();
    let b: Vec<R64> = a.iter().map(|x| R64(x.0.rotate_left(17))).collect();
    let report = |name: &str, t: f64| println!("{name:<28} {:8.2} ms  {:7.2} Gelem/s", t * 1e3, n as f64 / t / 1e9);
    report("add", best(10, || kernels::add(&a, &b)));
    report("mul", best(10, || kernels::mul(&a, &b)));
    report("scale", best(10, || kernels::scale(&a, R64(12345))));
    let mut acc = a.clone();
    report("mul_assign", best(10, || kernels::mul_assign(&mut acc, &b)));
    report("sum_axis [2048,4096] ax0", best(10, || kernels::sum_axis(&a, &[2048, 4096], 0)));
    report("sum_axis [2048,4096] ax1", best(10, || kernels::sum_axis(&a, &[2048, 4096], 1)));
    report("transpose 2048x4096", best(10, || kernels::transpose(&a, 2048, 4096)));
    report("permute [32,64,64,64] 0231", best(10, || kernels::permute(&a, &[32, 64, 64, 64], &[0, 2, 3, 1])));
    report("permute [32,64,64,64] 3120", best(10, || kernels::permute(&a, &[32, 64, 64, 64], &[3, 1, 2, 0])));
    let p = kernels::Conv2dParams { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 };
    let x = &a[..32 * 64 * 32 * 32];
    let w = &b[..64 * 64 * 9];
    let t = best(3, || kernels::conv2d(x, [32, 64, 32, 32], w, [64, 64, 3, 3], &p));
    let macs = 32.0 * 64.0 * 32.0 * 32.0 * 64.0 * 9.0;
    println!("{:<28} {:8.2} ms  {:7.2} GMAC/s", "conv2d 32x64x32x32, 64x3x3", t * 1e3, macs / t / 1e9);
}
