//! Protocols over real TCP sockets on loopback: the same code path as separate processes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use syft_mpc_protocol::{sharing, tcp, Party, ProtocolError};
use syft_mpc_ring::prg::Prg;
use syft_mpc_ring::{kernels, R64};
use syft_mpc_transport::{bind, TcpConfig};

const SESSION: [u8; 16] = [42; 16];
const KEY: [u8; 32] = [7; 32];

fn cfg(timeout: Duration) -> TcpConfig {
    TcpConfig { timeout, connect_timeout: Duration::from_secs(10), ..TcpConfig::default() }
}

/// Runs `f` on each of `n` TCP-connected parties (plus a TCP dealer), each on its own thread.
fn run_tcp<T: Send>(
    n: usize,
    timeout: Duration,
    f: impl Fn(Party) -> T + Sync,
) -> (Vec<T>, syft_mpc_protocol::Result<u64>) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners: Vec<_> = (0..n).map(|_| bind(any).unwrap()).collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let dealer_listener = bind(any).unwrap();
    let dealer_addr = dealer_listener.local_addr().unwrap();
    let names = tcp::default_names(n);
    let cfg = cfg(timeout);
    std::thread::scope(|s| {
        let (names, cfg, addrs, f) = (&names, &cfg, &addrs, &f);
        let dealer = s.spawn(move || {
            tcp::accept_dealer(n, &dealer_listener, names, SESSION, &KEY, cfg).and_then(|mut d| d.serve())
        });
        let handles: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                s.spawn(move || f(tcp::connect_party(i, addrs, l, dealer_addr, names, SESSION, &KEY, cfg).unwrap()))
            })
            .collect();
        let outs = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (outs, dealer.join().unwrap())
    })
}

#[test]
fn three_parties_multiply_a_million_values_over_tcp() {
    let len = 1 << 20;
    let mut prg = Prg::from_entropy();
    let (x, y) = (prg.ring_vec(len), prg.ring_vec(len));
    let xs = sharing::share(&x, 3, &mut prg);
    let ys = sharing::share(&y, 3, &mut prg);
    let (outs, dealer) = run_tcp(3, Duration::from_secs(30), |mut p| {
        let z = p.mul(&xs[p.id()], &ys[p.id()]).unwrap();
        let r = p.relu(&z[..1000]).unwrap();
        p.close().unwrap();
        (z, r)
    });
    assert_eq!(dealer.unwrap(), 2);
    let z = sharing::reconstruct(&outs.iter().map(|o| o.0.as_slice()).collect::<Vec<_>>());
    let want = kernels::mul(&x, &y);
    assert_eq!(z, want);
    let r = sharing::reconstruct(&outs.iter().map(|o| o.1.as_slice()).collect::<Vec<_>>());
    assert_eq!(r, want[..1000].iter().map(|v| R64::from_i64(v.to_i64().max(0))).collect::<Vec<_>>());
}

#[test]
fn a_vanished_peer_is_named_promptly() {
    let (outs, _) = run_tcp(2, Duration::from_secs(20), |mut p| {
        if p.id() == 1 {
            drop(p); // party 1 crashes before the multiplication
            return None;
        }
        let t = Instant::now();
        let err = p.mul(&[R64(1); 100_000], &[R64(2); 100_000]).unwrap_err();
        Some((err, t.elapsed()))
    });
    let (err, took) = outs[0].as_ref().unwrap();
    assert!(matches!(err, ProtocolError::Transport(_)), "{err}");
    assert!(err.to_string().contains("party 1 (party1)"), "{err}");
    assert!(*took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_stalled_peer_times_out_with_its_name() {
    let (outs, _) = run_tcp(2, Duration::from_millis(400), |mut p| {
        if p.id() == 1 {
            std::thread::sleep(Duration::from_millis(1500)); // alive but silent
            return None;
        }
        let t = Instant::now();
        let err = p.open(&[R64(1)]).unwrap_err();
        Some((err, t.elapsed()))
    });
    let (err, took) = outs[0].as_ref().unwrap();
    assert!(err.to_string().contains("timed out") && err.to_string().contains("party 1"), "{err}");
    assert!(*took < Duration::from_secs(1), "took {took:?}");
}

/// Large bilinear products, where the last party reads the dealer's `c_i` (and a queued
/// truncation pair) on a second thread during its products: truncated, untruncated, and
/// after a prefetch of two triples (the second stays queued), then an element-wise product
/// to check that the dealer stream is still in step.
#[test]
fn large_products_read_the_dealer_during_the_products() {
    let (m, k, n) = (512, 8, 512); // c: 2 MiB, above the background-read threshold
    let mut prg = Prg::from_entropy();
    let small = |prg: &mut Prg, len: usize| -> Vec<R64> {
        prg.ring_vec(len).iter().map(|v| R64::from_i64((v.0 >> 44) as i64 - (1 << 19))).collect()
    };
    let (x, y) = (small(&mut prg, m * k), small(&mut prg, k * n));
    let d = 1u64 << 16;
    for parties in [2, 3] {
        let xs = sharing::share(&x, parties, &mut prg);
        let ys = sharing::share(&y, parties, &mut prg);
        let (outs, dealer) = run_tcp(parties, Duration::from_secs(30), |mut p| {
            let (a, b) = (&xs[p.id()], &ys[p.id()]);
            let t = p.bmm_truncated(a, b, 1, m, k, n, d).unwrap();
            let u = p.matmul(a, b, m, k, n).unwrap();
            let req = syft_mpc_protocol::Request::Matmul { batch: 1, m, k, n };
            p.prefetch(&[req.clone(), req]).unwrap();
            let v = p.matmul(a, b, m, k, n).unwrap();
            let w = p.matmul(a, b, m, k, n).unwrap();
            let e = p.mul(&a[..100], &b[..100]).unwrap();
            p.close().unwrap();
            [t, u, v, w, e]
        });
        assert_eq!(dealer.unwrap(), 6, "{parties} parties");
        let open = |i: usize| sharing::reconstruct(&outs.iter().map(|o| o[i].as_slice()).collect::<Vec<_>>());
        let want = kernels::matmul(&x, &y, m, k, n);
        let t = open(0);
        assert!(t.iter().zip(&want).all(|(g, w)| (g.to_i64() - (w.to_i64() >> 16)).abs() <= 1), "{parties} parties");
        for i in 1..4 {
            assert_eq!(open(i), want, "product {i}, {parties} parties");
        }
        assert_eq!(open(4), kernels::mul(&x[..100], &y[..100]), "{parties} parties");
    }
}
