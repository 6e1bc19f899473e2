//! TCP channel tests on 127.0.0.1: two parties are two threads.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use syft_mpc_transport::frame::TAG_LEN;
use syft_mpc_transport::{
    accept, accept_stream, bind, connect, key_from_token, tcp_mesh, Channel, TcpChannel, TcpConfig, TransportError,
};

const SESSION: [u8; 16] = *b"test-session-001";

fn names() -> Vec<String> {
    ["alice", "bob", "carol"].iter().map(|s| s.to_string()).collect()
}

fn cfg(timeout_ms: u64) -> TcpConfig {
    TcpConfig {
        timeout: Duration::from_millis(timeout_ms),
        connect_timeout: Duration::from_secs(5),
        ..TcpConfig::default()
    }
}

fn listen() -> (TcpListener, SocketAddr) {
    let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Party 0 (alice) accepts, party 1 (bob) connects; returns (alice's channel, bob's channel).
fn pair_with(cfg0: TcpConfig, cfg1: TcpConfig) -> (TcpChannel, TcpChannel) {
    let (l, addr) = listen();
    let key = key_from_token(b"token");
    let t = thread::spawn(move || connect(addr, 1, 0, SESSION, &key, "alice", &cfg1).unwrap());
    let a = accept(&l, 0, &[1], SESSION, &key, &names(), &cfg0).unwrap();
    (a, t.join().unwrap())
}

fn pair(timeout_ms: u64) -> (TcpChannel, TcpChannel) {
    pair_with(cfg(timeout_ms), cfg(timeout_ms))
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8).collect()
}

#[test]
fn names_and_ids_after_handshake() {
    let (a, b) = pair(5000);
    assert_eq!(a.peer(), "party 1 (bob)");
    assert_eq!(b.peer(), "party 0 (alice)");
    assert_eq!((a.peer_id(), b.peer_id()), (1, 0));
    assert_eq!(a.stats(), Default::default());
}

#[test]
fn exchange_16mb_both_directions_at_once() {
    let (mut a, mut b) = pair(10_000);
    let n = 16 << 20;
    let (xa, xb) = (pattern(n, 1), pattern(n, 2));
    let xb2 = xb.clone();
    let xa2 = xa.clone();
    let t = thread::spawn(move || {
        let mut got = vec![0u8; n];
        b.exchange(&xb2, &mut got).unwrap();
        assert!(got == xa2);
        b
    });
    let mut got = vec![0u8; n];
    a.exchange(&xa, &mut got).unwrap();
    assert!(got == xb);
    let b = t.join().unwrap();
    let s = a.stats();
    assert_eq!((s.bytes_sent, s.bytes_received, s.messages_sent, s.messages_received), (n as u64, n as u64, 1, 1));
    assert_eq!(b.stats().bytes_received, n as u64);
}

#[test]
fn messages_of_many_sizes_and_frames() {
    let small_frames = TcpConfig { max_frame: 1000, ..cfg(5000) };
    let (mut a, mut b) = pair_with(small_frames.clone(), small_frames);
    let sizes = [0usize, 1, 999, 1000, 1001, 16 * 1024, 100_000, 3 << 20];
    let t = thread::spawn(move || {
        for &n in &sizes {
            let m = b.recv().unwrap();
            assert_eq!(m, pattern(n, 7), "size {n}");
            let mut buf = vec![0u8; n];
            b.recv_into(&mut buf).unwrap();
            assert_eq!(buf, pattern(n, 8));
            b.send(&pattern(n, 9)).unwrap();
        }
    });
    for &n in &sizes {
        a.send(&pattern(n, 7)).unwrap();
        a.send(&pattern(n, 8)).unwrap();
        let mut buf = vec![0u8; n];
        a.recv_into(&mut buf).unwrap();
        assert_eq!(buf, pattern(n, 9));
    }
    t.join().unwrap();
}

