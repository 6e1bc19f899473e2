//! Wire format of one message: a sequence of frames.
//!
//! ```text
//! frame  = header payload [tag]
//! header = magic "SMPC" (4 bytes) | version u8 (= 3) | flags u8 | payload length u32 LE   (10 bytes)
//! flags  = bit 0 FINAL (last frame of the message), bit 1 ALERT (with FINAL, tagged only:
//!          the sender found a frame from this side bad and closes); every other bit must be 0
//! tag    = POLYVAL_H(header, payload, lengths) XOR BLAKE3_K(seq)   (16 bytes, see FrameMac)
//! ```
//!
//! A message of `L` bytes is cut into frames of at most `max_frame` bytes; the last one
//! carries FINAL. The empty message is one empty FINAL frame; a non-final frame is never
//! empty. Receivers enforce `max_frame` on every header before reading its payload and
//! `max_message` on the running total, and never allocate from a declared length alone:
//! buffers grow by at most one (bounded) frame at a time.
//!
//! **Integrity.** The handshake's frames carry no tag. Every frame after it does
//! ([`FrameMac`]): a MAC under the key of its direction (derived in
//! [`crate::handshake`] from the token and both sides' fresh nonces), over an implicit
//! sequence number that counts that direction's frames from 0, the header and the
//! payload. A frame altered, dropped, replayed, reordered or injected in transit fails
//! the check ([`FrameError::BadTag`]) and the connection is closed; a message is handed
//! up only after all of its frames passed. The header's limits are checked before the tag
//! (so nothing is read or allocated past them), which means a forged header can also end
//! the connection as malformed or too large: any tampering closes it, none is accepted.
//!
//! Failure mode: any [`FrameError`] means the stream is out of sync or hostile; the
//! connection is closed ([`FrameError::into_transport`] names the peer).

use std::sync::Arc;

use crate::polyval_hash::{Path, Polyval, PolyvalKey, BLOCK};
use crate::TransportError;

/// First bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"SMPC";
/// Frame format version spoken by this build.
pub const FRAME_VERSION: u8 = 3;
/// Flag bit: this frame is the last of its message.
pub const FLAG_FINAL: u8 = 0x01;
/// Flag bit: an alert, the sender's last frame: a frame it received failed its tag. Its
/// payload (at most [`ALERT_MAX`] bytes) says which; valid only with FINAL and a tag.
pub const FLAG_ALERT: u8 = 0x02;
/// Largest alert payload.
pub const ALERT_MAX: usize = 256;
/// Start of the detail of an integrity error that the peer reported (so it is not
/// answered with an alert of its own).
pub const PEER_REJECTED: &str = "the peer found a frame from this side";
/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 10;
/// Default largest frame payload (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Default largest message (1 GiB).
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;
/// Largest frame payload the header can express.
pub const MAX_FRAME_LIMIT: usize = u32::MAX as usize;
/// Length of the tag after each frame's payload once the handshake is done.
pub const TAG_LEN: usize = 16;
/// Length of a direction key of [`FrameMac`].
pub const KEY_LEN: usize = 32;

/// The integrity state of one direction of a channel: that direction's keys and the
/// sequence number of its next frame.
///
/// Each tag is a Wegman–Carter MAC (Wegman and Carter, "New hash functions and their use
/// in authentication and set equality", 1981), as in GMAC and AES-GCM-SIV:
///
/// ```text
/// tag = POLYVAL_H(pad16(header) | pad16(payload) | len) XOR BLAKE3_K(seq u64 LE)[..16]
/// len = header bits u64 LE | payload bits u64 LE
/// ```
///
/// POLYVAL ([`crate::polyval_hash`], RFC 8452) is ε-almost-XOR-universal with
/// ε = ℓ/2^128 for ℓ-block inputs, and the length block makes the encoding injective; the
/// one-time pad is keyed BLAKE3 (a PRF) of the frame's sequence number, which never repeats
/// under a key. A forgery therefore succeeds with probability at most ℓ/2^128 (≤ 2^-110
/// for 1 MiB frames) per attempt, and the first failed attempt closes the connection.
/// `H` and `K` are derived from the direction key with BLAKE3's `derive_key`. The
/// sequence number is never sent: both ends count, so a replayed, dropped or reordered
/// frame is checked under the wrong number and fails like an altered one.
///
/// Why not keyed BLAKE3 over the frame (the previous tag): POLYVAL folds 32 blocks per
/// reduction with VPCLMULQDQ at several times BLAKE3's speed, and a tag is computed by
/// the sender and checked by the receiver on every byte (docs/BENCHMARKS.md, "Per-frame MAC").
#[derive(Clone)]
pub struct FrameMac {
    hash_key: Arc<PolyvalKey>,
    pad_key: [u8; KEY_LEN],
    seq: u64,
}

