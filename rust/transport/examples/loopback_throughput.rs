//! Loopback throughput of the TCP channel between two processes.
//!
//! ```text
//! cargo run --release -p syft-mpc-transport --example loopback_throughput [MiB] [rounds] [--tls]
//! ```
//! The parent listens on 127.0.0.1:0 and re-runs this binary as the child (party 1); both
//! then do `rounds` full-duplex exchanges of `MiB` MiB each way and the parent prints the
//! median and best time per exchange, plus a small-message round-trip latency. `--tls`
//! runs the same over TLS 1.3 with a throwaway CA and certificate made at start-up.

use std::process::Command;
use std::time::{Duration, Instant};
use syft_mpc_transport::{accept, bind, connect, key_from_token, Channel, TcpChannel, TcpConfig, TlsConfig};

/// The child's environment variable holding the CA certificate (PEM) under `--tls`.
const CA_ENV: &str = "LOOPBACK_THROUGHPUT_CA";

/// A throwaway CA and a certificate for 127.0.0.1 it signed: (CA, certificate, key), PEM.
fn throwaway_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

const SESSION: [u8; 16] = *b"throughput-bench";

fn run(chan: &mut TcpChannel, mib: usize, rounds: usize) -> (Vec<Duration>, Vec<Duration>) {
    let n = mib << 20;
    let out = vec![0xA5u8; n];
    let mut inp = vec![0u8; n];
    let mut big = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        chan.exchange(&out, &mut inp).expect("exchange");
        big.push(t.elapsed());
    }
    let mut small = Vec::new();
    let mut b8 = [0u8; 8];
    for _ in 0..1000 {
        let t = Instant::now();
        chan.exchange(&[1u8; 8], &mut b8).expect("small exchange");
        small.push(t.elapsed());
    }
    (big, small)
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let key = key_from_token(b"bench");
    if args.get(1).map(String::as_str) == Some("--child") {
        let addr = args[2].parse().expect("address");
        let (mib, rounds) = (args[3].parse().expect("MiB"), args[4].parse().expect("rounds"));
        let mut cfg = TcpConfig::default();
        if let Ok(ca) = std::env::var(CA_ENV) {
            cfg.tls = TlsConfig::default().with_trusted_ca(ca.as_bytes(), CA_ENV).expect("CA");
        }
        let mut chan = connect(addr, 1, 0, SESSION, &key, "parent", &cfg).expect("connect");
        run(&mut chan, mib, rounds);
        return;
    }
    let tls = args.iter().any(|a| a == "--tls");
    let numbers: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with("--")).collect();
    let mib: usize = numbers.first().map_or(16, |s| s.parse().expect("MiB"));
    let rounds: usize = numbers.get(1).map_or(50, |s| s.parse().expect("rounds"));
    let mut cfg = TcpConfig::default();
    let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--child", &addr.to_string(), &mib.to_string(), &rounds.to_string()]);
    if tls {
        let (ca, cert, key) = throwaway_pki();
        cfg.tls = TlsConfig::default().with_identity(cert.as_bytes(), key.as_bytes(), "throwaway").expect("identity");
        cmd.env(CA_ENV, ca);
    }
    let mut child = cmd.spawn().expect("spawn child");
    let mut chan = accept(&listener, 0, &[1], SESSION, &key, &["parent".into(), "child".into()], &cfg).expect("accept");
    let (big, small) = run(&mut chan, mib, rounds);
    let (med, best) = median(big);
    let gbps = |d: Duration| (mib << 20) as f64 / d.as_secs_f64() / 1e9;
    println!(
        "{}{mib} MiB each way, full duplex, {rounds} rounds: median {:.2} ms ({:.2} GB/s per direction), best {:.2} ms ({:.2} GB/s)",
        if tls { "TLS 1.3: " } else { "plain TCP: " },
        med.as_secs_f64() * 1e3,
        gbps(med),
        best.as_secs_f64() * 1e3,
        gbps(best),
    );
    let (smed, sbest) = median(small);
    println!(
        "8-byte exchange round trip: median {:.1} us, best {:.1} us",
        smed.as_secs_f64() * 1e6,
        sbest.as_secs_f64() * 1e6
    );
    child.wait().expect("child");
}
