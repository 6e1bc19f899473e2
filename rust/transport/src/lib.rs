//! Moving messages between parties. This crate knows nothing about shares.
//!
//! A [`Channel`] carries whole messages between two parties. Failure mode: after
//! any error the channel is dropped; callers never retry on it.
//!
//! * [`MemoryChannel`] — in-process twin for tests and `VirtualWorker`s.
//! * [`TcpChannel`] — TCP with length-prefixed, versioned frames ([`frame`]), a mutual
//!   HMAC handshake binding session id, party ids and fresh nonces ([`handshake`]), then
//!   a MAC on every frame under per-direction keys with implicit sequence numbers
//!   (alteration, replay, reordering and injection close the connection),
//!   TCP_NODELAY, a timeout on every wait and size limits. Set up with [`bind`],
//!   [`connect`], [`accept`] or [`tcp_mesh`]. Optionally over TLS 1.3 ([`TlsConfig`] in
//!   [`TcpConfig::tls`]; see [`tls`]), with the HMAC handshake inside the tunnel.

mod error;
pub mod frame;
pub mod handshake;
mod memory;
pub mod message;
pub mod polyval_hash;
mod tcp;
pub mod tls;

pub use error::TransportError;
pub use handshake::{key_from_token, random_session_id};
pub use memory::{memory_mesh, memory_pair, MemoryChannel};
pub use message::Message;
pub use tcp::{accept, accept_stream, bind, connect, party_label, tcp_mesh, Exporter, TcpChannel, TcpConfig};
pub use tls::TlsConfig;

use std::time::Duration;

/// Default bound on every wait for a peer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Traffic counters of one channel (this side's view).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
}

/// A reliable, ordered, authenticated message pipe to one peer.
pub trait Channel: Send {
    /// Sends one message (a message may span many frames on the wire).
    fn send(&mut self, msg: &[u8]) -> Result<(), TransportError>;
    /// Receives one message of exactly `buf.len()` bytes into `buf`.
    fn recv_into(&mut self, buf: &mut [u8]) -> Result<(), TransportError>;
    /// Receives one message of any length (bounded by the channel's maximum).
    fn recv(&mut self) -> Result<Vec<u8>, TransportError>;
    /// Sends the concatenation of `parts` as one message, without joining them where the
    /// channel can (the peer sees one message, as if `send` had the joined bytes).
    fn send_parts(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        self.send(&parts.concat())
    }
    /// Receives one message of exactly the parts' total length, split across `parts` in
    /// order: straight into place where the channel can.
    fn recv_into_parts(&mut self, parts: &mut [&mut [u8]]) -> Result<(), TransportError> {
        let mut buf = vec![0u8; parts.iter().map(|p| p.len()).sum()];
        self.recv_into(&mut buf)?;
        let mut rest = buf.as_slice();
        for p in parts.iter_mut() {
            let (head, tail) = rest.split_at(p.len());
            p.copy_from_slice(head);
            rest = tail;
        }
        Ok(())
    }
    /// Sends `out` while receiving a message of `inp.len()` bytes: full duplex, so two
    /// peers exchanging large messages at once never deadlock on full socket buffers.
    fn exchange(&mut self, out: &[u8], inp: &mut [u8]) -> Result<(), TransportError>;
    /// Name of the peer, for error messages (e.g. `"party 1 (alice)"`).
    fn peer(&self) -> &str;
    fn stats(&self) -> ChannelStats;
    /// Bound on every wait from now on.
    fn set_timeout(&mut self, timeout: Duration);
}

impl<C: Channel + ?Sized> Channel for Box<C> {
    fn send(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        (**self).send(msg)
    }
    fn recv_into(&mut self, buf: &mut [u8]) -> Result<(), TransportError> {
        (**self).recv_into(buf)
    }
    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        (**self).recv()
    }
    fn send_parts(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        (**self).send_parts(parts)
    }
    fn recv_into_parts(&mut self, parts: &mut [&mut [u8]]) -> Result<(), TransportError> {
        (**self).recv_into_parts(parts)
    }
    fn exchange(&mut self, out: &[u8], inp: &mut [u8]) -> Result<(), TransportError> {
        (**self).exchange(out, inp)
    }
    fn peer(&self) -> &str {
        (**self).peer()
    }
    fn stats(&self) -> ChannelStats {
        (**self).stats()
    }
    fn set_timeout(&mut self, timeout: Duration) {
        (**self).set_timeout(timeout)
    }
}
