//! TCP channel between two parties, and connection set-up (bind, connect, accept, mesh).
//!
//! Wire: after the [handshake](crate::handshake) each message is a sequence of frames
//! (see [`crate::frame`]). Sockets use TCP_NODELAY and an OS read/write timeout, so every
//! wait for the peer is bounded by the channel's timeout. With [`TcpConfig::tls`] the
//! frames (and the handshake) travel inside TLS 1.3 ([`crate::tls`]); the plaintext path
//! reads and writes the socket directly and never touches a lock.
//!
//! Failure mode: the first error (timeout, disconnect, malformed frame, size limit, ...)
//! shuts the socket down and poisons the channel; every later call returns
//! [`TransportError::Disconnected`] naming the peer and the first error. Nothing retries
//! on a channel; drop it and set up a new session.

use crate::frame::{
    decode_header, frame_sizes, FrameHeader, FrameLimits, Reassembly, DEFAULT_MAX_FRAME, DEFAULT_MAX_MESSAGE,
    HEADER_LEN,
};
use crate::handshake::{handshake, HANDSHAKE_MAX};
use crate::message::Message;
use crate::tls::{self, TlsConfig, TlsReader, TlsWriter};
use crate::{Channel, ChannelStats, TransportError, DEFAULT_TIMEOUT};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Writes up to this size are assembled in one buffer (one syscall); larger payloads are
/// written straight from the caller's slice.
const COALESCE: usize = 64 * 1024;
/// Exchanges sending at most this much write first, then read, on the calling thread: the
/// message fits in the kernel socket buffers, so this cannot deadlock, and it saves a
/// thread spawn per small round. Larger exchanges write on a scoped thread.
const SMALL_EXCHANGE: usize = 16 * 1024;
/// Read buffer: frame headers and small messages arrive in one syscall.
const READ_BUF: usize = 64 * 1024;

/// Settings of TCP channels and their set-up.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Bound on every wait for the peer (each blocking read or write), after set-up.
    pub timeout: Duration,
    /// Largest frame payload; larger messages span many frames (default 1 MiB).
    pub max_frame: usize,
    /// Largest message sent or accepted (default 1 GiB).
    pub max_message: u64,
    /// Bound on connecting (retrying "connection refused" while peers start) and on
    /// waiting in [`accept`] for an authenticated peer.
    pub connect_timeout: Duration,
    /// TLS for connections made ([`connect`], when `tls.client` is set) and accepted
    /// ([`accept`], when `tls.server` is set). Default: plaintext.
    pub tls: TlsConfig,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            timeout: DEFAULT_TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
            max_message: DEFAULT_MAX_MESSAGE,
            connect_timeout: DEFAULT_TIMEOUT,
            tls: TlsConfig::default(),
        }
    }
}

impl TcpConfig {
    fn limits(&self) -> FrameLimits {
        FrameLimits { max_frame: self.max_frame, max_message: self.max_message }
    }
}

/// The label used for a party in error messages: `"party 1 (alice)"`, or `"party 1"`
/// when the name is empty or just repeats the id.
pub fn party_label(id: u32, name: &str) -> String {
    let plain = format!("party {id}");
    if name.is_empty() || name == plain {
        plain
    } else {
        format!("{plain} ({name})")
    }
}

fn label_from(names: &[String], id: u32) -> String {
    party_label(id, names.get(id as usize).map(String::as_str).unwrap_or(""))
}

/// Context for turning I/O errors into transport errors that name the peer.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    peer: &'a str,
    timeout: Duration,
}

impl Ctx<'_> {
    fn io(&self, e: io::Error, during: &str) -> TransportError {
        let peer = self.peer.to_string();
        if let Some(t) = tls::tls_error(&e) {
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

/// Where the receiving half reads from: the socket through a buffer, or TLS.
enum ReadHalf {
    Plain(BufReader<SocketReader>),
    Tls(TlsReader),
}

impl ReadHalf {
    fn socket(&self) -> &TcpStream {
        match self {
            ReadHalf::Plain(r) => &r.get_ref().sock,
            ReadHalf::Tls(r) => r.socket(),
        }
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        match self {
            ReadHalf::Plain(r) => r.get_mut().deadline = deadline,
            ReadHalf::Tls(r) => r.sock.deadline = deadline,
        }
    }
}

impl Read for ReadHalf {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(r) => r.read(buf),
            ReadHalf::Tls(r) => r.read(buf),
        }
    }

    #[inline]
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            ReadHalf::Plain(r) => r.read_exact(buf),
            ReadHalf::Tls(r) => r.read_exact(buf),
        }
    }
}

