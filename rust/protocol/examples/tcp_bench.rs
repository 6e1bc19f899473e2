//! Times the protocols between parties and a dealer connected by TCP on loopback
//! (each party and the dealer on its own thread of this process).
//!
//! `cargo run --release -p syft-mpc-protocol --example tcp_bench -- [parties]`

use std::net::SocketAddr;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use syft_mpc_protocol::{tcp, Party, Request};
use syft_mpc_ring::prg::Prg;
use syft_mpc_transport::{bind, TcpConfig};

fn timed(p: &mut Party, barrier: &Barrier, f: impl FnOnce(&mut Party)) -> (Duration, u64, u64) {
    barrier.wait();
    let before = p.stats();
    let t = Instant::now();
    f(p);
    let took = t.elapsed();
    let after = p.stats();
    (took, after.rounds - before.rounds, after.bytes_sent - before.bytes_sent)
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().expect("number of parties")).unwrap_or(2);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners: Vec<_> = (0..n).map(|_| bind(any).unwrap()).collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let dl = bind(any).unwrap();
    let daddr = dl.local_addr().unwrap();
    let names = tcp::default_names(n);
    let cfg = TcpConfig::default();
    let (session, key) = ([1u8; 16], [2u8; 32]);
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let (names, cfg, addrs, barrier) = (&names, &cfg, &addrs, &barrier);
        s.spawn(move || tcp::accept_dealer(n, &dl, names, session, &key, cfg).unwrap().serve().unwrap());
        for (i, l) in listeners.into_iter().enumerate() {
            s.spawn(move || {
                let mut p = tcp::connect_party(i, addrs, l, daddr, names, session, &key, cfg).unwrap();
                let mut prg = Prg::from_entropy();
                let len = 1_000_000;
                let (x, y) = (prg.ring_vec(len), prg.ring_vec(len));
                let report = |what: &str, (t, r, b): (Duration, u64, u64)| {
                    if i == 0 {
                        println!("{what:<40} {:>9.1} ms  {r} rounds  {:>7.1} MB sent", t.as_secs_f64() * 1e3, b as f64 / 1e6);
                    }
                };
                p.preprocess(&[Request::Mul { len }]).unwrap();
                report("mul 1e6, online (preprocessed)", timed(&mut p, barrier, |p| drop(p.mul(&x, &y).unwrap())));
                report("mul 1e6, dealer on demand", timed(&mut p, barrier, |p| drop(p.mul(&x, &y).unwrap())));
                report("truncate 1e6", timed(&mut p, barrier, |p| drop(p.truncate(&x, 1 << 16).unwrap())));
                report("relu 1e6", timed(&mut p, barrier, |p| drop(p.relu(&x).unwrap())));
                let m = 1024;
                let (a, b) = (prg.ring_vec(m * m), prg.ring_vec(m * m));
                p.preprocess(&[Request::Matmul { batch: 1, m, k: m, n: m }]).unwrap();
                report("matmul 1024^3, online (preprocessed)", timed(&mut p, barrier, |p| drop(p.matmul(&a, &b, m, m, m).unwrap())));
                report("matmul 1024^3, dealer on demand", timed(&mut p, barrier, |p| drop(p.matmul(&a, &b, m, m, m).unwrap())));
                p.close().unwrap();
            });
        }
    });
}
