//! [`TcpChannel`]: a [`Channel`] over one connected socket, in plaintext or inside TLS.
//!
//! The plaintext path reads the socket through a buffer and writes it directly, and never
//! touches a lock; with TLS both halves go through [`crate::tls`]. Framing, deadlines and
//! error mapping are the socket layer's ([`super::socket`]).
//!
//! The first error poisons the channel (see [the failure mode](super)).

use super::socket::{read_message, read_message_into, Ctx, SocketReader, Writer};
use crate::frame::{FrameLimits, FrameMac};
use crate::handshake::SessionKeys;
use crate::message::Message;
use crate::tls::{self, TlsReader, TlsWriter};
use crate::{Channel, ChannelStats, TransportError};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Exchanges sending at most this much write first, then read, on the calling thread: the
/// message fits in the kernel socket buffers, so this cannot deadlock, and it saves a
/// thread spawn per small round. Larger exchanges write on a scoped thread.
const SMALL_EXCHANGE: usize = 16 * 1024;
/// Read buffer: frame headers and small messages arrive in one syscall.
const READ_BUF: usize = 64 * 1024;

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
}

impl Write for WriteHalf {
    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(s) => s.write(data),
            WriteHalf::Tls(w) => w.write(data),
        }
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.write_all(data),
            WriteHalf::Tls(w) => w.write_all(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The exporter key of one connection (see [`TcpChannel::export_secret`]).
#[derive(Clone)]
pub struct Exporter([u8; 32]);

impl Exporter {
    /// The 32-byte secret of this connection for `context`.
    pub fn secret(&self, context: &[u8]) -> [u8; 32] {
        crate::handshake::expand_exporter(&self.0, context)
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter(..)")
    }
}

/// A [`Channel`] over an authenticated TCP connection. Created by [`connect`](fn@crate::connect),
/// [`accept`](crate::accept) or [`tcp_mesh`](crate::tcp_mesh). Stats count message payload bytes (not headers or the handshake).
pub struct TcpChannel {
    reader: ReadHalf,
    writer: Writer<WriteHalf>,
    /// The TLS connection's `tls-exporter` value, bound into the handshake proofs.
    tls_binding: Option<[u8; 32]>,
    /// Integrity of the receiving direction (the sending one is the writer's), and the
    /// secret behind [`TcpChannel::export_secret`]; None until the handshake is done.
    recv_mac: Option<FrameMac>,
    exporter: Option<[u8; 32]>,
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
    pub(super) fn new(
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
        let writer = Writer::new(stream);
        let mut chan = TcpChannel {
            reader,
            writer,
            tls_binding,
            recv_mac: None,
            exporter: None,
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

    /// A 32-byte secret that only the two ends of this connection know, for `context`
    /// (any bytes; different contexts give independent secrets): HKDF-Expand (RFC 5869)
    /// of the connection's exporter key, itself derived in the handshake from the token
    /// and both sides' fresh nonces. For sealing a secret meant for this peer alone (e.g.
    /// an MPC session token handed to a worker). None before the handshake is done.
    pub fn export_secret(&self, context: &[u8]) -> Option<[u8; 32]> {
        self.exporter().map(|e| e.secret(context))
    }

    /// The exporter of [`export_secret`](Self::export_secret) on its own, to keep next to
    /// the channel (e.g. while another thread holds it in a blocking read).
    pub fn exporter(&self) -> Option<Exporter> {
        self.exporter.map(Exporter)
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
        match read_message(&mut self.reader, &limits, ctx, self.recv_mac.as_mut()) {
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

    /// The authenticated party id, once the handshake has named the peer.
    pub(super) fn set_peer_id(&mut self, id: u32) {
        self.peer_id = id;
    }

    /// After the handshake: every frame from now on carries a tag under the session's
    /// direction keys; the session's frame limits and timeout, counters from zero, and no
    /// deadline on reads.
    pub(super) fn start_session(&mut self, keys: SessionKeys, limits: FrameLimits, timeout: Duration) {
        self.writer.mac = Some(FrameMac::new(keys.send));
        self.recv_mac = Some(FrameMac::new(keys.recv));
        self.exporter = Some(keys.exporter);
        self.limits = limits;
        self.stats = ChannelStats::default();
        self.set_deadline(None);
        self.set_timeout(timeout);
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
            // A frame from the peer failed its tag: say so in a last, tagged frame, so the
            // peer gets an integrity error too instead of a bare disconnect (best effort,
            // bounded wait; never in answer to the peer's own alert).
            if let TransportError::Integrity { detail, .. } = &e {
                if !detail.starts_with(crate::frame::PEER_REJECTED) {
                    let _ = self.writer.stream.socket().set_write_timeout(Some(Duration::from_millis(200)));
                    let _ = self.writer.write_alert(detail);
                }
            }
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
        let recv_mac = self.recv_mac.as_mut();
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
            let r = read_message_into(reader, &mut [inp], &limits, ctx, recv_mac);
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
        match read_message_into(&mut self.reader, parts, &limits, ctx, self.recv_mac.as_mut()) {
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
