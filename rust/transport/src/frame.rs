//! Wire format of one message: a sequence of frames.
//!
//! ```text
//! frame  = header payload
//! header = magic "SMPC" (4 bytes) | version u8 (= 1) | flags u8 | payload length u32 LE   (10 bytes)
//! flags  = bit 0 FINAL (last frame of the message); every other bit must be 0
//! ```
//!
//! A message of `L` bytes is cut into frames of at most `max_frame` bytes; the last one
//! carries FINAL. The empty message is one empty FINAL frame; a non-final frame is never
//! empty. Receivers enforce `max_frame` on every header before reading its payload and
//! `max_message` on the running total, and never allocate from a declared length alone:
//! buffers grow by at most one (bounded) frame at a time.
//!
//! Failure mode: any [`FrameError`] means the stream is out of sync or hostile; the
//! connection is closed ([`FrameError::into_transport`] names the peer).

use crate::TransportError;

/// First bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"SMPC";
/// Frame format version spoken by this build.
pub const FRAME_VERSION: u8 = 1;
/// Flag bit: this frame is the last of its message.
pub const FLAG_FINAL: u8 = 0x01;
/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 10;
/// Default largest frame payload (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Default largest message (1 GiB).
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;
/// Largest frame payload the header can express.
pub const MAX_FRAME_LIMIT: usize = u32::MAX as usize;

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
}

impl FrameError {
    /// The same failure as a transport error naming `peer`: size errors become
    /// [`TransportError::TooLarge`], everything else [`TransportError::Malformed`].
    pub fn into_transport(self, peer: &str) -> TransportError {
        let peer = peer.to_string();
        match self {
            FrameError::FrameTooLarge { len, limit } => TransportError::TooLarge { peer, size: len, limit },
            FrameError::MessageTooLarge { size, limit } => TransportError::TooLarge { peer, size, limit },
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
    if flags & !FLAG_FINAL != 0 {
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

/// Encodes a whole message into frames (a copy; the TCP channel writes without one).
pub fn encode_message(msg: &[u8], max_frame: usize) -> Vec<u8> {
    let max_frame = max_frame.clamp(1, MAX_FRAME_LIMIT);
    let mut out = Vec::with_capacity(msg.len() + HEADER_LEN * (msg.len() / max_frame + 1));
    let mut rest = msg;
    for (len, last) in frame_sizes(msg.len(), max_frame) {
        let (chunk, tail) = rest.split_at(len);
        out.extend_from_slice(&FrameHeader::new(len as u32, last).encode());
        out.extend_from_slice(chunk);
        rest = tail;
    }
    out
}

/// Decodes one whole message at the start of `bytes`; returns it and the bytes consumed.
/// Pure and panic-free; memory grows frame by frame, never from a declared length.
pub fn decode_message(bytes: &[u8], limits: FrameLimits) -> Result<(Vec<u8>, usize), FrameError> {
    let mut msg = Vec::new();
    let mut re = Reassembly::new(limits.max_message);
    let mut pos = 0;
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        let header = decode_header(rest, limits.frame())?;
        re.on_header(&header)?;
        let (_, payload, used) = decode_frame(rest, limits.frame())?;
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
        let enc = encode_message(&[], 16);
        assert_eq!(enc.len(), HEADER_LEN);
        assert_eq!(decode_message(&enc, limits(16)).unwrap(), (vec![], HEADER_LEN));
    }

    #[test]
    fn exact_multiple_has_no_trailing_empty_frame() {
        let enc = encode_message(&[7u8; 32], 16);
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
        assert!(matches!(decode_message(&h, limits(MAX_FRAME_LIMIT)), Err(FrameError::MessageTooLarge { .. })));
        // Even with no limits at all, a header alone never makes the decoder allocate.
        let unlimited = FrameLimits { max_frame: MAX_FRAME_LIMIT, max_message: u64::MAX };
        assert!(matches!(decode_message(&h, unlimited), Err(FrameError::Truncated { .. })));
        let err = decode_header(&h, DEFAULT_MAX_FRAME).unwrap_err().into_transport("party 1 (alice)");
        assert!(matches!(err, TransportError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn message_limit_is_enforced_across_frames() {
        let enc = encode_message(&[1u8; 100], 10);
        let lim = FrameLimits { max_frame: 10, max_message: 95 };
        assert_eq!(decode_message(&enc, lim), Err(FrameError::MessageTooLarge { size: 100, limit: 95 }));
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
        h[4] = 2;
        assert_eq!(decode_header(&h, 16), Err(FrameError::UnsupportedVersion { got: 2 }));
        let mut h = FrameHeader::new(1, true).encode();
        h[5] = 0x81;
        assert_eq!(decode_header(&h, 16), Err(FrameError::UnknownFlags { flags: 0x81 }));
        let err = FrameError::UnsupportedVersion { got: 2 }.into_transport("party 2 (bob)");
        assert!(matches!(err, TransportError::Malformed { .. }));
        assert!(err.to_string().contains("party 2 (bob)"), "{err}");
        let empty = FrameHeader::new(0, false).encode();
        assert_eq!(decode_message(&empty, limits(16)), Err(FrameError::EmptyContinuation));
    }

    proptest! {
        #[test]
        fn round_trip(msg in proptest::collection::vec(any::<u8>(), 0..4096), max_frame in 1usize..600) {
            let enc = encode_message(&msg, max_frame);
            let frames = frame_sizes(msg.len(), max_frame).count();
            prop_assert_eq!(enc.len(), msg.len() + frames * HEADER_LEN);
            let (dec, used) = decode_message(&enc, limits(max_frame)).unwrap();
            prop_assert_eq!(used, enc.len());
            prop_assert_eq!(dec, msg);
        }

        #[test]
        fn back_to_back_messages(a in proptest::collection::vec(any::<u8>(), 0..300),
                                 b in proptest::collection::vec(any::<u8>(), 0..300),
                                 max_frame in 1usize..64) {
            let mut enc = encode_message(&a, max_frame);
            enc.extend(encode_message(&b, max_frame));
            let (da, used) = decode_message(&enc, limits(max_frame)).unwrap();
            let (db, used_b) = decode_message(&enc[used..], limits(max_frame)).unwrap();
            prop_assert_eq!(used + used_b, enc.len());
            prop_assert_eq!((da, db), (a, b));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), max_frame in 0usize..64) {
            let _ = decode_header(&bytes, max_frame);
            let _ = decode_frame(&bytes, max_frame);
            let _ = decode_message(&bytes, FrameLimits { max_frame, max_message: 1000 });
        }

        #[test]
        fn valid_header_random_tail_never_panics(len in any::<u32>(), flags in any::<u8>(),
                                                 tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = FrameHeader { flags, len }.encode().to_vec();
            bytes.extend(tail);
            let _ = decode_message(&bytes, FrameLimits { max_frame: MAX_FRAME_LIMIT, max_message: u64::MAX });
        }

        #[test]
        fn truncated_stream_is_an_error(msg in proptest::collection::vec(any::<u8>(), 0..200), cut in any::<prop::sample::Index>()) {
            let enc = encode_message(&msg, 7);
            let cut = cut.index(enc.len());
            prop_assert!(decode_message(&enc[..cut], limits(7)).is_err());
        }
    }
}