#[test]
fn recv_into_parts_splits_one_message_in_place() {
    let small_frames = TcpConfig { max_frame: 1000, ..cfg(5000) };
    let (mut a, mut b) = pair_with(small_frames.clone(), small_frames);
    // Part boundaries inside and across frames, empty parts, a large part.
    let cases: Vec<Vec<usize>> =
        vec![vec![0], vec![0, 3, 0], vec![1, 999, 1000, 1], vec![7, 3 << 20, 0, 5], vec![333; 10]];
    let msgs: Vec<Vec<u8>> = cases.iter().map(|c| pattern(c.iter().sum(), 5)).collect();
    let sent = msgs.clone();
    let t = thread::spawn(move || {
        for m in &sent {
            a.send(m).unwrap();
        }
        a.send(&[1, 2, 3]).unwrap(); // one byte more than the receiver's parts hold
        a
    });
    for (c, m) in cases.iter().zip(&msgs) {
        let mut bufs: Vec<Vec<u8>> = c.iter().map(|&n| vec![0; n]).collect();
        let mut parts: Vec<&mut [u8]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
        b.recv_into_parts(&mut parts).unwrap();
        assert_eq!(&bufs.concat(), m, "parts {c:?}");
    }
    let (mut x, mut y) = ([0u8; 1], [0u8; 1]);
    let err = b.recv_into_parts(&mut [&mut x, &mut y]).unwrap_err();
    assert!(matches!(err, TransportError::UnexpectedLength { expected: 2, got: 3, .. }), "{err}");
    t.join().unwrap();
}

#[test]
fn send_parts_equals_send_of_the_joined_bytes() {
    let small_frames = TcpConfig { max_frame: 1000, ..cfg(5000) };
    let (mut a, mut b) = pair_with(small_frames.clone(), small_frames);
    // Splits that cross frame boundaries, empty parts, one large part after small ones.
    let cases: Vec<Vec<usize>> =
        vec![vec![], vec![0, 0], vec![1, 0, 998, 1], vec![1, 1000, 0, 1001], vec![5, 3 << 20, 7], vec![999; 17]];
    let expect: Vec<Vec<u8>> = cases.iter().map(|c| pattern(c.iter().sum(), 3)).collect();
    let want = expect.clone();
    let t = thread::spawn(move || {
        for m in &want {
            assert_eq!(&b.recv().unwrap(), m);
        }
        let stats = b.stats();
        (stats.messages_received, stats.bytes_received)
    });
    for (c, m) in cases.iter().zip(&expect) {
        let mut parts = Vec::new();
        let mut off = 0;
        for &n in c {
            parts.push(&m[off..off + n]);
            off += n;
        }
        a.send_parts(&parts).unwrap();
    }
    let (msgs, bytes) = t.join().unwrap();
    assert_eq!(msgs, cases.len() as u64);
    assert_eq!(bytes, expect.iter().map(|m| m.len() as u64).sum::<u64>());
    assert_eq!(a.stats().bytes_sent, bytes);
}

#[test]
fn large_and_small_parts_share_frames_under_the_mac() {
    // 1 MiB frames: a frame holds a part's bulk (written from the part, hashed later, in
    // pieces) followed by small parts (coalesced): the tag must cover them in order.
    let (mut a, mut b) = pair_with(cfg(5000), cfg(5000));
    let sizes = [5usize, 3 << 20, 7, 100_000, 3, (1 << 20) - 1, 1, 200_000];
    let m = pattern(sizes.iter().sum(), 11);
    let want = m.clone();
    let t = thread::spawn(move || {
        for _ in 0..3 {
            assert_eq!(b.recv().unwrap(), want);
        }
    });
    for _ in 0..3 {
        let mut parts = Vec::new();
        let mut off = 0;
        for &n in &sizes {
            parts.push(&m[off..off + n]);
            off += n;
        }
        a.send_parts(&parts).unwrap();
    }
    t.join().unwrap();
}

