//! Throughput of the Z_2^64 matmul, in GMAC/s (10^9 multiply-adds per second).
//!
//! ```text
//! cargo run --release --example matmul_gmacs -p syft-mpc-ring -- 1024          # n x n x n
//! cargo run --release --example matmul_gmacs -p syft-mpc-ring -- 512 4096 64   # m k n
//! ```
//!
//! Runs on one thread and on every thread of the machine (its own rayon pools,
//! whatever RAYON_NUM_THREADS says), best of several repetitions. Compare with
//! float64 numpy on one thread:
//! `OPENBLAS_NUM_THREADS=1 python -c "import numpy as n,time; a=n.random.rand(1024,1024); a@a; t=time.perf_counter(); a@a; print(1024**3/(time.perf_counter()-t)/1e9)"`.

use std::time::Instant;
use syft_mpc_ring::{kernels, R64};

fn main() {
    let args: Vec<usize> =
        std::env::args().skip(1).map(|s| s.parse().expect("usage: matmul_gmacs N | M K N")).collect();
    let (m, k, n) = match args[..] {
        [] => (1024, 1024, 1024),
        [s] => (s, s, s),
        [m, k, n] => (m, k, n),
        _ => panic!("usage: matmul_gmacs N | M K N"),
    };
    // Deterministic pseudo-random operands (splitmix64); values are irrelevant to speed.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        R64(z ^ (z >> 31))
    };
    let a: Vec<R64> = (0..m * k).map(|_| next()).collect();
    let b: Vec<R64> = (0..k * n).map(|_| next()).collect();
    let macs = (m * k * n) as f64;
    let reps = ((2e10 / macs.max(1.0)) as usize).clamp(3, 50);

    let all = std::thread::available_parallelism().map_or(1, |t| t.get());
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }
    let mut reference: Option<Vec<R64>> = None;
    for t in threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("thread pool");
        let (best, c) = pool.install(|| {
            let mut c = kernels::matmul(&a, &b, m, k, n); // warm-up
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let t0 = Instant::now();
                c = kernels::matmul(&a, &b, m, k, n);
                best = best.min(t0.elapsed().as_secs_f64());
            }
            (best, c)
        });
        // Spot-check a few entries against the definition.
        for &(i, j) in &[(0, 0), (m.saturating_sub(1), n.saturating_sub(1)), (m / 2, n / 3)] {
            if i < m && j < n {
                let want: R64 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert_eq!(c[i * n + j], want, "wrong result at ({i}, {j})");
            }
        }
        if let Some(r) = &reference {
            assert_eq!(r, &c, "results differ between thread counts");
        }
        reference = Some(c);
        println!("u64 ring matmul {m}x{k}x{n}, {t} thread(s): {:.2} ms, {:.2} GMAC/s", best * 1e3, macs / best / 1e9);
    }
}
