//! AES-CTR PRG throughput: `cargo run --release -p syft-mpc-ring --example prg_throughput`
use std::time::Instant;
use syft_mpc_ring::prg::{Prg, Seed};
use syft_mpc_ring::R64;

fn main() {
    let mut v = vec![R64::ZERO; 1 << 21];
    let mut prg = Prg::new(Seed([3; 16]));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            prg.fill(&mut v);
            let t = Instant::now();
            for _ in 0..20 {
                prg.fill(&mut v);
            }
            let s = t.elapsed().as_secs_f64();
            println!("{threads} thread(s): {:.2} GB/s", 20.0 * 16.0 * (1 << 20) as f64 / s / 1e9);
        });
    }
}