impl std::fmt::Debug for FrameMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrameMac(next frame {}, {})", self.seq, self.hash_key.path().name())
    }
}

/// The tag of one frame being computed ([`FrameMac::start`]); payload bytes go in with
/// [`FrameTag::update`], in order, in pieces of any size.
pub struct FrameTag {
    hash: Polyval,
    payload_len: u64,
}

impl FrameTag {
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
        self.payload_len += bytes.len() as u64;
    }
}

/// Contexts of the two keys derived from a direction key (BLAKE3 `derive_key`).
const HASH_KEY_CONTEXT: &str = "syft_mpc frame MAC v3: POLYVAL key H";
const PAD_KEY_CONTEXT: &str = "syft_mpc frame MAC v3: pad key K";

impl FrameMac {
    /// A direction starting at frame 0 under `key`, on the fastest POLYVAL path of this CPU.
    pub fn new(key: [u8; KEY_LEN]) -> Self {
        Self::with_path(key, Path::best())
    }

    /// As [`FrameMac::new`] on a given POLYVAL path (tests and benchmarks).
    pub fn with_path(key: [u8; KEY_LEN], path: Path) -> Self {
        let h = blake3::derive_key(HASH_KEY_CONTEXT, &key);
        let mut hash_key = [0u8; BLOCK];
        hash_key.copy_from_slice(&h[..BLOCK]);
        FrameMac {
            hash_key: Arc::new(PolyvalKey::with_path(hash_key, path)),
            pad_key: blake3::derive_key(PAD_KEY_CONTEXT, &key),
            seq: 0,
        }
    }

    /// The sequence number of the next frame.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Starts the tag of the next frame: the header goes in first, as a block of its own.
    pub fn start(&self, header: &[u8; HEADER_LEN]) -> FrameTag {
        let mut hash = Polyval::new(Arc::clone(&self.hash_key));
        hash.update(header);
        hash.pad();
        FrameTag { hash, payload_len: 0 }
    }

    fn finish(&mut self, mut t: FrameTag) -> Result<(u64, [u8; TAG_LEN]), FrameError> {
        let seq = self.seq;
        // 2^64 frames of even one byte is far beyond any connection's life; never wrap.
        self.seq = seq.checked_add(1).ok_or(FrameError::SequenceExhausted)?;
        t.hash.pad();
        let mut lengths = [0u8; BLOCK];
        lengths[..8].copy_from_slice(&((HEADER_LEN as u64) * 8).to_le_bytes());
        lengths[8..].copy_from_slice(&t.payload_len.wrapping_mul(8).to_le_bytes());
        t.hash.update(&lengths);
        let mut tag = t.hash.finalize();
        let pad = blake3::keyed_hash(&self.pad_key, &seq.to_le_bytes());
        for (b, p) in tag.iter_mut().zip(pad.as_bytes()) {
            *b ^= p;
        }
        Ok((seq, tag))
    }

    /// The tag of a frame (sender side); moves on to the next frame.
    pub fn seal(&mut self, t: FrameTag) -> Result<[u8; TAG_LEN], FrameError> {
        Ok(self.finish(t)?.1)
    }

