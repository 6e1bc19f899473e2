//! `Listener`: accepts the control plane's authenticated TCP connections for one worker.
//!
//! The listener runs its own accept thread; each accepted socket is authenticated on a
//! thread of its own (a slow or hostile client never delays the others) and queued for
//! `accept()`. Every blocking call releases the GIL.
//!
//! Strangers who open connections and never finish a handshake cannot lock honest clients
//! out: a handshake has a deadline (`handshake_deadline_s`, 5 s by default, or the timeout, if
//! shorter) as a whole, whatever the peer trickles; at most `max_handshakes_per_address` (64)
//! handshakes of one address (an IPv4 address, or an IPv6 /64) are in progress, and at most
//! `max_handshakes` (512) in all (the defaults are `net/admission.py`'s, which a test checks). A
//! new connection over either limit does not get refused: it evicts the unfinished
//! handshake (of its own address first) whose peer has been silent longest (the kernel's
//! `TCP_INFO`), the oldest among equals. An honest client sends each handshake message at
//! once, so it is evicted only if every other handshake of its address (or of all, past
//! `max_handshakes`) has sent data more recently. Evicted and expired handshakes are
//! counted (`dropped`), not reported one by one. Given `tls_cert`/`tls_key` (PEM files) it accepts
//! only TLS 1.3. The worker's handshake party id is
//! [`worker_party_id`](crate::config::worker_party_id)`(name)`; clients are party 0.

use crate::config::{control_config, resolve, seconds, session_secrets, setup, tls_config, worker_party_id, CLIENT_ID};
use crate::connection::Connection;
use crate::errors::{Error, Result};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use syft_mpc_transport::{accept_stream, bind, TcpChannel, TcpConfig, TransportError};

/// Handshakes waiting for `accept()`; further connections wait in the kernel backlog.
const QUEUE: usize = 64;
/// The kernel's queue of connections not yet accepted (capped by `net.core.somaxconn`).
/// std binds with 128, which a burst of strangers' connections fills: an honest client's
/// SYN is then dropped and retried only after 1, 3, 7 s.
const BACKLOG: i32 = 4096;
/// Largest handshake deadline and handshake limit accepted (`net/admission.py` checks the same).
const MAX_HANDSHAKE_DEADLINE_S: f64 = 60.0;
const MAX_LIMIT: usize = 65_536;

/// Listens for authenticated control connections to the worker `name`.
///
/// `Listener(addr, token, name, session="syft-mpc-control", timeout_s=30.0,
/// max_message=1 << 30, tls_cert=None, tls_key=None, max_handshakes=512,
/// max_handshakes_per_address=64, handshake_deadline_s=5.0)` binds `addr` (`"host:port"`; port 0
/// picks a free one, see `local_addr`) at once: a port in use raises `TransportError` saying
/// so. Connections are accepted and authenticated in the background; `accept(timeout_s)`
/// hands them out. With `tls_cert` (PEM certificate chain) and `tls_key` (its PEM private
/// key) every connection must use TLS 1.3. The last three are the admission limits of the
/// module doc (a handshake's deadline is also at most `timeout_s`); a limit outside
/// 1..=65,536 or a deadline outside (0, 60] s raises `ValueError`.
#[pyclass(frozen, module = "syft_mpc._native")]
pub struct Listener {
    local_addr: SocketAddr,
    tls: bool,
    queue: Mutex<Receiver<std::result::Result<TcpChannel, TransportError>>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counts: Arc<Counts>,
    deadline: Duration,
}

/// Connections dropped without being reported through `accept()`.
#[derive(Default)]
struct Counts {
    /// Unfinished handshakes closed to make room for a newer connection.
    evicted: AtomicU64,
    /// Handshakes closed at the deadline.
    expired: AtomicU64,
    /// Connections closed at once (no thread or file descriptor to spare).
    refused: AtomicU64,
}

/// A handshake in progress: the accept loop can close its socket (evicted, or past its deadline).
struct Pending {
    id: u64,
    key: IpAddr,
    started: Instant,
    stream: TcpStream,
}

