//! Fuzz harnesses of the transport's decoders, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) and the stable replay test
//! (`rust/transport/tests/fuzz_replay.rs` includes this file as a module and runs the seed
//! corpus plus deterministic mutations of it on every `cargo test`).
//!
//! Every harness must return normally on any input: a panic is a bug, and so is an
//! allocation sized by a declared length instead of by bytes received (libFuzzer's
//! `-malloc_limit_mb`, and the replay test's counting allocator, catch those).
//!
//! * [`frame_decoder`]: the pure frame codec (`decode_header`, `decode_frame`,
//!   `decode_message` over a stream of back-to-back messages, untagged as in a handshake
//!   and tagged under [`MAC_KEY`] as after one) under limits chosen by the first input
//!   byte; whatever decodes must re-encode and decode to the same bytes.
//! * [`handshake`]: the accepting side of the HMAC handshake (`accept_stream`, what a
//!   worker runs for every stranger that connects) reading the input from a real loopback
//!   socket; authentication must never succeed without the key.
//! * [`tcp_channel`]: an authenticated `TcpChannel` reading the input as whatever follows
//!   the handshake (`recv`, `recv_into`), under limits chosen by the first input byte.
//!   The input is written by someone without the connection's keys, so no message may
//!   ever be accepted: every frame needs a tag under a key derived in the handshake.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use syft_mpc_transport::frame::{
    decode_frame, decode_header, decode_message, encode_message, FrameLimits, FrameMac, DEFAULT_MAX_FRAME, HEADER_LEN,
    KEY_LEN, MAX_FRAME_LIMIT, TAG_LEN,
};
use syft_mpc_transport::{accept_stream, connect, key_from_token, Channel, TcpChannel, TcpConfig};

/// Session id, token and ids of the fuzzed handshakes (the corpus generator uses them too).
pub const SESSION: [u8; 16] = *b"fuzz-session-001";
pub const TOKEN: &[u8] = b"fuzz-token-0123456789abcdef";
/// The accepting side's party id; connecting clients are party 0, as with a worker.
pub const SERVER_ID: u32 = 7;
pub const CLIENT_ID: u32 = 0;
/// Direction key of the tagged pass of [`frame_decoder`] (the corpus generator uses it too).
pub const MAC_KEY: [u8; KEY_LEN] = *b"fuzz-frame-mac-key-0123456789abc";
/// Inputs longer than this are cut: they are written to a loopback socket before the
/// other side reads, so they must fit in the kernel's socket buffers.
pub const MAX_STREAM: usize = 64 * 1024;

/// Frame limits picked by one selector byte: bits 0-2 the frame limit, bits 3-4 the
/// message limit, so tiny limits (1-byte frames, empty messages only) are exercised too.
pub fn limits_from(sel: u8) -> FrameLimits {
    const FRAMES: [usize; 8] = [0, 1, 7, 16, 255, 4096, DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT];
    const MESSAGES: [u64; 4] = [0, 100, 1 << 16, u64::MAX];
    FrameLimits { max_frame: FRAMES[usize::from(sel & 7)], max_message: MESSAGES[usize::from((sel >> 3) & 3)] }
}

/// Input: one selector byte ([`limits_from`]), then a byte stream.
pub fn frame_decoder(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else { return };
    let limits = limits_from(sel);
    match decode_header(stream, limits.max_frame) {
        Ok(h) => assert!(h.len as usize <= limits.frame(), "header above the frame limit accepted"),
        Err(e) => drop(e.into_transport("fuzz peer").to_string()),
    }
    if let Ok((h, payload, used)) = decode_frame(stream, limits.max_frame) {
        assert_eq!(payload.len(), h.len as usize);
        assert_eq!(used, HEADER_LEN + payload.len());
        assert!(used <= stream.len());
    }
    // Back-to-back messages, as a socket reader sees them, until the first error: untagged
    // (handshake frames), then tagged (every frame after a handshake).
    for tagged in [false, true] {
        let mut mac = tagged.then(|| FrameMac::new(MAC_KEY));
        let overhead = HEADER_LEN + if tagged { TAG_LEN } else { 0 };
        let mut rest = stream;
        while !rest.is_empty() {
            let before = mac.clone();
            let (msg, used) = match decode_message(rest, limits, mac.as_mut()) {
                Ok(ok) => ok,
                Err(e) => {
                    drop(e.into_transport("fuzz peer").to_string());
                    break;
                }
            };
            assert!(used >= overhead && used <= rest.len(), "consumed {used} of {} bytes", rest.len());
            assert!(msg.len() as u64 <= limits.max_message, "message above the limit accepted");
            assert!(msg.len() < used, "more payload than bytes consumed");
            // Same frames from the same sequence number: the same bytes, accepted again.
            let (mut tx, mut rx) = (before.clone(), before);
            let again = encode_message(&msg, limits.frame(), tx.as_mut()).expect("encode");
            assert_eq!(
                decode_message(&again, limits, rx.as_mut()),
                Ok((msg, again.len())),
                "re-encoding changed the message"
            );
            rest = &rest[used..];
        }
    }
}