/// Where the sending half writes to: the socket, or TLS.
enum WriteHalf {
    Plain(TcpStream),
    Tls(TlsWriter),
}

impl WriteHalf {
    fn socket(&self) -> &TcpStream {
        match self {
            WriteHalf::Plain(s) => s,
            WriteHalf::Tls(w) => w.socket(),
        }
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.write_all(data),
            WriteHalf::Tls(w) => w.write_all(data),
        }
    }
}

/// The sending half: owns a clone of the socket and a small coalescing buffer.
struct Writer {
    stream: WriteHalf,
    buf: Vec<u8>,
}

impl Writer {
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
    fn write_message(&mut self, parts: &[&[u8]], max_frame: usize) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut next = parts.iter().copied().filter(|p| !p.is_empty());
        let mut cur: &[u8] = &[];
        for (len, last) in frame_sizes(total, max_frame) {
            if self.buf.len() + HEADER_LEN > COALESCE {
                self.flush_buf()?;
            }
            self.buf.extend_from_slice(&FrameHeader::new(len as u32, last).encode());
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
                if head < chunk.len() {
                    self.flush_buf()?;
                    self.stream.write_all(&chunk[head..])?;
                }
            }
        }
        self.flush_buf()
    }
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

fn read_header(r: &mut ReadHalf, limits: &FrameLimits, ctx: Ctx<'_>, got: u64) -> Result<FrameHeader, TransportError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).map_err(|e| {
        let during = if got == 0 {
            "while waiting for a message".to_string()
        } else {
            format!("in the middle of a message, after {got} bytes")
        };
        ctx.io(e, &during)
    })?;
    decode_header(&h, limits.frame()).map_err(|e| e.into_transport(ctx.peer))
}

/// Reads one message of exactly the parts' total length straight into `parts`, in order.
fn read_message_into(
    r: &mut ReadHalf,
    parts: &mut [&mut [u8]],
    limits: &FrameLimits,
    ctx: Ctx<'_>,
) -> Result<(), TransportError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut re = Reassembly::new(limits.max_message);
    let (mut off, mut part, mut at) = (0usize, 0usize, 0usize);
    loop {
        let h = read_header(r, limits, ctx, off as u64)?;
        let len = re.on_header(&h).map_err(|e| e.into_transport(ctx.peer))?;
        let end = off.saturating_add(len);
        if end > total {
            return Err(TransportError::UnexpectedLength { peer: ctx.peer.into(), expected: total, got: end });
        }
        while off < end {
            while at == parts[part].len() {
                (part, at) = (part + 1, 0); // in range: the parts hold `end` bytes or more
            }
            let n = (end - off).min(parts[part].len() - at);
            r.read_exact(&mut parts[part][at..at + n])
                .map_err(|e| ctx.io(e, &format!("in the middle of a message, after {off} bytes")))?;
            (off, at) = (off + n, at + n);
        }
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
fn read_message(r: &mut ReadHalf, limits: &FrameLimits, ctx: Ctx<'_>) -> Result<Message, TransportError> {
    let mut re = Reassembly::new(limits.max_message);
    let mut msg = Message::new();
    loop {
        let h = read_header(r, limits, ctx, msg.len() as u64)?;
        let len = re.on_header(&h).map_err(|e| e.into_transport(ctx.peer))?;
        let end = msg.len() + len;
        while msg.len() < end {
            let filled = msg.len();
            let during = || format!("in the middle of a message, after {filled} bytes");
            let room = msg.room(end).map_err(|e| ctx.io(e, &during()))?;
            match r.read(room) {
                Ok(0) => return Err(ctx.io(ErrorKind::UnexpectedEof.into(), &during())),
                Ok(n) => msg.advance(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ctx.io(e, &during())),
            }
        }
        if h.is_final() {
            msg.finish();
            return Ok(msg);
        }
    }
}

/// A [`Channel`] over an authenticated TCP connection. Created by [`connect`], [`accept`]
/// or [`tcp_mesh`]. Stats count message payload bytes (not headers or the handshake).
pub struct TcpChannel {
    reader: ReadHalf,
    writer: Writer,
    /// The TLS connection's `tls-exporter` value, bound into the handshake proofs.
    tls_binding: Option<[u8; 32]>,
    peer: String,
    peer_id: u32,
    limits: FrameLimits,
    timeout: Duration,
    stats: ChannelStats,
    poisoned: Option<String>,
}

impl std::fmt::Debug for TcpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TcpChannel(to {}", self.peer)?;
        if let Ok(a) = self.reader.socket().peer_addr() {
            write!(f, " at {a}")?;
        }
        if self.tls_binding.is_some() {
            write!(f, ", TLS")?;
        }
        if self.poisoned.is_some() {
            write!(f, ", closed after an error")?;
        }
        write!(f, ")")
    }
}

