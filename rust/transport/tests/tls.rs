//! TLS channel tests on 127.0.0.1: a throwaway CA and certificates are made at test time
//! (rcgen), so no private key lives in the repository. Two parties are two threads.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use syft_mpc_transport::{
    accept, accept_stream, bind, connect, key_from_token, tcp_mesh, Channel, TcpChannel, TcpConfig, TlsConfig,
    TransportError,
};

const SESSION: [u8; 16] = *b"tls-session-0001";

/// A CA and one server certificate it signed, all PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (p.self_signed(&key).unwrap(), key)
}

fn pki_for(names: &[&str]) -> Pki {
    pki_with_ca("syft-mpc test CA", names)
}

fn pki_with_ca(ca_name: &str, names: &[&str]) -> Pki {
    let (ca, ca_key) = ca(ca_name);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "syft-mpc test worker");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    Pki { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

fn pki() -> Pki {
    pki_for(&["localhost", "127.0.0.1"])
}

fn base(timeout_ms: u64) -> TcpConfig {
    TcpConfig {
        timeout: Duration::from_millis(timeout_ms),
        connect_timeout: Duration::from_secs(5),
        ..TcpConfig::default()
    }
}

fn server_cfg(p: &Pki, timeout_ms: u64) -> TcpConfig {
    let tls = TlsConfig::default().with_identity(p.cert.as_bytes(), p.key.as_bytes(), "test identity").unwrap();
    TcpConfig { tls, ..base(timeout_ms) }
}

fn client_cfg(ca_pem: &str, timeout_ms: u64) -> TcpConfig {
    let tls = TlsConfig::default().with_trusted_ca(ca_pem.as_bytes(), "test CA").unwrap();
    TcpConfig { tls, ..base(timeout_ms) }
}

fn names() -> Vec<String> {
    ["alice", "bob", "carol"].iter().map(|s| s.to_string()).collect()
}

fn listen() -> (TcpListener, SocketAddr) {
    let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

type Attempt = Result<TcpChannel, TransportError>;

/// Party 0 (alice) authenticates one accepted connection with `server` (as a worker's
/// listener does), party 1 (bob) connects with `client` and `token`.
fn attempt(server: TcpConfig, client: TcpConfig, token: &'static [u8]) -> (Attempt, Attempt) {
    let (l, addr) = listen();
    let t = thread::spawn(move || connect(addr, 1, 0, SESSION, &key_from_token(token), "alice", &client));
    let (stream, from) = l.accept().unwrap();
    let a = accept_stream(stream, from, 0, &[1], SESSION, &key_from_token(b"token"), &names(), &server);
    (a, t.join().unwrap())
}

fn tls_pair(p: &Pki, timeout_ms: u64) -> (TcpChannel, TcpChannel) {
    let (a, b) = attempt(server_cfg(p, timeout_ms), client_cfg(&p.ca, timeout_ms), b"token");
    (a.unwrap(), b.unwrap())
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8).collect()
}

fn expect_tls(r: Attempt, peer: &str, what: &str) -> String {
    match r {
        Err(TransportError::Tls { peer: p, detail }) => {
            assert!(p.starts_with(peer), "{p} is not {peer}: {detail}");
            assert!(detail.contains(what), "{detail:?} does not mention {what:?}");
            TransportError::Tls { peer: p, detail }.to_string()
        }
        other => panic!("expected a TLS error naming {peer}, got {other:?}"),
    }
}

#[test]
fn round_trip_over_tls() {
    let p = pki();
    let (mut a, mut b) = tls_pair(&p, 5000);
    assert!(a.is_tls() && b.is_tls());
    assert_eq!((a.peer(), b.peer()), ("party 1 (bob)", "party 0 (alice)"));
    assert!(format!("{a:?}").contains("TLS"));
    let sizes = [0usize, 1, 10, 16 * 1024, 16 * 1024 + 1, 100_000, 3 << 20];
    let t = thread::spawn(move || {
        for (i, &n) in sizes.iter().enumerate() {
            let m = b.recv().unwrap();
            assert!(m == pattern(n, i as u8), "message {i} of {n} bytes");
            b.send(&m).unwrap();
        }
        b
    });
    for (i, &n) in sizes.iter().enumerate() {
        let msg = pattern(n, i as u8);
        a.send_parts(&[&msg[..n / 3], &msg[n / 3..]]).unwrap();
        let mut back = vec![0u8; n];
        a.recv_into(&mut back).unwrap();
        assert!(back == msg);
    }
    let b = t.join().unwrap();
    assert_eq!(a.stats().bytes_sent, sizes.iter().sum::<usize>() as u64);
    assert_eq!(b.stats().messages_received, sizes.len() as u64);
}

#[test]
fn exchange_32mb_both_directions_over_tls() {
    let p = pki();
    let (mut a, mut b) = tls_pair(&p, 20_000);
    let n = 32 << 20;
    let (xa, xb) = (pattern(n, 1), pattern(n, 2));
    let (xa2, xb2) = (xa.clone(), xb.clone());
    let t = thread::spawn(move || {
        let mut got = vec![0u8; n];
        b.exchange(&xb2, &mut got).unwrap();
        assert!(got == xa2);
        // Small exchanges (the single-thread path) still work afterwards.
        let mut small = [0u8; 8];
        b.exchange(&[2; 8], &mut small).unwrap();
        assert_eq!(small, [1; 8]);
    });
    let mut got = vec![0u8; n];
    a.exchange(&xa, &mut got).unwrap();
    assert!(got == xb);
    let mut small = [0u8; 8];
    a.exchange(&[1; 8], &mut small).unwrap();
    assert_eq!(small, [2; 8]);
    t.join().unwrap();
}

#[test]
fn wrong_ca_is_a_clear_error_on_both_sides() {
    let p = pki();
    let other = pki_with_ca("another CA", &["127.0.0.1"]);
    let t0 = Instant::now();
    let (a, b) = attempt(server_cfg(&p, 2000), client_cfg(&other.ca, 2000), b"token");
    let msg = expect_tls(b, "party 0 (alice)", "UnknownIssuer");
    assert!(msg.contains("TLS handshake with party 0 (alice) failed") && msg.contains("tls_ca"), "{msg}");
    // Another CA of the same name: the signature does not verify; the same advice.
    let (_, b) = attempt(server_cfg(&p, 2000), client_cfg(&pki().ca, 2000), b"token");
    expect_tls(b, "party 0 (alice)", "signed by the CA passed as tls_ca");
    // The client's alert tells the server why (the wait is bounded by connect_timeout).
    match a {
        Err(TransportError::Tls { detail, .. }) => {
            assert!(detail.contains("rejected this side's certificate"), "{detail}")
        }
        other => panic!("expected a TLS error on the server, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn wrong_name_is_a_clear_error() {
    let p = pki_for(&["bob.example"]);
    let (_, b) = attempt(server_cfg(&p, 2000), client_cfg(&p.ca, 2000), b"token");
    expect_tls(b, "party 0 (alice)", "tls_server_name");
    // With the name the certificate carries it works.
    let mut c = client_cfg(&p.ca, 2000);
    c.tls = c.tls.with_server_name("bob.example").unwrap();
    let (a, b) = attempt(server_cfg(&p, 2000), c, b"token");
    assert!(a.is_ok() && b.is_ok());
}

#[test]
fn plaintext_client_against_tls_server_fails_fast() {
    let p = pki();
    let t0 = Instant::now();
    let (a, b) = attempt(server_cfg(&p, 3000), base(3000), b"token");
    let elapsed = t0.elapsed();
    let server = expect_tls(a, "connection from", "does not use TLS");
    assert!(server.contains("tls_ca"), "{server}");
    // The TLS side answers with an alert, which the plaintext client recognises.
    expect_tls(b, "party 0 (alice)", "speaks TLS");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn tls_client_against_plaintext_server_fails_fast() {
    let p = pki();
    let t0 = Instant::now();
    let (a, b) = attempt(base(3000), client_cfg(&p.ca, 3000), b"token");
    let elapsed = t0.elapsed();
    expect_tls(a, "connection from", "speaks TLS but this side does not");
    expect_tls(b, "party 0 (alice)", "answered without TLS");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn wrong_token_inside_tls_is_an_auth_error() {
    let p = pki();
    let (a, b) = attempt(server_cfg(&p, 2000), client_cfg(&p.ca, 2000), b"wrong token");
    for (r, peer) in [(a, "party 1 (bob)"), (b, "party 0 (alice)")] {
        match r {
            Err(TransportError::Auth { peer: got, detail }) => {
                assert_eq!(got, peer);
                assert!(detail.contains("proof of the session key is wrong"), "{detail}");
            }
            other => panic!("expected an auth error naming {peer}, got {other:?}"),
        }
    }
}

#[test]
fn non_tls_bytes_to_a_tls_server_time_out_or_fail_within_the_timeout() {
    // A client that connects and stays silent, or sends garbage, never hangs the server.
    let p = pki();
    let (l, addr) = listen();
    let t = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink); // the server closes
        let _silent = TcpStream::connect(addr).unwrap();
        thread::sleep(Duration::from_millis(1500));
    });
    let cfg = TcpConfig { connect_timeout: Duration::from_millis(1200), ..server_cfg(&p, 400) };
    let t0 = Instant::now();
    let r = accept(&l, 0, &[1], SESSION, &key_from_token(b"token"), &names(), &cfg);
    assert!(r.is_err());
    assert!(t0.elapsed() < Duration::from_millis(2500), "{:?}", t0.elapsed());
    t.join().unwrap();
}

#[test]
fn peer_vanishing_mid_message_is_reported_by_name() {
    let p = pki();
    let (mut a, b) = tls_pair(&p, 5000);
    let t = thread::spawn(move || {
        let mut b = b;
        b.send(&[1u8; 10]).unwrap();
        drop(b); // close_notify, then the socket closes
    });
    assert_eq!(a.recv().unwrap(), vec![1u8; 10]);
    t.join().unwrap();
    let err = a.recv().unwrap_err();
    assert!(matches!(&err, TransportError::Disconnected { peer, .. } if peer == "party 1 (bob)"), "{err}");
    // Poisoned from now on.
    assert!(matches!(a.send(b"x"), Err(TransportError::Disconnected { .. })));
}

#[test]
fn stalled_tls_peer_times_out() {
    let p = pki();
    let (mut a, _b) = tls_pair(&p, 300);
    let t0 = Instant::now();
    let err = a.recv().unwrap_err();
    assert!(matches!(&err, TransportError::Timeout { peer, .. } if peer == "party 1 (bob)"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn three_party_tls_mesh() {
    let p = pki();
    let mesh_cfg = || {
        let tls = TlsConfig::default()
            .with_identity(p.cert.as_bytes(), p.key.as_bytes(), "test identity")
            .unwrap()
            .with_trusted_ca(p.ca.as_bytes(), "test CA")
            .unwrap();
        TcpConfig { tls, ..base(5000) }
    };
    let ls: Vec<(TcpListener, SocketAddr)> = (0..3).map(|_| listen()).collect();
    let addrs: Vec<SocketAddr> = ls.iter().map(|(_, a)| *a).collect();
    let key = key_from_token(b"mesh");
    let handles: Vec<_> = ls
        .into_iter()
        .enumerate()
        .map(|(i, (l, _))| {
            let (addrs, cfg) = (addrs.clone(), mesh_cfg());
            thread::spawn(move || {
                let mut chans = tcp_mesh(i as u32, &addrs, l, &names(), SESSION, &key, &cfg).unwrap();
                for (j, c) in chans.iter_mut().enumerate() {
                    if let Some(c) = c {
                        assert!(c.is_tls());
                        let mut got = [0u8; 2];
                        c.exchange(&[i as u8, j as u8], &mut got).unwrap();
                        assert_eq!(got, [j as u8, i as u8]);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Half a TLS configuration cannot form a mesh.
    let (l, a) = listen();
    let half = client_cfg(&p.ca, 1000);
    let err = tcp_mesh(0, &[a], l, &names(), SESSION, &key, &half).unwrap_err();
    assert!(matches!(err, TransportError::Setup(ref m) if m.contains("both")), "{err}");
}

#[test]
fn bad_pem_is_a_setup_error_naming_the_source() {
    let p = pki();
    let other = pki();
    let err = TlsConfig::default().with_trusted_ca(b"not a pem", "ca.pem").unwrap_err();
    assert!(err.to_string().contains("no certificate in ca.pem"), "{err}");
    let err = TlsConfig::default().with_identity(p.cert.as_bytes(), b"", "worker.pem and worker.key").unwrap_err();
    assert!(err.to_string().contains("no usable private key in worker.pem and worker.key"), "{err}");
    // A key that does not belong to the certificate.
    let err = TlsConfig::default().with_identity(p.cert.as_bytes(), other.key.as_bytes(), "w").unwrap_err();
    assert!(err.to_string().contains("cannot use the certificate and key of w"), "{err}");
    let err = TlsConfig::default().with_trusted_ca_file(std::path::Path::new("/nonexistent/ca.pem")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    assert!(TlsConfig::default().with_server_name("not a name!").is_err());
}
