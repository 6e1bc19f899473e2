//! The fuzz harnesses of `fuzz/` on stable Rust, bounded: every seed in `fuzz/corpus/<target>/`
//! plus deterministic mutations of the seeds (bit flips, truncations, length fields set to
//! 0 / 2^31 / 2^32−1 / 2^63, 2^63 written as 8 bytes, splices, random bytes). A panic fails
//! the test; a counting allocator checks that no input makes the decoders allocate more
//! than a small multiple of the bytes actually received (never by a declared length).
//!
//! Regenerate the seed corpus (after a wire-format change) with
//! `cargo test -p syft-mpc-transport --test fuzz_replay -- --ignored write_seed_corpus`.
//! Long runs with coverage feedback: `make fuzz` (cargo-fuzz, nightly).

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Instant;
use syft_mpc_transport::frame::{encode_message, FrameHeader, FrameMac, FRAME_MAGIC};

// ---------------------------------------------------------------------------- allocation meter

/// Counts the bytes live on the measuring thread (other test threads are not counted).
struct Meter;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            let live = LIVE.with(|l| {
                let v = l.get() + size;
                l.set(v);
                v
            });
            PEAK.with(|p| p.set(p.get().max(live)));
        }
    });
}

fn on_dealloc(size: usize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            LIVE.with(|l| l.set(l.get().saturating_sub(size)));
        }
    });
}

unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and returns the peak of bytes it had allocated at once on this thread.
fn peak_alloc(f: impl FnOnce()) -> usize {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    ON.with(|on| on.set(true));
    f();
    ON.with(|on| on.set(false));
    PEAK.with(|p| p.get())
}

// ---------------------------------------------------------------------------- inputs

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target)
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {} missing: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).expect("read seed")).collect();
    assert!(out.len() >= 5, "seed corpus {} has only {} files", dir.display(), out.len());
    out
}

/// Offsets of the length field of every frame header found in `b` (by its magic).
fn length_fields(b: &[u8]) -> Vec<usize> {
    b.windows(4).enumerate().filter(|(_, w)| *w == FRAME_MAGIC).map(|(i, _)| i + 6).collect()
}

const LENGTHS: [u32; 6] = [0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX - 1, u32::MAX];

/// One mutation of `seed`, the kind chosen by `rng`; `other` is a second seed for splices.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    match rng.below(8) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => b.truncate(rng.below(b.len() + 1)),
        2 => {
            // A frame's length field set to an extreme value.
            let fields = length_fields(&b);
            if !fields.is_empty() {
                let at = fields[rng.below(fields.len())];
                let v = LENGTHS[rng.below(LENGTHS.len())].to_le_bytes();
                let end = (at + 4).min(b.len());
                b[at..end].copy_from_slice(&v[..end - at]);
            }
        }
        3 => {
            // 2^63 as an 8-byte little-endian length where a length or a header could be.
            let at = rng.below(b.len() + 1);
            let v = (1u64 << 63).to_le_bytes();
            b.splice(at..(at + 8).min(b.len()), v);
        }
        4 => {
            let cut = rng.below(b.len() + 1);
            let from = rng.below(other.len() + 1);
            b.truncate(cut);
            b.extend_from_slice(&other[from..]);
        }
        5 => {
            let n = rng.below(64);
            let at = rng.below(b.len() + 1);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            b.splice(at..at, junk);
        }
        6 => {
            // A well-formed header announcing a huge frame, then a little data.
            let len = LENGTHS[rng.below(LENGTHS.len())];
            let mut h = FrameHeader::new(len, rng.below(2) == 0).encode().to_vec();
            h.extend((0..rng.below(32)).map(|_| rng.next() as u8));
            let at = rng.below(b.len() + 1);
            b.splice(at..at, h);
        }
        _ => b = (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
    }
    b
}