impl TcpChannel {
    /// Wraps a connected socket (not yet authenticated): sets TCP_NODELAY and timeouts, and
    /// runs the TLS handshake to completion when `tls` is given (before the socket is
    /// split into reader and writer).
    fn new(
        stream: TcpStream,
        peer: String,
        peer_id: u32,
        limits: FrameLimits,
        timeout: Duration,
        tls: Option<rustls::Connection>,
    ) -> Result<Self, TransportError> {
        let setup = |e: io::Error| TransportError::Io { peer: peer.clone(), source: e };
        let t = timeout.max(Duration::from_millis(1));
        stream.set_nonblocking(false).map_err(setup)?;
        stream.set_nodelay(true).map_err(setup)?;
        stream.set_read_timeout(Some(t)).and_then(|()| stream.set_write_timeout(Some(t))).map_err(setup)?;
        let (reader, stream, tls_binding) = match tls {
            None => {
                let w = WriteHalf::Plain(stream.try_clone().map_err(setup)?);
                (
                    ReadHalf::Plain(BufReader::with_capacity(READ_BUF, SocketReader { sock: stream, deadline: None })),
                    w,
                    None,
                )
            }
            Some(conn) => {
                let (r, w, binding) = tls::establish(stream, conn, &peer, t)?;
                (ReadHalf::Tls(r), WriteHalf::Tls(w), Some(binding))
            }
        };
        let writer = Writer { stream, buf: Vec::with_capacity(COALESCE) };
        let mut chan = TcpChannel {
            reader,
            writer,
            tls_binding,
            peer,
            peer_id,
            limits,
            timeout,
            stats: ChannelStats::default(),
            poisoned: None,
        };
        chan.set_timeout(timeout);
        chan.check()?;
        Ok(chan)
    }

