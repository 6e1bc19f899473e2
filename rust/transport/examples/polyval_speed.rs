//! In-cache speed of POLYVAL, the frame tag's hash: 128 KiB of data (the transport's MAC
//! piece, which stays in L2), hashed again and again, per path, in GB/s and in bytes per
//! cycle (docs/BENCHMARKS.md, "Per-frame MAC").
//!
//! `cargo run --release -p syft-mpc-transport --example polyval_speed`
//!
//! The clock is estimated from a chain of dependent 64-bit `imul`s (3 cycles each on
//! Intel and AMD cores since 2011), as guests often have no cycle counter.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use syft_mpc_transport::polyval_hash::{Path, Polyval, PolyvalKey};

const LEN: usize = 128 * 1024;

#[cfg(target_arch = "x86_64")]
fn clock_ghz() -> Option<f64> {
    let mut best = 0.0f64;
    for _ in 0..5 {
        let n: u64 = 100_000_000;
        let t = Instant::now();
        // SAFETY: register-only arithmetic.
        unsafe {
            std::arch::asm!(
                "2:",
                "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}",
                "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}", "imul {x}, {x}",
                "sub {n}, 10",
                "jnz 2b",
                x = inout(reg) 3u64 => _,
                n = inout(reg) n => _,
                options(nomem, nostack),
            );
        }
        best = best.max(3.0 * n as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Some(best)
}

#[cfg(not(target_arch = "x86_64"))]
fn clock_ghz() -> Option<f64> {
    None
}

fn main() {
    let ghz = clock_ghz();
    if let Some(g) = ghz {
        println!("clock ≈ {g:.2} GHz (dependent imul chain)");
    }
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + 3) as u8).collect();
    for path in Path::available() {
        let key = Arc::new(PolyvalKey::with_path([9; 16], path));
        let once = || {
            let mut p = Polyval::new(Arc::clone(&key));
            p.update(black_box(&data));
            p.finalize()[0]
        };
        let reps = if path == Path::Portable { 20 } else { 400 };
        for _ in 0..reps / 4 {
            black_box(once());
        }
        // Best of 20 batches: the machine may be shared.
        let mut best = f64::INFINITY;
        for _ in 0..20 {
            let t = Instant::now();
            for _ in 0..reps {
                black_box(once());
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let bps = (reps * LEN) as f64 / best;
        match ghz {
            Some(g) => println!("{:12} {:6.2} GB/s  {:5.2} bytes/cycle", path.name(), bps / 1e9, bps / (g * 1e9)),
            None => println!("{:12} {:6.2} GB/s", path.name(), bps / 1e9),
        }
    }
}