/// Runs `harness` on every seed and on `mutations` mutants; returns the number of runs.
fn replay(target: &str, mutations: usize, harness: fn(&[u8]), alloc_bound: fn(usize) -> usize) -> usize {
    let seeds = seeds(target);
    let mut rng = Rng(0x5eed_0000_0000_0001 ^ target.len() as u64);
    let run = |input: &[u8]| {
        let peak = peak_alloc(|| harness(input));
        let bound = alloc_bound(input.len());
        assert!(
            peak <= bound,
            "{target}: input of {} bytes allocated {peak} bytes at once (bound {bound}): {input:02x?}",
            input.len()
        );
    };
    for s in &seeds {
        run(s);
    }
    for i in 0..mutations {
        let seed = &seeds[i % seeds.len()];
        let other = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, seed, other);
        run(&m);
    }
    seeds.len() + mutations
}

// The decoders allocate at most a few copies of what they received (message, re-encoding);
// the socket paths add their fixed buffers (64 KiB read buffer, 64 KiB write coalescing).
fn pure_bound(n: usize) -> usize {
    8 * n + 4096
}

fn socket_bound(n: usize) -> usize {
    8 * n + 512 * 1024
}

#[test]
fn frame_decoder_survives_corpus_and_mutations() {
    let t = Instant::now();
    let runs = replay("frame_decoder", 100_000, harness::frame_decoder, pure_bound);
    eprintln!("frame_decoder: {runs} inputs in {:?}", t.elapsed());
}

#[test]
fn handshake_survives_corpus_and_mutations() {
    let t = Instant::now();
    let runs = replay("handshake", 4_000, harness::handshake, socket_bound);
    eprintln!("handshake: {runs} inputs in {:?}", t.elapsed());
}

#[test]
fn tcp_channel_survives_corpus_and_mutations() {
    let t = Instant::now();
    let runs = replay("tcp_channel", 3_000, harness::tcp_channel, socket_bound);
    eprintln!("tcp_channel: {runs} inputs in {:?}", t.elapsed());
}

#[test]
fn a_declared_length_alone_allocates_nothing() {
    // A header announcing 4 GiB (and 2^63 in the 8 bytes after the magic) under the
    // loosest limits: the decoder reports truncation without allocating for the payload.
    let loosest = 7 | (3 << 3); // selector: frames up to 4 GiB, no message limit
    let mut h = vec![loosest];
    h.extend_from_slice(&FrameHeader::new(u32::MAX, true).encode());
    let peak = peak_alloc(|| harness::frame_decoder(&h));
    assert!(peak < 4096, "{peak} bytes allocated for a bare header");
    let mut x = FRAME_MAGIC.to_vec();
    x.extend_from_slice(&(1u64 << 63).to_le_bytes());
    x.insert(0, loosest);
    let peak = peak_alloc(|| harness::frame_decoder(&x));
    assert!(peak < 4096, "{peak} bytes allocated for a 2^63 length");
}

// ---------------------------------------------------------------------------- seed corpus

fn hello(session: &[u8; 16], party: u32, nonce: u8) -> Vec<u8> {
    let mut v = b"SMHI".to_vec();
    v.push(2);
    v.extend_from_slice(session);
    v.extend_from_slice(&party.to_le_bytes());
    v.extend_from_slice(&[nonce; 32]);
    v
}

fn framed(msgs: &[&[u8]], max_frame: usize) -> Vec<u8> {
    msgs.iter().flat_map(|m| encode_message(m, max_frame, None).expect("encode")).collect()
}

/// Messages as tagged frames under the harness's MAC key, sequence numbers from 0.
fn tagged(msgs: &[&[u8]], max_frame: usize) -> Vec<u8> {
    let mut mac = FrameMac::new(harness::MAC_KEY);
    msgs.iter().flat_map(|m| encode_message(m, max_frame, Some(&mut mac)).expect("encode")).collect()
}

fn with_sel(sel: u8, stream: Vec<u8>) -> Vec<u8> {
    let mut v = vec![sel];
    v.extend(stream);
    v
}