    /// The authenticated party id of the peer.
    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }

    /// The peer's socket address, if the socket is still open.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.reader.socket().peer_addr().ok()
    }

    /// A second handle on the socket, so another thread can shut the connection down
    /// (`shutdown(Shutdown::Both)`) while this channel is blocked in a read.
    pub fn try_clone_socket(&self) -> io::Result<TcpStream> {
        self.writer.stream.socket().try_clone()
    }

    /// True when the channel runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls_binding.is_some()
    }

    /// The TLS channel binding (`tls-exporter`, RFC 9266), for the handshake proofs.
    pub(crate) fn tls_binding(&self) -> Option<&[u8; 32]> {
        self.tls_binding.as_ref()
    }

    /// On a plaintext channel, fails with a clear error when the peer's first bytes are
    /// TLS (the peer was configured for TLS and this side was not). Waits for those bytes
    /// like a read does (bounded by the timeout) without consuming them.
    pub(crate) fn refuse_tls_peer(&mut self) -> Result<(), TransportError> {
        let ReadHalf::Plain(r) = &mut self.reader else { return Ok(()) };
        let e = loop {
            match r.fill_buf() {
                Ok(first) => match tls::looks_like_tls(first) {
                    None => return Ok(()),
                    Some(detail) => break TransportError::Tls { peer: self.peer.clone(), detail: detail.into() },
                },
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Reported now: the read that follows would wait a second timeout.
                Err(e) => break self.ctx().io(e, "while waiting for a message"),
            }
        };
        Err(self.fail(e))
    }

    /// True after an error: the channel is unusable and should be dropped.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Receives one message of any length up to the maximum. Large messages come back
    /// in a memory mapping (no copy on the way in); [`Channel::recv`] copies those into a `Vec`.
    pub fn recv_message(&mut self) -> Result<Message, TransportError> {
        self.check()?;
        let (limits, ctx) = (self.limits, Ctx { peer: &self.peer, timeout: self.timeout });
        match read_message(&mut self.reader, &limits, ctx) {
            Ok(msg) => {
                self.received(msg.len());
                Ok(msg)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(crate) fn set_peer_name(&mut self, name: String) {
        self.peer = name;
    }

    /// Bounds every later read by `deadline` as a whole (None: each read by the timeout).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.reader.set_deadline(deadline);
    }

    /// Records the first error, shuts the socket down (the peer sees the connection close
    /// at once) and returns the error.
    pub(crate) fn fail(&mut self, e: TransportError) -> TransportError {
        if self.poisoned.is_none() {
            self.poisoned = Some(e.to_string());
        }
        let _ = self.writer.stream.socket().shutdown(Shutdown::Both);
        e
    }

    fn check(&self) -> Result<(), TransportError> {
        match &self.poisoned {
            None => Ok(()),
            Some(first) => Err(TransportError::Disconnected {
                peer: self.peer.clone(),
                detail: format!(
                    "the channel was closed after an earlier error ({first}); drop it and start a new session"
                ),
            }),
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx { peer: &self.peer, timeout: self.timeout }
    }

    fn check_size(&self, len: usize) -> Result<(), TransportError> {
        if len as u64 > self.limits.max_message {
            return Err(TransportError::TooLarge {
                peer: self.peer.clone(),
                size: len as u64,
                limit: self.limits.max_message,
            });
        }
        Ok(())
    }

    fn sent(&mut self, n: usize) {
        self.stats.bytes_sent += n as u64;
        self.stats.messages_sent += 1;
    }

    fn received(&mut self, n: usize) {
        self.stats.bytes_received += n as u64;
        self.stats.messages_received += 1;
    }

    fn exchange_threaded(&mut self, out: &[u8], inp: &mut [u8]) -> Result<(), TransportError> {
        const WRITER: u8 = 1;
        const READER: u8 = 2;
        let first_failure = AtomicU8::new(0);
        let limits = self.limits;
        let ctx = Ctx { peer: &self.peer, timeout: self.timeout };
        let writer = &mut self.writer;
        let reader = &mut self.reader;
        let (wres, rres) = std::thread::scope(|s| {
            let first = &first_failure;
            let handle = s.spawn(move || {
                let r = writer.write_message(&[out], limits.frame());
                // Unblock the reader at once: the exchange has failed either way.
                if r.is_err() && first.compare_exchange(0, WRITER, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    let _ = writer.stream.socket().shutdown(Shutdown::Both);
                }
                r
            });
            let r = read_message_into(reader, &mut [inp], &limits, ctx);
            if r.is_err() && first.compare_exchange(0, READER, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                let _ = reader.socket().shutdown(Shutdown::Both);
            }
            (handle.join(), r)
        });
        let wres = match wres {
            Ok(r) => r.map_err(|e| ctx.io(e, "while sending")),
            Err(_) => {
                Err(TransportError::Io { peer: ctx.peer.into(), source: io::Error::other("writer thread panicked") })
            }
        };
        let res = match (wres, rres) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(w), Ok(())) => Err(w),
            (Ok(()), Err(r)) => Err(r),
            (Err(w), Err(r)) => Err(if first_failure.load(Ordering::SeqCst) == WRITER { w } else { r }),
        };
        res.map_err(|e| self.fail(e))
    }
}

impl Channel for TcpChannel {
    /// Sends one message as frames. Errors: `TooLarge` above `max_message`, `Timeout` if
    /// the peer does not drain its socket within the timeout, `Disconnected` if it is gone.
    fn send(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        self.send_parts(&[msg])
    }

