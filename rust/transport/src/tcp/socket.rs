//! The socket layer under [`TcpChannel`](super::TcpChannel): framed reads and writes on a
//! byte stream (the socket itself, or TLS over it), reads bounded by a deadline, and the
//! mapping of I/O errors to transport errors that name the peer.
//!
//! Nothing here picks plaintext or TLS: the channel does ([`super::channel`]), and
//! [`crate::tls`] builds on [`SocketReader`] and reports a record it rejects with
//! [`record_error`], which [`Ctx::io`] recognises.

use crate::frame::{
    alert_reason, decode_header, frame_sizes, FrameError, FrameHeader, FrameLimits, FrameMac, FrameTag, Reassembly,
    ALERT_MAX, HEADER_LEN, TAG_LEN,
};
use crate::message::Message;
use crate::TransportError;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Writes up to this size are assembled in one buffer (one syscall); larger payloads are
/// written straight from the caller's slice.
const COALESCE: usize = 64 * 1024;
/// Bytes written or read between MAC updates: the MAC reads each piece right after the
/// kernel's copy touched it, while it is still in L2 (a whole 1 MiB frame, with the
/// kernel's own buffers beside it, is not).
const MAC_PIECE: usize = 128 * 1024;

/// Context for turning I/O errors into transport errors that name the peer.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) peer: &'a str,
    pub(crate) timeout: Duration,
}

impl Ctx<'_> {
    pub(crate) fn io(&self, e: io::Error, during: &str) -> TransportError {
        let peer = self.peer.to_string();
        if let Some(t) = tls_error(&e) {
            // A record that fails to decrypt or parse: altered in transit, or a broken peer.
            return TransportError::Malformed { peer, detail: format!("TLS record rejected {during}: {t}") };
        }
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => TransportError::Timeout { peer, timeout: self.timeout },
            ErrorKind::UnexpectedEof => {
                TransportError::Disconnected { peer, detail: format!("end of stream {during}") }
            }
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::NotConnected
            | ErrorKind::WriteZero => TransportError::Disconnected { peer, detail: format!("{e} ({during})") },
            _ => TransportError::Io { peer, source: e },
        }
    }
}

/// A TLS record error as an I/O error (`InvalidData`); [`tls_error`] gets it back.
pub(crate) fn record_error(e: rustls::Error) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, e)
}

/// The rustls error inside an I/O error made by [`record_error`], if any.
pub(crate) fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// The receiving socket. With a deadline (set for the handshake) every read waits at most
/// until the deadline, not a full timeout per read: a stranger trickling one byte at a time
/// cannot hold a handshake (and the thread running it) open longer than its bound.
pub(crate) struct SocketReader {
    pub(crate) sock: TcpStream,
    pub(crate) deadline: Option<Instant>,
}

impl Read for SocketReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(ErrorKind::TimedOut, "deadline passed"));
            }
            self.sock.set_read_timeout(Some(left))?;
        }
        self.sock.read(buf)
    }
}

/// `now + d`, saturating far in the future instead of panicking on overflow (a huge
/// timeout means "no bound").
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600))).unwrap_or(now)
}

/// The sending half: frames messages onto `stream` (a clone of the socket, or TLS over it)
/// through a small coalescing buffer; after the handshake each frame is followed by its
/// tag under `mac` ([`crate::frame`]).
pub(crate) struct Writer<W> {
    pub(crate) stream: W,
    pub(crate) mac: Option<FrameMac>,
    buf: Vec<u8>,
    /// A message was started and not finished (its write failed): nothing more may go out.
    torn: bool,
}

impl<W: Write> Writer<W> {
    pub(crate) fn new(stream: W) -> Self {
        Writer { stream, mac: None, buf: Vec::with_capacity(COALESCE), torn: false }
    }