/// The committed seeds: small valid inputs and the edge cases named in the security docs.
fn seed_corpus() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let big = 7 | (3 << 3); // selector: default-or-larger limits
    let small = 2 | (1 << 3); // 7-byte frames, 100-byte messages
    let mut huge_len = FrameHeader::new(u32::MAX, true).encode().to_vec();
    huge_len.extend_from_slice(b"abc");
    let mut len_2_63 = FRAME_MAGIC.to_vec();
    len_2_63.extend_from_slice(&(1u64 << 63).to_le_bytes());
    let mut bad_version = FrameHeader::new(1, true).encode();
    bad_version[4] = 1;
    let mut bad_flags = FrameHeader::new(1, true).encode();
    bad_flags[5] = 0x80;
    let multi = framed(&[&[0x5a; 40]], 7);
    let two = framed(&[b"hello", b""], 16);
    let mut truncated = framed(&[&[1u8; 30]], 16);
    truncated.truncate(truncated.len() - 5);
    let good_hello = framed(&[&hello(&harness::SESSION, harness::CLIENT_ID, 1)], 1 << 20);
    let mut full = good_hello.clone();
    full.extend(framed(&[&[0xab; 32], &[0]], 1 << 20)); // a (wrong) proof, then "accepted"
    let tls_client_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03].to_vec();
    vec![
        ("frame_decoder", "empty_message", with_sel(big, framed(&[b""], 16))),
        ("frame_decoder", "small_message", with_sel(big, framed(&[b"syft"], 1 << 20))),
        ("frame_decoder", "multi_frame", with_sel(small, multi.clone())),
        ("frame_decoder", "two_messages", with_sel(4, two.clone())),
        ("frame_decoder", "len_u32_max", with_sel(big, huge_len.clone())),
        ("frame_decoder", "len_2_pow_63", with_sel(big, len_2_63.clone())),
        ("frame_decoder", "bad_version", with_sel(big, bad_version.to_vec())),
        ("frame_decoder", "bad_flags", with_sel(big, bad_flags.to_vec())),
        ("frame_decoder", "empty_continuation", with_sel(big, FrameHeader::new(0, false).encode().to_vec())),
        ("frame_decoder", "truncated", with_sel(3, truncated.clone())),
        ("frame_decoder", "over_message_limit", with_sel(small, framed(&[&[9u8; 120]], 7))),
        ("frame_decoder", "tagged_messages", with_sel(4, tagged(&[b"hello", b"", &[0x5a; 40]], 16))),
        ("frame_decoder", "tagged_multi_frame", with_sel(small, tagged(&[&[0x5a; 40]], 7))),
        ("handshake", "valid_hello_wrong_proof", full),
        ("handshake", "valid_hello_only", good_hello),
        ("handshake", "wrong_session", framed(&[&hello(b"another-session!", 0, 2)], 1 << 20)),
        ("handshake", "wrong_party", framed(&[&hello(&harness::SESSION, 3, 3)], 1 << 20)),
        ("handshake", "hello_too_long", framed(&[&[hello(&harness::SESSION, 0, 4), vec![0; 40]].concat()], 1 << 20)),
        ("handshake", "oversized_frame", FrameHeader::new(300, true).encode().to_vec()),
        ("handshake", "len_2_pow_63", len_2_63.clone()),
        ("handshake", "http_request", b"GET / HTTP/1.1\r\nHost: worker\r\n\r\n".to_vec()),
        ("handshake", "tls_client_hello", tls_client_hello),
        ("handshake", "empty", vec![]),
        ("tcp_channel", "messages", with_sel(big, two)),
        ("tcp_channel", "multi_frame_small_limits", with_sel(small, multi)),
        ("tcp_channel", "recv_into_exact", with_sel(0x20 | 0x40 | 4, framed(&[&[7u8; 7]], 4096))),
        ("tcp_channel", "len_u32_max", with_sel(big, huge_len)),
        ("tcp_channel", "len_2_pow_63", with_sel(big, len_2_63)),
        ("tcp_channel", "truncated", with_sel(3, truncated)),
        ("tcp_channel", "bad_version", with_sel(big, bad_version.to_vec())),
        ("tcp_channel", "tagged_under_another_key", with_sel(big, tagged(&[b"mul_(-1)"], 1 << 20))),
    ]
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus; run by hand after a wire-format change"]
fn write_seed_corpus() {
    for (target, name, bytes) in seed_corpus() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
}

#[test]
fn committed_seeds_match_the_generator() {
    for (target, name, bytes) in seed_corpus() {
        let path = corpus_dir(target).join(name);
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run write_seed_corpus", path.display()));
        assert_eq!(got, bytes, "{} differs from the generator; run write_seed_corpus", path.display());
    }
}