    /// Receives a message of exactly `buf.len()` bytes, without an intermediate copy.
    /// Errors: `UnexpectedLength` if the peer's message has another length.
    fn recv_into(&mut self, buf: &mut [u8]) -> Result<(), TransportError> {
        self.recv_into_parts(&mut [buf])
    }

    /// [`Channel::recv_into`] split across `parts`, each filled in place.
    fn recv_into_parts(&mut self, parts: &mut [&mut [u8]]) -> Result<(), TransportError> {
        self.check()?;
        let (limits, ctx) = (self.limits, Ctx { peer: &self.peer, timeout: self.timeout });
        match read_message_into(&mut self.reader, parts, &limits, ctx) {
            Ok(()) => {
                self.received(parts.iter().map(|p| p.len()).sum());
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Frames the concatenation of `parts` without joining them first (e.g. a small header
    /// and a large tensor payload): the peer receives one message, exactly as if
    /// [`Channel::send`] had been called with the joined bytes.
    fn send_parts(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        self.check()?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if let Err(e) = self.check_size(total) {
            return Err(self.fail(e));
        }
        match self.writer.write_message(parts, self.limits.frame()) {
            Ok(()) => {
                self.sent(total);
                Ok(())
            }
            Err(e) => {
                let e = self.ctx().io(e, "while sending");
                Err(self.fail(e))
            }
        }
    }

    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        self.recv_message().map(Message::into_vec)
    }

    /// Full duplex: large messages are written on a scoped thread while this thread
    /// reads, so both peers may exchange gigabytes at once without deadlock.
    fn exchange(&mut self, out: &[u8], inp: &mut [u8]) -> Result<(), TransportError> {
        self.check()?;
        if out.len() <= SMALL_EXCHANGE {
            self.send(out)?;
            return self.recv_into(inp);
        }
        if let Err(e) = self.check_size(out.len()) {
            return Err(self.fail(e));
        }
        self.exchange_threaded(out, inp)?;
        self.sent(out.len());
        self.received(inp.len());
        Ok(())
    }

    fn peer(&self) -> &str {
        &self.peer
    }

    fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// Sets the OS read and write timeouts (values below 1 ms are raised to 1 ms).
    fn set_timeout(&mut self, timeout: Duration) {
        let timeout = timeout.max(Duration::from_millis(1));
        self.timeout = timeout;
        let s = self.reader.socket();
        if let Err(e) = s.set_read_timeout(Some(timeout)).and_then(|()| s.set_write_timeout(Some(timeout))) {
            let e = TransportError::Io { peer: self.peer.clone(), source: e };
            self.fail(e);
        }
    }
}

/// Listens on `addr` (port 0 picks a free port; see `local_addr`). Errors: `Setup` with
/// what to do, e.g. when the port is already in use.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr).map_err(|e| {
        TransportError::Setup(match e.kind() {
            ErrorKind::AddrInUse => format!(
                "port {} on {} is already in use; stop the other process or pick another port",
                addr.port(),
                addr.ip()
            ),
            ErrorKind::AddrNotAvailable => {
                format!("cannot listen on {addr}: {} is not an address of this machine", addr.ip())
            }
            ErrorKind::PermissionDenied => {
                format!("no permission to listen on {addr}; ports below 1024 need privileges, pick a higher port")
            }
            _ => format!("cannot listen on {addr}: {e}"),
        })
    })
}

/// `now + d`, saturating far in the future instead of panicking on overflow (a huge
/// timeout means "no bound").
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600))).unwrap_or(now)
}

fn handshake_limits() -> FrameLimits {
    FrameLimits { max_frame: HANDSHAKE_MAX, max_message: HANDSHAKE_MAX as u64 }
}

fn finish(mut chan: TcpChannel, cfg: &TcpConfig) -> TcpChannel {
    chan.limits = cfg.limits();
    chan.stats = ChannelStats::default();
    chan.set_deadline(None);
    chan.set_timeout(cfg.timeout);
    chan
}