    /// Sends an alert (one tagged frame, see [`crate::frame`]) telling the peer that a frame
    /// it sent failed its tag, when the stream is at a message boundary. Best effort.
    pub(crate) fn write_alert(&mut self, reason: &str) -> io::Result<()> {
        let Some(m) = self.mac.as_mut() else { return Ok(()) };
        if self.torn {
            return Ok(());
        }
        let reason = &reason.as_bytes()[..reason.len().min(ALERT_MAX)];
        let header = FrameHeader::alert(reason.len() as u32).encode();
        let mut t = m.start(&header);
        t.update(reason);
        let tag = m.seal(t).map_err(io::Error::other)?;
        self.torn = true; // the alert is the last frame either way
        self.stream.write_all(&[&header[..], reason, &tag].concat())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.stream.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Frames the concatenation of `parts` (without joining them); headers and small
    /// payloads are coalesced into ≤ 64 KiB writes, the bulk of large payloads goes to the
    /// socket without a copy.
    pub(crate) fn write_message(&mut self, parts: &[&[u8]], max_frame: usize) -> io::Result<()> {
        if self.torn {
            return Err(io::Error::new(ErrorKind::BrokenPipe, "an earlier message was cut off"));
        }
        self.torn = true;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut next = parts.iter().copied().filter(|p| !p.is_empty());
        let mut cur: &[u8] = &[];
        for (len, last) in frame_sizes(total, max_frame) {
            if self.buf.len() + HEADER_LEN > COALESCE {
                self.flush_buf()?;
            }
            let header = FrameHeader::new(len as u32, last).encode();
            self.buf.extend_from_slice(&header);
            let mut tag = self.mac.as_ref().map(|m| m.start(&header));
            let mut need = len;
            while need > 0 {
                if cur.is_empty() {
                    match next.next() {
                        Some(p) => cur = p,
                        None => break, // unreachable: the parts sum to `total`
                    }
                }
                let (chunk, rest) = cur.split_at(need.min(cur.len()));
                cur = rest;
                need -= chunk.len();
                let head = chunk.len().min(COALESCE - self.buf.len());
                self.buf.extend_from_slice(&chunk[..head]);
                if let Some(t) = tag.as_mut() {
                    t.update(&chunk[..head]);
                }
                if head < chunk.len() {
                    self.flush_buf()?;
                    // After each write: the kernel's copy has just brought the piece into
                    // cache, so the MAC reads it from there, not from memory again.
                    for piece in chunk[head..].chunks(MAC_PIECE) {
                        self.stream.write_all(piece)?;
                        if let Some(t) = tag.as_mut() {
                            t.update(piece);
                        }
                    }
                }
            }
            if let (Some(t), Some(m)) = (tag, self.mac.as_mut()) {
                let tag = m.seal(t).map_err(io::Error::other)?;
                if self.buf.len() + TAG_LEN > COALESCE {
                    self.flush_buf()?;
                }
                self.buf.extend_from_slice(&tag);
            }
        }
        self.flush_buf()?;
        self.torn = false;
        Ok(())
    }
}

fn read_header<R: Read>(
    r: &mut R,
    limits: &FrameLimits,
    ctx: Ctx<'_>,
    got: u64,
    mac: Option<&FrameMac>,
) -> Result<(FrameHeader, Option<FrameTag>), TransportError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).map_err(|e| {
        let during = if got == 0 {
            "while waiting for a message".to_string()
        } else {
            format!("in the middle of a message, after {got} bytes")
        };
        ctx.io(e, &during)
    })?;
    let header = decode_header(&h, limits.frame()).map_err(|e| e.into_transport(ctx.peer))?;
    if header.is_alert() && (mac.is_none() || header.len as usize > ALERT_MAX) {
        return Err(FrameError::BadAlert { len: header.len }.into_transport(ctx.peer));
    }
    Ok((header, mac.map(|m| m.start(&h))))
}

/// Reads the rest of an alert frame (a small payload and its tag) and returns the
/// integrity error it reports (or the error of a bad tag).
fn read_alert<R: Read>(
    r: &mut R,
    h: &FrameHeader,
    tag: Option<FrameTag>,
    mac: Option<&mut FrameMac>,
    ctx: Ctx<'_>,
) -> TransportError {
    let mut reason = vec![0u8; h.len as usize]; // at most ALERT_MAX, checked in read_header
    if let Err(e) = r.read_exact(&mut reason) {
        return ctx.io(e, "reading an alert");
    }
    let mut tag = tag;
    if let Some(t) = tag.as_mut() {
        t.update(&reason);
    }
    match check_tag(r, mac, tag, ctx, 0) {
        Ok(()) => FrameError::PeerAlert { reason: alert_reason(&reason) }.into_transport(ctx.peer),
        Err(e) => e,
    }
}