fn loopback_listener() -> &'static (Mutex<TcpListener>, SocketAddr) {
    static L: OnceLock<(Mutex<TcpListener>, SocketAddr)> = OnceLock::new();
    L.get_or_init(|| {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let a = l.local_addr().expect("local address");
        (Mutex::new(l), a)
    })
}

fn cfg(limits: FrameLimits) -> TcpConfig {
    // The peer always ends its input with EOF, so no read waits; the timeout only guards
    // against a harness bug turning into a hang.
    TcpConfig {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        max_frame: limits.max_frame,
        max_message: limits.max_message,
        ..TcpConfig::default()
    }
}

fn names() -> Vec<String> {
    vec!["client".to_string()]
}

/// Input: the raw bytes a stranger sends after connecting (framed hello, proof and
/// verdict, or anything else). The input is written in full, then the write side is
/// closed, and the worker's side of the handshake runs on it.
pub fn handshake(data: &[u8]) {
    let data = &data[..data.len().min(MAX_STREAM)];
    let (listener, addr) = loopback_listener();
    let listener = listener.lock().unwrap_or_else(|e| e.into_inner());
    let mut client = TcpStream::connect(addr).expect("loopback connect");
    let (stream, from) = listener.accept().expect("loopback accept");
    drop(listener);
    client.write_all(data).expect("the input fits in the socket buffers");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let key = key_from_token(TOKEN);
    let r = accept_stream(stream, from, SERVER_ID, &[CLIENT_ID], SESSION, &key, &names(), &cfg(FrameLimits::default()));
    match r {
        Ok(chan) => panic!("a client without the key was authenticated: {chan:?}"),
        Err(e) => drop(e.to_string()),
    }
}

/// An authenticated pair over loopback: (the accepting side, the connecting side).
pub fn authenticated_pair(limits: FrameLimits) -> (TcpChannel, TcpChannel) {
    let (listener, addr) = loopback_listener();
    let listener = listener.lock().unwrap_or_else(|e| e.into_inner());
    let key = key_from_token(TOKEN);
    let c = cfg(limits);
    std::thread::scope(|s| {
        let client = s.spawn(|| connect(*addr, CLIENT_ID, SERVER_ID, SESSION, &key, "worker", &c));
        let (stream, from) = listener.accept().expect("loopback accept");
        let server = accept_stream(stream, from, SERVER_ID, &[CLIENT_ID], SESSION, &key, &names(), &c);
        let client = client.join().expect("connect thread");
        (server.expect("handshake with the key"), client.expect("handshake with the key"))
    })
}

/// Input: one selector byte (bits 0-4 as in [`limits_from`]; bit 5: `recv_into` a buffer
/// of `sel >> 6` × 7 bytes instead of `recv`), then the bytes the authenticated peer sends.
pub fn tcp_channel(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else { return };
    let stream = &stream[..stream.len().min(MAX_STREAM)];
    let limits = limits_from(sel);
    let (mut server, client) = authenticated_pair(limits);
    let mut raw = client.try_clone_socket().expect("socket handle");
    raw.write_all(stream).expect("the input fits in the socket buffers");
    raw.shutdown(Shutdown::Write).expect("shutdown");
    drop(client);
    let exact = (sel & 0x20 != 0).then_some(usize::from(sel >> 6) * 7);
    let r = match exact {
        Some(n) => {
            let mut buf = vec![0u8; n];
            server.recv_into(&mut buf).map(|()| buf)
        }
        None => server.recv(),
    };
    match r {
        Ok(msg) => panic!("{} bytes accepted from a sender without the connection's keys", msg.len()),
        Err(e) => drop(e.to_string()),
    }
    // Failure mode: after the first error the channel is closed for good.
    assert!(server.is_poisoned());
    assert!(server.recv().is_err() && server.send(b"x").is_err());
}