/// The handshakes in progress, oldest first.
#[derive(Default)]
struct Pendings {
    queue: VecDeque<Pending>,
    per_key: HashMap<IpAddr, usize>,
}

impl Pendings {
    fn push(&mut self, p: Pending) {
        *self.per_key.entry(p.key).or_insert(0) += 1;
        self.queue.push_back(p);
    }

    /// Removes the entry at `i`; false when there is none.
    fn remove_at(&mut self, i: usize) -> Option<Pending> {
        let p = self.queue.remove(i)?;
        if let Some(n) = self.per_key.get_mut(&p.key) {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&p.key);
            }
        }
        Some(p)
    }

    /// Removes handshake `id` when it ends; false when it was evicted or expired first.
    fn finish(&mut self, id: u64) -> bool {
        match self.queue.iter().position(|p| p.id == id) {
            Some(i) => self.remove_at(i).is_some(),
            None => false,
        }
    }

    /// Closes the handshake of `key` (or, with None, of all) whose peer has been silent
    /// longest, the oldest among equals: a stalled or trickling stranger goes before an
    /// honest client, which sends each handshake message at once.
    fn evict_most_silent(&mut self, key: Option<IpAddr>) -> bool {
        let i = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, p)| key.is_none_or(|k| p.key == k))
            .max_by_key(|(i, p)| (silent_ms(&p.stream), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        match i.and_then(|i| self.remove_at(i)) {
            Some(p) => {
                let _ = p.stream.shutdown(Shutdown::Both); // its thread's next read fails at once
                true
            }
            None => false,
        }
    }

    /// Closes the handshakes older than `deadline`; returns how many.
    fn expire(&mut self, deadline: Duration) -> u64 {
        let mut n = 0;
        while self.queue.front().is_some_and(|p| p.started.elapsed() >= deadline) {
            if let Some(p) = self.remove_at(0) {
                let _ = p.stream.shutdown(Shutdown::Both);
                n += 1;
            }
        }
        n
    }
}