/// Reads the tag that follows a frame's payload and checks it (`tag` holds the frame
/// so far; none before the handshake is done).
fn check_tag<R: Read>(
    r: &mut R,
    mac: Option<&mut FrameMac>,
    tag: Option<FrameTag>,
    ctx: Ctx<'_>,
    got: usize,
) -> Result<(), TransportError> {
    let (Some(m), Some(t)) = (mac, tag) else { return Ok(()) };
    let mut want = [0u8; TAG_LEN];
    r.read_exact(&mut want)
        .map_err(|e| ctx.io(e, &format!("in the middle of a message, after {got} bytes (reading a frame's tag)")))?;
    m.check(t, &want).map_err(|e| e.into_transport(ctx.peer))
}

/// Reads one message of exactly the parts' total length straight into `parts`, in order.
pub(crate) fn read_message_into<R: Read>(
    r: &mut R,
    parts: &mut [&mut [u8]],
    limits: &FrameLimits,
    ctx: Ctx<'_>,
    mut mac: Option<&mut FrameMac>,
) -> Result<(), TransportError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut re = Reassembly::new(limits.max_message);
    let (mut off, mut part, mut at) = (0usize, 0usize, 0usize);
    loop {
        let (h, mut tag) = read_header(r, limits, ctx, off as u64, mac.as_deref())?;
        if h.is_alert() {
            return Err(read_alert(r, &h, tag, mac, ctx));
        }
        let len = re.on_header(&h).map_err(|e| e.into_transport(ctx.peer))?;
        let end = off.saturating_add(len);
        if end > total {
            return Err(TransportError::UnexpectedLength { peer: ctx.peer.into(), expected: total, got: end });
        }
        while off < end {
            while at == parts[part].len() {
                (part, at) = (part + 1, 0); // in range: the parts hold `end` bytes or more
            }
            let n = (end - off).min(parts[part].len() - at).min(MAC_PIECE);
            let piece = &mut parts[part][at..at + n];
            r.read_exact(piece).map_err(|e| ctx.io(e, &format!("in the middle of a message, after {off} bytes")))?;
            if let Some(t) = tag.as_mut() {
                t.update(piece);
            }
            (off, at) = (off + n, at + n);
        }
        check_tag(r, mac.as_deref_mut(), tag, ctx, off)?;
        if h.is_final() {
            if off != total {
                return Err(TransportError::UnexpectedLength { peer: ctx.peer.into(), expected: total, got: off });
            }
            return Ok(());
        }
    }
}

/// Reads one message of any length up to `max_message`. Reads go straight into the
/// message, which grows with the bytes received, never by a declared length alone (see
/// [`Message::room`]); large messages land in a memory mapping, without copies on growth.
pub(crate) fn read_message<R: Read>(
    r: &mut R,
    limits: &FrameLimits,
    ctx: Ctx<'_>,
    mut mac: Option<&mut FrameMac>,
) -> Result<Message, TransportError> {
    let mut re = Reassembly::new(limits.max_message);
    let mut msg = Message::new();
    loop {
        let (h, mut tag) = read_header(r, limits, ctx, msg.len() as u64, mac.as_deref())?;
        if h.is_alert() {
            return Err(read_alert(r, &h, tag, mac, ctx));
        }
        let len = re.on_header(&h).map_err(|e| e.into_transport(ctx.peer))?;
        let end = msg.len() + len;
        while msg.len() < end {
            let filled = msg.len();
            let during = || format!("in the middle of a message, after {filled} bytes");
            let room = msg.room(end).map_err(|e| ctx.io(e, &during()))?;
            let k = room.len().min(MAC_PIECE);
            match r.read(&mut room[..k]) {
                Ok(0) => return Err(ctx.io(ErrorKind::UnexpectedEof.into(), &during())),
                Ok(n) => {
                    msg.advance(n);
                    // Each read's bytes while the kernel's copy has left them in cache.
                    if let Some(t) = tag.as_mut() {
                        t.update(&msg[filled..filled + n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ctx.io(e, &during())),
            }
        }
        check_tag(r, mac.as_deref_mut(), tag, ctx, end)?;
        if h.is_final() {
            msg.finish();
            return Ok(msg);
        }
    }
}