/// Connects to party `peer_id` at `addr` and authenticates both sides (see
/// [`crate::handshake`]). "Connection refused" is retried until `cfg.connect_timeout`
/// (peers start at slightly different times); the handshake waits are bounded by the
/// larger of `cfg.timeout` and the rest of `connect_timeout`.
/// Errors: `Setup` if nobody listens in time, `Auth` for a wrong key, session or party,
/// `Timeout`/`Disconnected`/`Malformed` if the peer misbehaves. Never retried after
/// the TCP connection is up.
pub fn connect(
    addr: SocketAddr,
    my_id: u32,
    peer_id: u32,
    session: [u8; 16],
    key: &[u8; 32],
    peer_name: &str,
    cfg: &TcpConfig,
) -> Result<TcpChannel, TransportError> {
    let label = party_label(peer_id, peer_name);
    if peer_id == my_id {
        return Err(TransportError::Setup(format!("party {my_id} cannot connect to itself")));
    }
    let deadline = deadline_after(cfg.connect_timeout);
    let mut delay = Duration::from_millis(5);
    let stream = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1))) {
            Ok(s) => break s,
            Err(e) => e,
        };
        let retry = matches!(
            err.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::TimedOut
                | ErrorKind::WouldBlock
                | ErrorKind::Interrupted
        );
        let left = deadline.saturating_duration_since(Instant::now());
        if !retry || left.is_zero() {
            return Err(TransportError::Setup(format!(
                "could not connect to {label} at {addr} within {:?}: {err}; is its worker running and listening there?",
                cfg.connect_timeout
            )));
        }
        std::thread::sleep(delay.min(left));
        delay = (delay * 2).min(Duration::from_millis(100));
    };
    let timeout = cfg.timeout.max(deadline.saturating_duration_since(Instant::now()));
    let tls = cfg.tls.client_connection(addr)?;
    let mut chan = TcpChannel::new(stream, label.clone(), peer_id, handshake_limits(), timeout, tls)?;
    let identify = |id: u32| {
        if id == peer_id {
            Ok(label.clone())
        } else {
            Err(format!("expected {label} at {addr}, but party {id} answered"))
        }
    };
    let rename = |_: u32, _: Option<&str>| label.clone();
    handshake(&mut chan, my_id, &session, key, &identify, &rename, timeout)?;
    Ok(finish(chan, cfg))
}

/// Accepts one authenticated connection from one of the `expected` party ids (names for
/// messages come from `names[id]`). A connection that fails the handshake is closed and
/// the wait goes on; the whole wait is bounded by `cfg.connect_timeout`, each handshake
/// wait by `cfg.timeout`. The listener is polled in non-blocking mode and restored.
/// Errors: the last rejected attempt's error (e.g. `Auth` for a wrong key) if there was
/// one, else `Timeout` naming the parties waited for.
pub fn accept(
    listener: &TcpListener,
    my_id: u32,
    expected: &[u32],
    session: [u8; 16],
    key: &[u8; 32],
    names: &[String],
    cfg: &TcpConfig,
) -> Result<TcpChannel, TransportError> {
    let who = match expected {
        [one] => label_from(names, *one),
        many => format!("any of {}", many.iter().map(|&i| label_from(names, i)).collect::<Vec<_>>().join(", ")),
    };
    let io_setup = |e: io::Error| TransportError::Setup(format!("cannot accept connections: {e}"));
    listener.set_nonblocking(true).map_err(io_setup)?;
    let deadline = deadline_after(cfg.connect_timeout);
    let mut last_rejected: Option<TransportError> = None;
    let mut delay = Duration::from_millis(1);
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(last_rejected
                .take()
                .unwrap_or(TransportError::Timeout { peer: who, timeout: cfg.connect_timeout }));
        }
        let (stream, from) = match listener.accept() {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) =>
            {
                std::thread::sleep(delay.min(left));
                delay = (delay * 2).min(Duration::from_millis(20));
                continue;
            }
            Err(e) => break Err(io_setup(e)),
        };
        delay = Duration::from_millis(1);
        let timeout = cfg.timeout.min(left);
        match authenticate_accepted(stream, from, my_id, expected, session, key, names, cfg, timeout) {
            Ok(chan) => break Ok(chan),
            Err(e) => last_rejected = Some(e),
        }
    };
    let _ = listener.set_nonblocking(false);
    result
}