    /// Checks the tag that came with a frame (receiver side), in constant time; moves on
    /// to the next frame. Errors: [`FrameError::BadTag`] naming the frame's number.
    pub fn check(&mut self, t: FrameTag, tag: &[u8; TAG_LEN]) -> Result<(), FrameError> {
        let (seq, want) = self.finish(t)?;
        let diff = want.iter().zip(tag).fold(0u8, |d, (a, b)| d | (a ^ b));
        if std::hint::black_box(diff) == 0 {
            Ok(())
        } else {
            Err(FrameError::BadTag { seq })
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub flags: u8,
    /// Payload length in bytes.
    pub len: u32,
}

impl FrameHeader {
    pub fn new(len: u32, last: bool) -> Self {
        FrameHeader { flags: if last { FLAG_FINAL } else { 0 }, len }
    }

    /// True for the last frame of a message.
    pub fn is_final(&self) -> bool {
        self.flags & FLAG_FINAL != 0
    }

    /// The header of an alert of `len` bytes.
    pub fn alert(len: u32) -> Self {
        FrameHeader { flags: FLAG_FINAL | FLAG_ALERT, len }
    }

    /// True for an alert frame.
    pub fn is_alert(&self) -> bool {
        self.flags & FLAG_ALERT != 0
    }

    /// The 10 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&FRAME_MAGIC);
        h[4] = FRAME_VERSION;
        h[5] = self.flags;
        h[6..].copy_from_slice(&self.len.to_le_bytes());
        h
    }
}

/// Why bytes are not a valid frame stream. Converted to a [`TransportError`] naming the
/// peer with [`FrameError::into_transport`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "bad magic bytes {got:02x?} (expected {FRAME_MAGIC:02x?}): not a syft_mpc peer, or the stream is out of sync"
    )]
    BadMagic { got: [u8; 4] },
    #[error(
        "frame version {got}, this build speaks version {FRAME_VERSION}; run the same syft_mpc version on every party"
    )]
    UnsupportedVersion { got: u8 },
    #[error("unknown frame flags {flags:#04x}")]
    UnknownFlags { flags: u8 },
    #[error("frame of {len} bytes announced, the limit is {limit}")]
    FrameTooLarge { len: u64, limit: u64 },
    #[error("message of at least {size} bytes announced, the limit is {limit}")]
    MessageTooLarge { size: u64, limit: u64 },
    #[error("empty non-final frame")]
    EmptyContinuation,
    #[error("truncated input: {needed} bytes needed, {have} available")]
    Truncated { needed: usize, have: usize },
    #[error(
        "frame {seq} of this connection failed its integrity check (the MAC does not match): it was altered, \
         replayed, reordered or injected on the way, or the sender does not hold this connection's keys"
    )]
    BadTag { seq: u64 },
    #[error("2^64 frames sent on one connection; open a new one")]
    SequenceExhausted,
    #[error(
        "{PEER_REJECTED} altered, replayed, reordered or injected on the way, and closed the connection ({reason})"
    )]
    PeerAlert { reason: String },
    #[error("an alert frame of {len} bytes where none may be (before the handshake ends, or above {ALERT_MAX} bytes)")]
    BadAlert { len: u32 },
}

impl FrameError {
    /// The same failure as a transport error naming `peer`: size errors become
    /// [`TransportError::TooLarge`], a failed tag [`TransportError::Integrity`], everything
    /// else [`TransportError::Malformed`].
    pub fn into_transport(self, peer: &str) -> TransportError {
        let peer = peer.to_string();
        match self {
            FrameError::FrameTooLarge { len, limit } => TransportError::TooLarge { peer, size: len, limit },
            FrameError::MessageTooLarge { size, limit } => TransportError::TooLarge { peer, size, limit },
            e @ (FrameError::BadTag { .. } | FrameError::PeerAlert { .. }) => {
                TransportError::Integrity { peer, detail: e.to_string() }
            }
            other => TransportError::Malformed { peer, detail: other.to_string() },
        }
    }
}

/// Size limits applied by a receiver (and by senders to what they send).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest frame payload, `1..=u32::MAX`.
    pub max_frame: usize,
    /// Largest message.
    pub max_message: u64,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits { max_frame: DEFAULT_MAX_FRAME, max_message: DEFAULT_MAX_MESSAGE }
    }
}

impl FrameLimits {
    /// `max_frame` clamped to what a header can express (and at least 1).
    pub fn frame(&self) -> usize {
        self.max_frame.clamp(1, MAX_FRAME_LIMIT)
    }
}

