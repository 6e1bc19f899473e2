//! Throughput of the Z_2^64 matmul, in GMAC/s (10^9 multiply-adds per second).
//!
//! ```text
//! cargo run --release --example matmul_gmacs -p syft-mpc-ring -- 1024          # n x n x n
//! cargo run --release --example matmul_gmacs -p syft-mpc-ring -- 512 4096 64   # m k n
//! cargo run --release --example matmul_gmacs -p syft-mpc-ring -- --kernel all 1024  # each kernel
//! ```
//!
//! `--kernel amx|avx512ifma|avx512|avx2|portable|all` runs the named kernel(s) (`gemm::force_kernel`);
//! without it the default choice runs (`SYFT_MPC_GEMM` can force one).
//!
//! Runs on one thread and on every thread of the machine (its own rayon pools),
//! or on `RAYON_NUM_THREADS` threads only where that is set; best of several repetitions. Compare with
//! float64 numpy on one thread:
//! `OPENBLAS_NUM_THREADS=1 python -c "import numpy as n,time; a=n.random.rand(1024,1024); a@a; t=time.perf_counter(); a@a; print(1024**3/(time.perf_counter()-t)/1e9)"`.

use std::time::Instant;
use syft_mpc_ring::gemm::{self, Kernel};
use syft_mpc_ring::{kernels, R64};

const USAGE: &str = "usage: matmul_gmacs [--kernel amx|avx512ifma|avx512|avx2|portable|all] N | M K N";

fn main() {
    let mut raw: Vec<String> = std::env::args().skip(1).collect();
    let mut chosen: Vec<Option<Kernel>> = vec![None];
    if let Some(pos) = raw.iter().position(|s| s == "--kernel") {
        let name = raw.get(pos + 1).expect(USAGE).clone();
        raw.drain(pos..pos + 2);
        chosen = if name == "all" {
            let avail = gemm::available_kernels();
            for k in Kernel::ALL {
                if !avail.contains(&k) {
                    println!("kernel {k}: not run, {}", k.support().unwrap_err());
                }
            }
            avail.into_iter().map(Some).collect()
        } else {
            vec![Some(Kernel::ALL.into_iter().find(|k| k.name() == name).expect(USAGE))]
        };
    }
    if chosen == [None] {
        let info = gemm::kernel_info();
        println!("kernel {} ({}); available: {:?}", info.chosen, info.reason, info.available);
    }
    let args: Vec<usize> = raw.iter().map(|s| s.parse().expect(USAGE)).collect();
    let (m, k, n) = match args[..] {
        [] => (1024, 1024, 1024),
        [s] => (s, s, s),
        [m, k, n] => (m, k, n),
        _ => panic!("{USAGE}"),
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

    for kernel in chosen {
        if let Err(e) = gemm::force_kernel(kernel) {
            println!("{e}");
            continue;
        }
        let kname = gemm::kernel_info().chosen;
        let all = std::thread::available_parallelism().map_or(1, |t| t.get());
        // RAYON_NUM_THREADS=t runs t threads only; unset: one thread and every thread.
        let mut threads = vec![1];
        match std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
            Some(t) if t > 0 => threads = vec![t],
            _ if all > 1 => threads.push(all),
            _ => {}
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
            println!(
                "u64 ring matmul {m}x{k}x{n}, kernel {kname}, {t} thread(s): {:.2} ms, {:.2} GMAC/s",
                best * 1e3,
                macs / best / 1e9
            );
        }
    }
}