#[test]
fn three_party_mesh() {
    let listeners: Vec<(TcpListener, SocketAddr)> = (0..3).map(|_| listen()).collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.1).collect();
    let key = key_from_token(b"mesh token");
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, (l, _))| {
            let addrs = addrs.clone();
            thread::spawn(move || {
                let mut chans = tcp_mesh(i as u32, &addrs, l, &names(), SESSION, &key, &cfg(5000)).unwrap();
                assert!(chans[i].is_none());
                for (j, c) in chans.iter_mut().enumerate() {
                    if let Some(c) = c {
                        assert_eq!(c.peer_id() as usize, j);
                        let mut got = vec![0u8; 40_000];
                        c.exchange(&pattern(40_000, (10 * i + j) as u8), &mut got).unwrap();
                        assert_eq!(got, pattern(40_000, (10 * j + i) as u8));
                    }
                }
                // Each party sends a short message to everyone, then reads from everyone.
                for c in chans.iter_mut().flatten() {
                    c.send(format!("hello from {i}").as_bytes()).unwrap();
                }
                for (j, c) in chans.iter_mut().enumerate() {
                    if let Some(c) = c {
                        assert_eq!(c.recv().unwrap(), format!("hello from {j}").into_bytes());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn expect_auth(r: Result<TcpChannel, TransportError>, peer: &str, what: &str) {
    match r {
        Err(TransportError::Auth { peer: p, detail }) => {
            assert!(p.contains(peer), "peer {p:?} should name {peer:?}");
            assert!(detail.contains(what), "{detail:?} should contain {what:?}");
        }
        Err(e) => panic!("expected Auth, got {e}"),
        Ok(c) => panic!("expected Auth, got a channel {c:?}"),
    }
}

#[test]
fn wrong_key_fails_on_both_sides() {
    let (l, addr) = listen();
    let cfg = TcpConfig { connect_timeout: Duration::from_millis(1500), ..cfg(1000) };
    let c = cfg.clone();
    let t = thread::spawn(move || connect(addr, 1, 0, SESSION, &key_from_token(b"wrong"), "alice", &c));
    let r = accept(&l, 0, &[1], SESSION, &key_from_token(b"right"), &names(), &cfg);
    expect_auth(r, "party 1 (bob)", "proof of the session key is wrong");
    expect_auth(t.join().unwrap(), "party 0 (alice)", "proof of the session key is wrong");
}

#[test]
fn wrong_session_and_wrong_party_fail() {
    let (l, addr) = listen();
    let cfg = TcpConfig { connect_timeout: Duration::from_millis(1500), ..cfg(1000) };
    let key = key_from_token(b"k");
    let c = cfg.clone();
    let t = thread::spawn(move || connect(addr, 1, 0, *b"another-session!", &key, "alice", &c));
    expect_auth(accept(&l, 0, &[1], SESSION, &key, &names(), &cfg), "party 1 (bob)", "session id mismatch");
    expect_auth(t.join().unwrap(), "party 0 (alice)", "session id mismatch");

    // Party 2 connects where only party 1 is expected.
    let c = cfg.clone();
    let t = thread::spawn(move || connect(addr, 2, 0, SESSION, &key, "alice", &c));
    expect_auth(accept(&l, 0, &[1], SESSION, &key, &names(), &cfg), "party 2", "not expected");
    expect_auth(t.join().unwrap(), "party 0 (alice)", "rejected");
}

#[test]
fn bad_connections_do_not_consume_the_accept_slot() {
    let (l, addr) = listen();
    let key = key_from_token(b"token");
    let cfg = cfg(300);
    let c = cfg.clone();
    let t = thread::spawn(move || {
        // Garbage, then a silent connection, then a wrong key, then the real peer.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let _silent = TcpStream::connect(addr).unwrap();
        thread::sleep(Duration::from_millis(400));
        assert!(connect(addr, 1, 0, SESSION, &key_from_token(b"bad"), "alice", &c).is_err());
        connect(addr, 1, 0, SESSION, &key, "alice", &c).unwrap()
    });
    let mut a = accept(&l, 0, &[1], SESSION, &key, &names(), &cfg).unwrap();
    let mut b = t.join().unwrap();
    b.send(b"ok").unwrap();
    assert_eq!(a.recv().unwrap(), b"ok");
}

#[test]
fn peer_vanishing_mid_exchange_is_reported_by_name() {
    let timeout = Duration::from_secs(5);
    let (mut a, b) = pair(timeout.as_millis() as u64);
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        drop(b); // never reads: alice is blocked in the middle of her large exchange
    });
    let start = Instant::now();
    let mut got = vec![0u8; 16 << 20];
    let err = a.exchange(&vec![1u8; 16 << 20], &mut got).unwrap_err();
    t.join().unwrap();
    assert!(start.elapsed() < timeout, "took {:?}", start.elapsed());
    assert!(matches!(err, TransportError::Disconnected { .. }), "{err}");
    assert!(err.to_string().contains("party 1 (bob)"), "{err}");
    // The channel is poisoned: later calls fail at once, naming the peer and the first error.
    let again = a.send(b"x").unwrap_err().to_string();
    assert!(again.contains("party 1 (bob)") && again.contains("earlier error"), "{again}");
    assert!(a.is_poisoned());
}

#[test]
fn peer_vanishing_between_messages_is_disconnected() {
    let (mut a, b) = pair(5000);
    drop(b);
    let err = a.recv().unwrap_err();
    assert!(matches!(&err, TransportError::Disconnected { peer, .. } if peer == "party 1 (bob)"), "{err}");
}

#[test]
fn stalled_peer_times_out_within_the_timeout() {
    let (mut a, b) = pair(300);
    let start = Instant::now();
    let err = a.recv().unwrap_err();
    let took = start.elapsed();
    assert!(matches!(&err, TransportError::Timeout { peer, .. } if peer == "party 1 (bob)"), "{err}");
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(1000), "took {took:?}");
    // A large exchange the peer never answers (nor reads) also times out.
    let (mut a2, b2) = pair(300);
    let start = Instant::now();
    let mut got = vec![0u8; 8 << 20];
    let err = a2.exchange(&vec![0u8; 8 << 20], &mut got).unwrap_err();
    assert!(matches!(&err, TransportError::Timeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_millis(1500), "took {:?}", start.elapsed());
    drop((b, b2));
}

#[test]
fn oversize_message_is_rejected() {
    let small = TcpConfig { max_message: 1000, max_frame: 256, ..cfg(2000) };
    let big = TcpConfig { max_frame: 256, ..cfg(2000) };
    let (mut a, mut b) = pair_with(small.clone(), big);
    b.send(&[5u8; 1001]).unwrap();
    let err = a.recv().unwrap_err();
    assert!(matches!(err, TransportError::TooLarge { size: 1001, limit: 1000, .. }), "{err}");
    // A frame larger than the receiver's max_frame is rejected from its header alone.
    let (mut a, mut b) = pair_with(small.clone(), cfg(2000));
    b.send(&[5u8; 300]).unwrap();
    let err = a.recv().unwrap_err();
    assert!(matches!(err, TransportError::TooLarge { size: 300, limit: 256, .. }), "{err}");
    // Senders refuse too.
    let (mut a, _b) = pair_with(small, cfg(2000));
    let err = a.send(&[0u8; 2000]).unwrap_err();
    assert!(matches!(&err, TransportError::TooLarge { peer, size: 2000, .. } if peer == "party 1 (bob)"), "{err}");
}

#[test]
fn unexpected_length_is_reported() {
    let (mut a, mut b) = pair(2000);
    b.send(b"four").unwrap();
    let mut buf = [0u8; 3];
    let err = a.recv_into(&mut buf).unwrap_err();
    assert!(matches!(err, TransportError::UnexpectedLength { expected: 3, got: 4, .. }), "{err}");
    assert!(a.is_poisoned());
}

#[test]
fn port_in_use_is_a_clear_setup_error() {
    let (_l, addr) = listen();
    let err = bind(addr).unwrap_err().to_string();
    assert!(err.contains(&format!("port {} on 127.0.0.1 is already in use", addr.port())), "{err}");
    assert!(err.contains("pick another port"), "{err}");
}

#[test]
fn connect_retries_until_the_peer_listens() {
    let (l, addr) = listen();
    drop(l);
    let key = key_from_token(b"t");
    let t = thread::spawn(move || connect(addr, 1, 0, SESSION, &key, "alice", &cfg(2000)));
    thread::sleep(Duration::from_millis(300));
    let l = bind(addr).unwrap();
    let mut a = accept(&l, 0, &[1], SESSION, &key, &names(), &cfg(2000)).unwrap();
    let mut b = t.join().unwrap().unwrap();
    a.send(b"late").unwrap();
    assert_eq!(b.recv().unwrap(), b"late");
}

#[test]
fn connect_to_nobody_gives_up_after_connect_timeout() {
    let (l, addr) = listen();
    drop(l);
    let cfg = TcpConfig { connect_timeout: Duration::from_millis(300), ..cfg(300) };
    let start = Instant::now();
    let err = connect(addr, 1, 0, SESSION, &[0; 32], "alice", &cfg).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(matches!(&err, TransportError::Setup(m) if m.contains("party 0 (alice)")), "{err}");
    // And accept with nobody connecting times out naming whom it waited for.
    let (l, _) = listen();
    let err = accept(&l, 0, &[1, 2], SESSION, &[0; 32], &names(), &cfg).unwrap_err();
    assert!(err.to_string().contains("party 1 (bob), party 2 (carol)"), "{err}");
}

#[test]
fn a_trickling_stranger_is_cut_off_at_the_handshake_deadline() {
    // Regression: the handshake timeout bounded each read, so a peer sending one byte just
    // before every timeout held the handshake (and a worker's thread) open indefinitely.
    let (l, addr) = listen();
    let client = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let hello = [&b"SMPC\x01\x01\x39\x00\x00\x00SMHI\x01"[..], &[0u8; 52]].concat();
        for b in hello {
            if s.write_all(&[b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let (stream, from) = l.accept().unwrap();
    let start = Instant::now();
    let err = accept_stream(stream, from, 0, &[1], SESSION, &key_from_token(b"t"), &names(), &cfg(400)).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1500), "the handshake lasted {took:?}");
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    client.join().unwrap();
}

#[test]
fn huge_timeouts_mean_no_bound_instead_of_a_panic() {
    let forever = TcpConfig { timeout: Duration::MAX, connect_timeout: Duration::MAX, ..TcpConfig::default() };
    let (l, addr) = listen();
    let key = key_from_token(b"t");
    let forever2 = forever.clone();
    let t = thread::spawn(move || connect(addr, 1, 0, SESSION, &key, "alice", &forever2));
    let mut a = accept(&l, 0, &[1], SESSION, &key, &names(), &forever).unwrap();
    let mut b = t.join().unwrap().unwrap();
    a.send(b"ok").unwrap();
    assert_eq!(b.recv().unwrap(), b"ok");
}

/// Bytes each side sends in a plaintext handshake: hello (57), proof (32) and verdict (1),
/// each in a 10-byte frame header.
const HANDSHAKE_BYTES: usize = 3 * 10 + 57 + 32 + 1;

/// A man in the middle on 127.0.0.1: bob connects to it, it connects to alice. From bob to
/// alice it forwards the handshake, then hands the next `frame_len` bytes (one tagged frame)
/// to `tamper` and forwards what it returns, then forwards the rest; alice to bob untouched.
fn relay_pair(frame_len: usize, tamper: fn(Vec<u8>) -> Vec<u8>) -> (TcpChannel, TcpChannel) {
    use std::io::Read;
    let (l, alice_addr) = listen();
    let (relay, relay_addr) = listen();
    let key = key_from_token(b"token");
    thread::spawn(move || {
        let (mut from_bob, _) = relay.accept().unwrap();
        let mut to_alice = TcpStream::connect(alice_addr).unwrap();
        let (mut back_from_alice, mut back_to_bob) = (to_alice.try_clone().unwrap(), from_bob.try_clone().unwrap());
        thread::spawn(move || std::io::copy(&mut back_from_alice, &mut back_to_bob));
        // The handshake goes through as it arrives (each side waits for the other's steps).
        let (mut hs, mut left) = ([0u8; HANDSHAKE_BYTES], HANDSHAKE_BYTES);
        while left > 0 {
            let n = from_bob.read(&mut hs[..left]).unwrap();
            assert!(n > 0, "bob closed during the handshake");
            to_alice.write_all(&hs[..n]).unwrap();
            left -= n;
        }
        let mut frame = vec![0u8; frame_len];
        from_bob.read_exact(&mut frame).unwrap();
        to_alice.write_all(&tamper(frame)).unwrap();
        let _ = std::io::copy(&mut from_bob, &mut to_alice);
    });
    let t = thread::spawn(move || connect(relay_addr, 1, 0, SESSION, &key, "alice", &cfg(5000)).unwrap());
    let a = accept(&l, 0, &[1], SESSION, &key, &names(), &cfg(5000)).unwrap();
    (a, t.join().unwrap())
}

fn expect_integrity(err: TransportError, frame: u64) {
    match &err {
        TransportError::Integrity { peer, detail } => {
            assert_eq!(peer, "party 1 (bob)");
            assert!(detail.contains(&format!("frame {frame} ")), "{err}");
        }
        other => panic!("expected an integrity error, got {other}"),
    }
}

#[test]
fn a_relay_that_alters_a_frame_is_caught_on_the_spot() {
    // A flipped payload byte: the frame fails its tag, the connection is closed for good.
    let (mut a, mut b) = relay_pair(10 + 1000 + TAG_LEN, |mut f| {
        f[10 + 500] ^= 0x40;
        f
    });
    b.send(&pattern(1000, 3)).unwrap();
    expect_integrity(a.recv().unwrap_err(), 0);
    assert!(a.is_poisoned() && a.recv().is_err());
    // Alice's last frame, an alert, tells bob why: an integrity error on his side too.
    match b.recv().unwrap_err() {
        TransportError::Integrity { peer, detail } => {
            assert_eq!(peer, "party 0 (alice)");
            assert!(
                detail.starts_with(syft_mpc_transport::frame::PEER_REJECTED) && detail.contains("frame 0"),
                "{detail}"
            );
        }
        other => panic!("expected the peer's alert, got {other}"),
    }

    // The same frame twice (a replay): the first is accepted, the copy fails as frame 1.
    let (mut a, mut b) = relay_pair(10 + 3 + TAG_LEN, |f| [f.clone(), f].concat());
    b.send(b"abc").unwrap();
    assert_eq!(a.recv().unwrap(), b"abc");
    expect_integrity(a.recv().unwrap_err(), 1);

    // A frame injected before bob's (made up by someone without the keys): rejected at once.
    let (mut a, mut b) = relay_pair(10 + 3 + TAG_LEN, |f| {
        let forged = [&syft_mpc_transport::frame::FrameHeader::new(8, true).encode()[..], b"mul_(-1)", &[7u8; TAG_LEN]];
        [forged.concat(), f].concat()
    });
    b.send(b"abc").unwrap();
    expect_integrity(a.recv().unwrap_err(), 0);

    // A message cut short (FINAL set on its first frame of two): its tag fails.
    let (mut a, mut b) = relay_pair(10 + (1 << 20) + TAG_LEN, |mut f| {
        f[5] |= 1;
        f
    });
    b.send(&pattern((1 << 20) + 10, 5)).unwrap();
    expect_integrity(a.recv().unwrap_err(), 0);
}

#[test]
fn both_ends_export_the_same_secret_and_other_connections_do_not() {
    let (a, b) = pair(5000);
    let (c, _d) = pair(5000);
    let s = a.export_secret(b"ctx").unwrap();
    assert_eq!(b.export_secret(b"ctx").unwrap(), s);
    assert_ne!(a.export_secret(b"other").unwrap(), s);
    assert_ne!(c.export_secret(b"ctx").unwrap(), s, "same token and ids, other nonces: another secret");
}