/// Decodes and checks a frame header from the first [`HEADER_LEN`] bytes of `bytes`.
/// Pure and panic-free on any input; rejects a length above `max_frame` before anything
/// is read or allocated for the payload.
pub fn decode_header(bytes: &[u8], max_frame: usize) -> Result<FrameHeader, FrameError> {
    let h: &[u8; HEADER_LEN] = match bytes.get(..HEADER_LEN).and_then(|s| s.try_into().ok()) {
        Some(h) => h,
        None => return Err(FrameError::Truncated { needed: HEADER_LEN, have: bytes.len() }),
    };
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic { got: magic });
    }
    if h[4] != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion { got: h[4] });
    }
    let flags = h[5];
    if flags & !(FLAG_FINAL | FLAG_ALERT) != 0 || flags == FLAG_ALERT {
        return Err(FrameError::UnknownFlags { flags });
    }
    let len = u32::from_le_bytes([h[6], h[7], h[8], h[9]]);
    let limit = max_frame.clamp(1, MAX_FRAME_LIMIT);
    if len as usize > limit {
        return Err(FrameError::FrameTooLarge { len: len.into(), limit: limit as u64 });
    }
    Ok(FrameHeader { flags, len })
}

/// Decodes one whole frame at the start of `bytes`: its header, its payload, and the
/// number of bytes consumed. Pure and panic-free (a fuzz target can call it directly).
pub fn decode_frame(bytes: &[u8], max_frame: usize) -> Result<(FrameHeader, &[u8], usize), FrameError> {
    let header = decode_header(bytes, max_frame)?;
    let end = HEADER_LEN + header.len as usize;
    match bytes.get(HEADER_LEN..end) {
        Some(payload) => Ok((header, payload, end)),
        None => Err(FrameError::Truncated { needed: end, have: bytes.len() }),
    }
}

