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
//! [`TransportError::Disconnected`](crate::TransportError::Disconnected) naming the peer
//! and the first error. Nothing retries on a channel; drop it and set up a new session.
//!
//! Layers, each using only those above it:
//!
//! * [`socket`] — framed reads and writes on a byte stream, reads bounded by a deadline,
//!   I/O errors mapped to transport errors that name the peer ([`crate::tls`] builds on it).
//! * [`channel`] — [`TcpChannel`] over a socket, in plaintext or inside TLS (the
//!   [handshake](crate::handshake) runs on it).
//! * [`connect`](mod@connect) — set-up: [`bind`], [`connect()`], [`accept`], [`accept_stream`],
//!   [`tcp_mesh`], and their [`TcpConfig`].

mod channel;
mod connect;
pub(crate) mod socket;

pub use channel::{Exporter, TcpChannel};
pub use connect::{accept, accept_stream, bind, connect, party_label, tcp_mesh, TcpConfig};
