//! Connection set-up: [`bind`], [`connect`], [`accept`], [`accept_stream`] and
//! [`tcp_mesh`], each ending in an authenticated [`TcpChannel`] ([TLS](crate::tls) first
//! when configured, then the [handshake](crate::handshake)).

use super::channel::TcpChannel;
use super::socket::deadline_after;
use crate::frame::{FrameLimits, DEFAULT_MAX_FRAME, DEFAULT_MAX_MESSAGE};
use crate::handshake::{handshake, SessionKeys, HANDSHAKE_MAX};
use crate::tls::TlsConfig;
use crate::{TransportError, DEFAULT_TIMEOUT};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

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

fn handshake_limits() -> FrameLimits {
    FrameLimits { max_frame: HANDSHAKE_MAX, max_message: HANDSHAKE_MAX as u64 }
}

fn finish(mut chan: TcpChannel, keys: SessionKeys, cfg: &TcpConfig) -> TcpChannel {
    chan.start_session(keys, cfg.limits(), cfg.timeout);
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
    let (_, _, keys) = handshake(&mut chan, my_id, &session, key, &identify, &rename, timeout)?;
    Ok(finish(chan, keys, cfg))
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
    let (id, _, keys) = handshake(&mut chan, my_id, &session, key, &identify, &rename, timeout)?;
    chan.set_peer_id(id);
    Ok(finish(chan, keys, cfg))
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