/// The reason carried by an alert, made safe to embed in an error message.
pub fn alert_reason(payload: &[u8]) -> String {
    let s = String::from_utf8_lossy(&payload[..payload.len().min(ALERT_MAX)]);
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Bookkeeping of one message being reassembled: checks each header against the message
/// limit before its payload is read. Shared by the socket reader and [`decode_message`].
#[derive(Clone, Copy, Debug)]
pub struct Reassembly {
    total: u64,
    limit: u64,
}

impl Reassembly {
    pub fn new(max_message: u64) -> Self {
        Reassembly { total: 0, limit: max_message }
    }

    /// Accounts for the next frame header; returns its payload length.
    pub fn on_header(&mut self, h: &FrameHeader) -> Result<usize, FrameError> {
        if h.len == 0 && !h.is_final() {
            return Err(FrameError::EmptyContinuation);
        }
        let total = self.total.saturating_add(h.len.into());
        if total > self.limit {
            return Err(FrameError::MessageTooLarge { size: total, limit: self.limit });
        }
        self.total = total;
        Ok(h.len as usize)
    }

    /// Bytes accounted so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Frame lengths of a message of `len` bytes: `(payload length, is_final)` per frame.
pub fn frame_sizes(len: usize, max_frame: usize) -> impl Iterator<Item = (usize, bool)> {
    let max_frame = max_frame.clamp(1, MAX_FRAME_LIMIT);
    let frames = len.div_ceil(max_frame).max(1);
    (0..frames).map(move |i| {
        let start = i * max_frame;
        ((len - start).min(max_frame), i + 1 == frames)
    })
}

/// Encodes a whole message into frames (a copy; the TCP channel writes without one),
/// each followed by its tag when `mac` is given (the frames after a handshake).
/// Errors: only [`FrameError::SequenceExhausted`].
pub fn encode_message(msg: &[u8], max_frame: usize, mut mac: Option<&mut FrameMac>) -> Result<Vec<u8>, FrameError> {
    let max_frame = max_frame.clamp(1, MAX_FRAME_LIMIT);
    let per_frame = HEADER_LEN + if mac.is_some() { TAG_LEN } else { 0 };
    let mut out = Vec::with_capacity(msg.len() + per_frame * (msg.len() / max_frame + 1));
    let mut rest = msg;
    for (len, last) in frame_sizes(msg.len(), max_frame) {
        let (chunk, tail) = rest.split_at(len);
        let header = FrameHeader::new(len as u32, last).encode();
        out.extend_from_slice(&header);
        out.extend_from_slice(chunk);
        if let Some(m) = mac.as_deref_mut() {
            let mut t = m.start(&header);
            t.update(chunk);
            out.extend_from_slice(&m.seal(t)?);
        }
        rest = tail;
    }
    Ok(out)
}

/// Decodes one whole message at the start of `bytes`; returns it and the bytes consumed.
/// With `mac`, every frame must be followed by its valid tag. Pure and panic-free; memory
/// grows frame by frame, never from a declared length.
pub fn decode_message(
    bytes: &[u8],
    limits: FrameLimits,
    mut mac: Option<&mut FrameMac>,
) -> Result<(Vec<u8>, usize), FrameError> {
    let mut msg = Vec::new();
    let mut re = Reassembly::new(limits.max_message);
    let mut pos = 0;
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        let header = decode_header(rest, limits.frame())?;
        if header.is_alert() && (mac.is_none() || header.len as usize > ALERT_MAX) {
            return Err(FrameError::BadAlert { len: header.len });
        }
        re.on_header(&header)?;
        let (_, payload, mut used) = decode_frame(rest, limits.frame())?;
        if let Some(m) = mac.as_deref_mut() {
            let tag: &[u8; TAG_LEN] = match rest.get(used..used + TAG_LEN).and_then(|t| t.try_into().ok()) {
                Some(t) => t,
                None => return Err(FrameError::Truncated { needed: used + TAG_LEN, have: rest.len() }),
            };
            let mut t = m.start(&header.encode());
            t.update(payload);
            m.check(t, tag)?;
            used += TAG_LEN;
            if header.is_alert() {
                return Err(FrameError::PeerAlert { reason: alert_reason(payload) });
            }
        }
        msg.extend_from_slice(payload);
        pos += used;
        if header.is_final() {
            return Ok((msg, pos));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(max_frame: usize) -> FrameLimits {
        FrameLimits { max_frame, max_message: DEFAULT_MAX_MESSAGE }
    }

    #[test]
    fn empty_message_is_one_final_frame() {
        let enc = encode_message(&[], 16, None).unwrap();
        assert_eq!(enc.len(), HEADER_LEN);
        assert_eq!(decode_message(&enc, limits(16), None).unwrap(), (vec![], HEADER_LEN));
    }

    #[test]
    fn exact_multiple_has_no_trailing_empty_frame() {
        let enc = encode_message(&[7u8; 32], 16, None).unwrap();
        assert_eq!(enc.len(), 2 * (HEADER_LEN + 16));
        assert!(decode_header(&enc[HEADER_LEN + 16..], 16).unwrap().is_final());
    }

    #[test]
    fn huge_announced_length_is_rejected_before_reading() {
        let h = FrameHeader::new(u32::MAX, true).encode();
        assert_eq!(
            decode_header(&h, DEFAULT_MAX_FRAME),
            Err(FrameError::FrameTooLarge { len: u32::MAX as u64, limit: DEFAULT_MAX_FRAME as u64 })
        );
        // The message limit catches it too, before any payload is read.
        assert!(matches!(decode_message(&h, limits(MAX_FRAME_LIMIT), None), Err(FrameError::MessageTooLarge { .. })));
        // Even with no limits at all, a header alone never makes the decoder allocate.
        let unlimited = FrameLimits { max_frame: MAX_FRAME_LIMIT, max_message: u64::MAX };
        assert!(matches!(decode_message(&h, unlimited, None), Err(FrameError::Truncated { .. })));
        let err = decode_header(&h, DEFAULT_MAX_FRAME).unwrap_err().into_transport("party 1 (alice)");
        assert!(matches!(err, TransportError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn message_limit_is_enforced_across_frames() {
        let enc = encode_message(&[1u8; 100], 10, None).unwrap();
        let lim = FrameLimits { max_frame: 10, max_message: 95 };
        assert_eq!(decode_message(&enc, lim, None), Err(FrameError::MessageTooLarge { size: 100, limit: 95 }));
        // A running total near 2^64 saturates instead of wrapping.
        let mut re = Reassembly::new(u64::MAX - 1);
        re.total = u64::MAX - 2;
        assert!(matches!(re.on_header(&FrameHeader::new(10, false)), Err(FrameError::MessageTooLarge { .. })));
    }

    #[test]
    fn bad_magic_version_flags() {
        let mut h = FrameHeader::new(1, true).encode();
        h[0] = b'X';
        assert!(matches!(decode_header(&h, 16), Err(FrameError::BadMagic { .. })));
        let mut h = FrameHeader::new(1, true).encode();
        h[4] = 1; // the untagged format of older builds
        assert_eq!(decode_header(&h, 16), Err(FrameError::UnsupportedVersion { got: 1 }));
        let mut h = FrameHeader::new(1, true).encode();
        h[5] = 0x81;
        assert_eq!(decode_header(&h, 16), Err(FrameError::UnknownFlags { flags: 0x81 }));
        let err = FrameError::UnsupportedVersion { got: 2 }.into_transport("party 2 (bob)");
        assert!(matches!(err, TransportError::Malformed { .. }));
        assert!(err.to_string().contains("party 2 (bob)"), "{err}");
        let empty = FrameHeader::new(0, false).encode();
        assert_eq!(decode_message(&empty, limits(16), None), Err(FrameError::EmptyContinuation));
    }

    fn macs() -> (FrameMac, FrameMac) {
        (FrameMac::new([5; KEY_LEN]), FrameMac::new([5; KEY_LEN]))
    }

    #[test]
    fn tagged_frames_round_trip_and_count() {
        let (mut tx, mut rx) = macs();
        let enc = encode_message(&[3u8; 40], 16, Some(&mut tx)).unwrap();
        assert_eq!(enc.len(), 40 + 3 * (HEADER_LEN + TAG_LEN));
        assert_eq!(tx.seq(), 3);
        assert_eq!(decode_message(&enc, limits(16), Some(&mut rx)).unwrap(), (vec![3u8; 40], enc.len()));
        assert_eq!(rx.seq(), 3);
        // Untagged decoding of a tagged stream fails (the tag is not a header).
        assert!(decode_message(&enc, limits(16), None).is_err());
    }

    #[test]
    fn tampering_replay_reordering_and_injection_fail_the_tag() {
        let (mut tx, _) = macs();
        let a = encode_message(b"first message", 1 << 20, Some(&mut tx)).unwrap();
        let b = encode_message(b"second message", 1 << 20, Some(&mut tx)).unwrap();
        let bad = |stream: &[u8]| {
            let (_, mut rx) = macs();
            let mut rest = stream;
            loop {
                match decode_message(rest, limits(1 << 20), Some(&mut rx)) {
                    Ok((_, used)) => rest = &rest[used..],
                    Err(e) => return e,
                }
            }
        };
        let mut flipped = a.clone();
        flipped[HEADER_LEN + 2] ^= 1;
        assert_eq!(bad(&flipped), FrameError::BadTag { seq: 0 });
        assert_eq!(bad(&[a.clone(), a.clone()].concat()), FrameError::BadTag { seq: 1 }, "replay");
        assert_eq!(bad(&[b.clone(), a.clone()].concat()), FrameError::BadTag { seq: 0 }, "reordering");
        assert_eq!(bad(&b), FrameError::BadTag { seq: 0 }, "a dropped frame");
        let forged = encode_message(b"mul_(-1)", 1 << 20, Some(&mut FrameMac::new([6; KEY_LEN]))).unwrap();
        assert_eq!(bad(&[a.clone(), forged].concat()), FrameError::BadTag { seq: 1 }, "injection");
        let mut cut_final = a.clone();
        cut_final[5] = 0; // FINAL cleared: the message would continue
        assert_eq!(bad(&cut_final), FrameError::BadTag { seq: 0 });
        let err = FrameError::BadTag { seq: 4 }.into_transport("party 1 (alice)");
        assert!(matches!(err, TransportError::Integrity { .. }), "{err}");
        assert!(err.to_string().contains("party 1 (alice)") && err.to_string().contains("frame 4"), "{err}");
        // An alert, tagged like any frame: an integrity error saying the peer rejected us.
        let mut tx2 = FrameMac::new([5; KEY_LEN]);
        let h = FrameHeader::alert(3).encode();
        let mut t = tx2.start(&h);
        t.update(b"why");
        let alert = [&h[..], b"why", &tx2.seal(t).unwrap()].concat();
        let err = bad(&alert);
        assert!(matches!(&err, FrameError::PeerAlert { reason } if reason == "why"), "{err}");
        assert!(err.into_transport("w").to_string().contains(PEER_REJECTED));
        assert_eq!(decode_message(&alert, limits(16), None), Err(FrameError::BadAlert { len: 3 }));
        let mut h = FrameHeader::alert(1).encode();
        h[5] = FLAG_ALERT; // an alert must be final
        assert_eq!(decode_header(&h, 16), Err(FrameError::UnknownFlags { flags: FLAG_ALERT }));
        let mut last = FrameMac::new([0; KEY_LEN]);
        last.seq = u64::MAX;
        assert_eq!(last.seal(last.start(&[0; HEADER_LEN])).unwrap_err(), FrameError::SequenceExhausted);
    }

    /// The tag of one known frame, as computed by the independent Python implementation
    /// of the format in `tests/_wire.py` (RFC 8452 arithmetic on Python integers).
    #[test]
    fn known_tag_from_an_independent_implementation() {
        for path in Path::available() {
            let mut tx = FrameMac::with_path([5; KEY_LEN], path);
            let enc = encode_message(b"first message", 1 << 20, Some(&mut tx)).unwrap();
            let tag: String = enc[enc.len() - TAG_LEN..].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(tag, "458c7cec88a8b66dec028f8bd190f7c9", "{path:?}");
        }
    }

    #[test]
    fn every_polyval_path_gives_the_same_tags() {
        let msg: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        let tags: Vec<Vec<u8>> = Path::available()
            .into_iter()
            .map(|p| encode_message(&msg, 1500, Some(&mut FrameMac::with_path([9; KEY_LEN], p))).unwrap())
            .collect();
        assert!(tags.windows(2).all(|w| w[0] == w[1]), "paths {:?} disagree", Path::available());
    }

    proptest! {
        #[test]
        fn tagged_round_trip_and_any_bit_flip_fails(msg in proptest::collection::vec(any::<u8>(), 0..600),
                                                    max_frame in 1usize..200, bit in any::<prop::sample::Index>()) {
            let (mut tx, mut rx) = macs();
            let enc = encode_message(&msg, max_frame, Some(&mut tx)).unwrap();
            prop_assert_eq!(decode_message(&enc, limits(max_frame), Some(&mut rx)).unwrap(), (msg.clone(), enc.len()));
            let mut flipped = enc.clone();
            let i = bit.index(enc.len() * 8);
            flipped[i / 8] ^= 1 << (i % 8);
            let (_, mut rx) = macs();
            prop_assert!(decode_message(&flipped, limits(max_frame), Some(&mut rx)).is_err());
        }

        #[test]
        fn round_trip(msg in proptest::collection::vec(any::<u8>(), 0..4096), max_frame in 1usize..600) {
            let enc = encode_message(&msg, max_frame, None).unwrap();
            let frames = frame_sizes(msg.len(), max_frame).count();
            prop_assert_eq!(enc.len(), msg.len() + frames * HEADER_LEN);
            let (dec, used) = decode_message(&enc, limits(max_frame), None).unwrap();
            prop_assert_eq!(used, enc.len());
            prop_assert_eq!(dec, msg);
        }

        #[test]
        fn back_to_back_messages(a in proptest::collection::vec(any::<u8>(), 0..300),
                                 b in proptest::collection::vec(any::<u8>(), 0..300),
                                 max_frame in 1usize..64) {
            let mut enc = encode_message(&a, max_frame, None).unwrap();
            enc.extend(encode_message(&b, max_frame, None).unwrap());
            let (da, used) = decode_message(&enc, limits(max_frame), None).unwrap();
            let (db, used_b) = decode_message(&enc[used..], limits(max_frame), None).unwrap();
            prop_assert_eq!(used + used_b, enc.len());
            prop_assert_eq!((da, db), (a, b));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), max_frame in 0usize..64) {
            let _ = decode_header(&bytes, max_frame);
            let _ = decode_frame(&bytes, max_frame);
            let _ = decode_message(&bytes, FrameLimits { max_frame, max_message: 1000 }, None);
        }

        #[test]
        fn valid_header_random_tail_never_panics(len in any::<u32>(), flags in any::<u8>(),
                                                 tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = FrameHeader { flags, len }.encode().to_vec();
            bytes.extend(tail);
            let _ = decode_message(&bytes, FrameLimits { max_frame: MAX_FRAME_LIMIT, max_message: u64::MAX }, None);
        }

        #[test]
        fn truncated_stream_is_an_error(msg in proptest::collection::vec(any::<u8>(), 0..200), cut in any::<prop::sample::Index>()) {
            let enc = encode_message(&msg, 7, None).unwrap();
            let cut = cut.index(enc.len());
            prop_assert!(decode_message(&enc[..cut], limits(7), None).is_err());
        }
    }
}