/// Authenticates one connection already accepted from `from` (by the caller's own accept
/// loop, e.g. a server that runs each handshake on its own thread so a slow or hostile
/// client never delays the others). Expects one of the `expected` party ids; the
/// handshake waits are bounded by `cfg.timeout`. Errors: as in [`accept`]; the socket
/// is closed on failure.
#[allow(clippy::too_many_arguments)]
pub fn accept_stream(
    stream: TcpStream,
    from: SocketAddr,
    my_id: u32,
    expected: &[u32],
    session: [u8; 16],
    key: &[u8; 32],
    names: &[String],
    cfg: &TcpConfig,
) -> Result<TcpChannel, TransportError> {
    authenticate_accepted(stream, from, my_id, expected, session, key, names, cfg, cfg.timeout)
}

/// [`accept_stream`] with a separate bound on the handshake waits.
#[allow(clippy::too_many_arguments)]
fn authenticate_accepted(
    stream: TcpStream,
    from: SocketAddr,
    my_id: u32,
    expected: &[u32],
    session: [u8; 16],
    key: &[u8; 32],
    names: &[String],
    cfg: &TcpConfig,
    timeout: Duration,
) -> Result<TcpChannel, TransportError> {
    let who = match expected {
        [one] => label_from(names, *one),
        many => format!("any of {}", many.iter().map(|&i| label_from(names, i)).collect::<Vec<_>>().join(", ")),
    };
    let provisional = format!("connection from {from}");
    let identify = |id: u32| {
        if expected.contains(&id) && id != my_id {
            Ok(label_from(names, id))
        } else {
            Err(format!("party {id} is not expected here (party {my_id} waits for {who}); check the party ids"))
        }
    };
    let rename = |id: u32, label: Option<&str>| match label {
        Some(l) => l.to_string(),
        None => format!("connection from {from} claiming to be party {id}"),
    };
    let tls = cfg.tls.server_connection()?;
    let mut chan = TcpChannel::new(stream, provisional, u32::MAX, handshake_limits(), timeout, tls)?;
    let (id, _) = handshake(&mut chan, my_id, &session, key, &identify, &rename, timeout)?;
    chan.peer_id = id;
    Ok(finish(chan, cfg))
}

/// Full mesh among `addrs.len()` parties: this party (`my_id`, listening on `listener`,
/// normally bound to `addrs[my_id]`) connects to every lower id and accepts every higher
/// id, which cannot deadlock (lower ids reach their accept phase first). Entry `i` of the
/// result is the channel to party `i`; entry `my_id` is `None`. Names come from
/// `names[i]`. Errors: the first failing connection's error; nothing is retried.
pub fn tcp_mesh(
    my_id: u32,
    addrs: &[SocketAddr],
    listener: TcpListener,
    names: &[String],
    session: [u8; 16],
    key: &[u8; 32],
    cfg: &TcpConfig,
) -> Result<Vec<Option<TcpChannel>>, TransportError> {
    let n = addrs.len();
    if my_id as usize >= n {
        return Err(TransportError::Setup(format!("party id {my_id} is out of range for a mesh of {n} parties")));
    }
    if cfg.tls.server.is_some() != cfg.tls.client.is_some() {
        return Err(TransportError::Setup(
            "TLS in a mesh needs both this party's certificate and key (it accepts) and the CA (it connects)".into(),
        ));
    }
    let mut chans: Vec<Option<TcpChannel>> = (0..n).map(|_| None).collect();
    for j in 0..my_id {
        let name = names.get(j as usize).map(String::as_str).unwrap_or("");
        chans[j as usize] = Some(connect(addrs[j as usize], my_id, j, session, key, name, cfg)?);
    }
    let mut waiting: Vec<u32> = (my_id + 1..n as u32).collect();
    while !waiting.is_empty() {
        let chan = accept(&listener, my_id, &waiting, session, key, names, cfg)?;
        let id = chan.peer_id();
        waiting.retain(|&w| w != id);
        chans[id as usize] = Some(chan);
    }
    Ok(chans)
}