/// Milliseconds since the peer last sent data (or since the connection was set up), from
/// the kernel's `TCP_INFO`; 0 where unknown (then the oldest handshake is evicted).
#[cfg(target_os = "linux")]
fn silent_ms(s: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is a plain C struct (all zeros is valid) and getsockopt writes at
    // most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let out = (&mut info as *mut libc::tcp_info).cast::<libc::c_void>();
    let rc = unsafe { libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, out, &mut len) };
    if rc == 0 {
        info.tcpi_last_data_recv
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn silent_ms(_: &TcpStream) -> u32 {
    0
}

/// Handshakes are limited per address: an IPv4 address, or the /64 of an IPv6 one (one host's usual allocation).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

fn lock(p: &Mutex<Pendings>) -> MutexGuard<'_, Pendings> {
    p.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct AcceptCtx {
    my_id: u32,
    session: [u8; 16],
    key: [u8; 32],
    names: Vec<String>,
    cfg: TcpConfig,
    deadline: Duration,
    max_handshakes: usize,
    max_per_address: usize,
    counts: Arc<Counts>,
}

/// Counts a handshake in progress; released when its thread ends (also by a panic).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    ctx: Arc<AcceptCtx>,
    tx: SyncSender<std::result::Result<TcpChannel, TransportError>>,
    stop: Arc<AtomicBool>,
) {
    let mut delay = Duration::from_millis(1);
    let threads = Arc::new(AtomicUsize::new(0));
    let pending = Arc::new(Mutex::new(Pendings::default()));
    let mut next_id = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let expired = lock(&pending).expire(ctx.deadline);
        ctx.counts.expired.fetch_add(expired, Ordering::Relaxed);
        match listener.accept() {
            Ok((stream, from)) => {
                delay = Duration::from_millis(1);
                let clone = match stream.try_clone() {
                    Ok(c) => c,
                    Err(_) => {
                        ctx.counts.refused.fetch_add(1, Ordering::Relaxed);
                        continue; // out of file descriptors: closed at once
                    }
                };
                // Handshake threads alive at once, evicted ones still winding down included.
                if threads.fetch_add(1, Ordering::SeqCst) >= 2 * ctx.max_handshakes {
                    threads.fetch_sub(1, Ordering::SeqCst);
                    ctx.counts.refused.fetch_add(1, Ordering::Relaxed);
                    continue; // evicted handshakes still winding down: closed at once
                }
                let slot = Slot(threads.clone());
                let key = address_key(from.ip());
                next_id += 1;
                let id = next_id;
                {
                    let mut p = lock(&pending);
                    let evicted = if p.per_key.get(&key).copied().unwrap_or(0) >= ctx.max_per_address {
                        p.evict_most_silent(Some(key))
                    } else if p.queue.len() >= ctx.max_handshakes {
                        p.evict_most_silent(None)
                    } else {
                        false
                    };
                    if evicted {
                        ctx.counts.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    p.push(Pending { id, key, started: Instant::now(), stream: clone });
                }
                let (ctx2, tx2, stop2, pending2) = (ctx.clone(), tx.clone(), stop.clone(), pending.clone());
                let spawned = std::thread::Builder::new().name("syft-mpc-handshake".into()).spawn(move || {
                    let _slot = slot;
                    let c = &ctx2;
                    let r = accept_stream(stream, from, c.my_id, &[CLIENT_ID], c.session, &c.key, &c.names, &c.cfg);
                    // Evicted or expired (counted, its socket closed): nothing to report.
                    let current = lock(&pending2).finish(id);
                    if current && !stop2.load(Ordering::SeqCst) {
                        let _ = tx2.send(r);
                    }
                });
                if let Err(e) = spawned {
                    lock(&pending).finish(id);
                    let detail = format!("cannot start a thread for a connection from {from}: {e}");
                    let _ = tx.try_send(Err(TransportError::Setup(detail)));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(20));
            }
            Err(e) => {
                // E.g. too many open files: report it and keep going after a pause.
                let _ = tx.try_send(Err(TransportError::Setup(format!("accepting a connection failed: {e}"))));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // Stopped: end the handshakes in progress now.
    let mut p = lock(&pending);
    while p.evict_most_silent(None) {}
}

#[pymethods]
impl Listener {
    #[new]
    #[pyo3(signature = (addr, token, name, session="syft-mpc-control", timeout_s=30.0, max_message=1_073_741_824,
                        tls_cert=None, tls_key=None, max_handshakes=512,
                        max_handshakes_per_address=64, handshake_deadline_s=5.0))]
    fn new(
        py: Python<'_>,
        addr: &str,
        token: &str,
        name: &str,
        session: &str,
        timeout_s: f64,
        max_message: u64,
        tls_cert: Option<&str>,
        tls_key: Option<&str>,
        max_handshakes: usize,
        max_handshakes_per_address: usize,
        handshake_deadline_s: f64,
    ) -> PyResult<Listener> {
        for (what, n) in
            [("max_handshakes", max_handshakes), ("max_handshakes_per_address", max_handshakes_per_address)]
        {
            if !(1..=MAX_LIMIT).contains(&n) {
                return Err(PyValueError::new_err(format!("{what} must be from 1 to {MAX_LIMIT}, got {n}")));
            }
        }
        if max_handshakes_per_address > max_handshakes {
            return Err(PyValueError::new_err(format!(
                "max_handshakes_per_address ({max_handshakes_per_address}) cannot exceed max_handshakes ({max_handshakes})"
            )));
        }
        if !(handshake_deadline_s > 0.0 && handshake_deadline_s <= MAX_HANDSHAKE_DEADLINE_S) {
            return Err(PyValueError::new_err(format!(
                "handshake_deadline_s must be more than 0 and at most {MAX_HANDSHAKE_DEADLINE_S} s, got {handshake_deadline_s}"
            )));
        }
        let (key, session) = session_secrets(token, session)?;
        let cfg =
            TcpConfig { tls: tls_config(tls_cert, tls_key, None, None)?, ..control_config(timeout_s, max_message)? };
        let tls = cfg.tls.is_enabled();
        let my_id = worker_party_id(name);
        // Error labels by party id: clients (id 0) show up as "party 0 (client)".
        let names = vec!["client".to_string()];
        let addr = resolve(addr)?;
        let listener = py.detach(|| -> Result<Listener> {
            let listener = bind(addr)?;
            // SAFETY: listen(2) on a socket this function owns; a failure only leaves the old backlog.
            unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), BACKLOG) };
            let local_addr = listener.local_addr().map_err(|e| setup(format!("cannot read the bound address: {e}")))?;
            listener.set_nonblocking(true).map_err(|e| setup(format!("cannot poll the listener: {e}")))?;
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let stop = Arc::new(AtomicBool::new(false));
            let counts = Arc::new(Counts::default());
            let deadline = cfg.timeout.min(Duration::from_secs_f64(handshake_deadline_s));
            let ctx = Arc::new(AcceptCtx {
                my_id,
                session,
                key,
                names,
                cfg,
                deadline,
                max_handshakes,
                max_per_address: max_handshakes_per_address,
                counts: counts.clone(),
            });
            let stop2 = stop.clone();
            let thread = std::thread::Builder::new()
                .name("syft-mpc-accept".into())
                .spawn(move || accept_loop(listener, ctx, tx, stop2))
                .map_err(|e| setup(format!("cannot start the accept thread: {e}")))?;
            Ok(Listener {
                local_addr,
                tls,
                queue: Mutex::new(rx),
                stop,
                thread: Mutex::new(Some(thread)),
                counts,
                deadline,
            })
        })?;
        Ok(listener)
    }

    /// The bound address as `"host:port"` (the real port when 0 was asked for).
    #[getter]
    fn local_addr(&self) -> String {
        self.local_addr.to_string()
    }

    /// The bound on a whole handshake, in seconds: `handshake_deadline_s`, or the timeout if shorter.
    #[getter]
    fn handshake_deadline_s(&self) -> f64 {
        self.deadline.as_secs_f64()
    }

    /// Connections dropped without a report through `accept()`, counted since the start:
    /// `{"evicted": ..., "expired": ..., "refused": ...}` (unfinished handshakes closed for a
    /// newer connection over the limits / at the deadline; connections closed at once).
    #[getter]
    fn dropped<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("evicted", self.counts.evicted.load(Ordering::Relaxed))?;
        d.set_item("expired", self.counts.expired.load(Ordering::Relaxed))?;
        d.set_item("refused", self.counts.refused.load(Ordering::Relaxed))?;
        Ok(d)
    }

    /// True when connections must use TLS (the listener has a certificate and key).
    #[getter]
    fn tls(&self) -> bool {
        self.tls
    }

    /// The next authenticated connection, or None after `timeout_s` without one.
    ///
    /// A connection that failed authentication (wrong token, not a syft_mpc peer, ...)
    /// raises its error (`AuthenticationError`, `TransportError`) once, so the caller can
    /// log it; the listener keeps serving.
    #[pyo3(signature = (timeout_s=1.0))]
    fn accept(&self, py: Python<'_>, timeout_s: f64) -> Result<Option<Connection>> {
        let t = seconds(timeout_s, "timeout_s")?;
        py.detach(|| {
            let rx = self.queue.lock().map_err(|_| Error::Session("the listener's queue is poisoned".into()))?;
            match rx.recv_timeout(t) {
                Ok(Ok(chan)) => Ok(Some(Connection::wrap(chan)?)),
                Ok(Err(e)) => Err(Error::Transport(e)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(Error::Session("the listener is closed".into())),
            }
        })
    }

    /// Stops accepting (the port is released); connections already handed out stay open.
    fn close(&self, py: Python<'_>) {
        self.stop.store(true, Ordering::SeqCst);
        py.detach(|| {
            if let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take()) {
                let _ = t.join();
            }
        });
    }

    fn __repr__(&self) -> String {
        format!("Listener({}{})", self.local_addr, if self.tls { ", TLS" } else { "" })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst); // the accept thread exits and releases the port
    }
}
