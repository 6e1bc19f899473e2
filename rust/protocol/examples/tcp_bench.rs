//! Times the protocols between parties and a dealer that run as separate processes
//! connected by TCP on loopback (this program re-runs itself for each role); medians of 5.
//!
//! `cargo run --release -p syft-mpc-protocol --example tcp_bench -- [parties]`

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};
use syft_mpc_protocol::{tcp, Party, Request};
use syft_mpc_ring::prg::Prg;
use syft_mpc_transport::{bind, TcpConfig};

const SESSION: [u8; 16] = [1; 16];
const KEY: [u8; 32] = [2; 32];

const REPEATS: usize = 5;

/// Median of `REPEATS` runs of `setup` then `f`, each started after a synchronising open
/// so every party starts the clock together; with the rounds and bytes of one run.
fn timed(p: &mut Party, setup: impl Fn(&mut Party), f: impl Fn(&mut Party)) -> (Duration, u64, u64) {
    let mut times = Vec::new();
    let (mut rounds, mut bytes) = (0, 0);
    for _ in 0..REPEATS {
        setup(p);
        p.open(&[syft_mpc_ring::R64(0)]).unwrap();
        let before = p.stats();
        let t = Instant::now();
        f(p);
        times.push(t.elapsed());
        let after = p.stats();
        (rounds, bytes) = (after.rounds - before.rounds, after.bytes_sent - before.bytes_sent);
    }
    times.sort();
    (times[REPEATS / 2], rounds, bytes)
}

fn party(i: usize, addrs: &[SocketAddr], dealer: SocketAddr) {
    let n = addrs.len();
    let listener = TcpListener::bind(addrs[i]).unwrap();
    let mut p =
        tcp::connect_party(i, addrs, listener, dealer, &tcp::default_names(n), SESSION, &KEY, &TcpConfig::default())
            .unwrap();
    let mut prg = Prg::from_entropy();
    let len = 1_000_000;
    let (x, y) = (prg.ring_vec(len), prg.ring_vec(len));
    let report = |what: &str, (t, r, b): (Duration, u64, u64)| {
        if i == 0 {
            println!(
                "{what:<40} {:>9.1} ms  {r} rounds  {:>6.1} MB sent by party 0",
                t.as_secs_f64() * 1e3,
                b as f64 / 1e6
            );
        }
    };
    let none = |_: &mut Party| {};
    let pre = |r: Request| move |p: &mut Party| p.preprocess(std::slice::from_ref(&r)).unwrap();
    report(
        "mul 1e6, online (preprocessed)",
        timed(&mut p, pre(Request::Mul { len }), |p| drop(p.mul(&x, &y).unwrap())),
    );
    report("mul 1e6, dealer on demand", timed(&mut p, none, |p| drop(p.mul(&x, &y).unwrap())));
    report("truncate 1e6, dealer on demand", timed(&mut p, none, |p| drop(p.truncate(&x, 1 << 16).unwrap())));
    report("relu 1e6, dealer on demand", timed(&mut p, none, |p| drop(p.relu(&x).unwrap())));
    let m = 1024;
    let (a, b) = (prg.ring_vec(m * m), prg.ring_vec(m * m));
    let mm = Request::Matmul { batch: 1, m, k: m, n: m };
    report(
        "matmul 1024^3, online (preprocessed)",
        timed(&mut p, pre(mm), |p| drop(p.matmul(&a, &b, m, m, m).unwrap())),
    );
    report("matmul 1024^3, dealer on demand", timed(&mut p, none, |p| drop(p.matmul(&a, &b, m, m, m).unwrap())));
    p.close().unwrap();
}

fn main() {
    syft_mpc_ring::alloc::reuse_large_blocks(); // as the Python extension does at import
    let args: Vec<String> = std::env::args().collect();
    if args.len() > 2 {
        // Child: role, then the dealer's address, then the parties' addresses.
        let dealer: SocketAddr = args[2].parse().unwrap();
        let addrs: Vec<SocketAddr> = args[3..].iter().map(|a| a.parse().unwrap()).collect();
        if args[1] == "dealer" {
            let l = TcpListener::bind(dealer).unwrap();
            let mut d = tcp::accept_dealer(
                addrs.len(),
                &l,
                &tcp::default_names(addrs.len()),
                SESSION,
                &KEY,
                &TcpConfig::default(),
            )
            .unwrap();
            d.serve().unwrap();
        } else {
            party(args[1].parse().unwrap(), &addrs, dealer);
        }
        return;
    }
    let n: usize = args.get(1).map(|s| s.parse().expect("number of parties")).unwrap_or(2);
    let free = || bind("127.0.0.1:0".parse().unwrap()).unwrap().local_addr().unwrap().to_string();
    let dealer = free();
    let addrs: Vec<String> = (0..n).map(|_| free()).collect();
    let exe = std::env::current_exe().unwrap();
    let spawn = |role: String| Command::new(&exe).arg(role).arg(&dealer).args(&addrs).spawn().unwrap();
    let mut children = vec![spawn("dealer".into())];
    children.extend((0..n).map(|i| spawn(i.to_string())));
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
}

#[global_allocator]
static ALLOC: syft_mpc_ring::alloc::HugePageHint = syft_mpc_ring::alloc::HugePageHint;
