//! `Listener`: accepts the control plane's authenticated TCP connections for one worker.
//!
//! The listener runs its own accept thread; each accepted socket is authenticated on a
//! thread of its own (a slow or hostile client never delays the others), bounded by the
//! timeout as a whole, at most [`MAX_HANDSHAKES`] at once, and queued for `accept()`.
//! Every blocking call releases the GIL. Given `tls_cert`/`tls_key` (PEM files) it accepts
//! only TLS 1.3. The worker's handshake party id is
//! [`worker_party_id`](crate::config::worker_party_id)`(name)`; clients are party 0.

use crate::config::{control_config, resolve, seconds, session_secrets, setup, tls_config, worker_party_id, CLIENT_ID};
use crate::connection::Connection;
use crate::errors::{Error, Result};
use pyo3::prelude::*;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use syft_mpc_transport::{accept_stream, bind, TcpChannel, TcpConfig, TransportError};

/// Handshakes waiting for `accept()`; further connections wait in the kernel backlog.
const QUEUE: usize = 64;
/// Handshakes in progress at once (one thread each). Each lasts at most the timeout; past
/// this many, new connections are closed at once, so strangers opening connections
/// without finishing a handshake cannot exhaust the worker's threads or memory.
const MAX_HANDSHAKES: usize = 512;

/// Listens for authenticated control connections to the worker `name`.
///
/// `Listener(addr, token, name, session="syft-mpc-control", timeout_s=30.0,
/// max_message=1 << 30, tls_cert=None, tls_key=None)` binds `addr` (`"host:port"`; port 0
/// picks a free one, see `local_addr`) at once: a port in use raises `TransportError` saying
/// so. Connections are accepted and authenticated in the background; `accept(timeout_s)`
/// hands them out. With `tls_cert` (PEM certificate chain) and `tls_key` (its PEM private
/// key) every connection must use TLS 1.3.
#[pyclass(frozen, module = "syft_mpc._native")]
pub struct Listener {
    local_addr: SocketAddr,
    tls: bool,
    queue: Mutex<Receiver<std::result::Result<TcpChannel, TransportError>>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct AcceptCtx {
    my_id: u32,
    session: [u8; 16],
    key: [u8; 32],
    names: Vec<String>,
    cfg: TcpConfig,
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
    let in_progress = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, from)) => {
                delay = Duration::from_millis(1);
                if in_progress.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES {
                    in_progress.fetch_sub(1, Ordering::SeqCst);
                    drop(stream); // closed at once: the client sees the connection end
                    let detail = format!(
                        "{MAX_HANDSHAKES} handshakes already in progress: closed a connection from {from} at once \
                         (many connections that do not authenticate; firewall the port)"
                    );
                    let _ = tx.try_send(Err(TransportError::Setup(detail)));
                    continue;
                }
                let slot = Slot(in_progress.clone());
                let (ctx2, tx2, stop2) = (ctx.clone(), tx.clone(), stop.clone());
                let spawned = std::thread::Builder::new().name("syft-mpc-handshake".into()).spawn(move || {
                    let _slot = slot;
                    let c = &ctx2;
                    let r = accept_stream(stream, from, c.my_id, &[CLIENT_ID], c.session, &c.key, &c.names, &c.cfg);
                    if !stop2.load(Ordering::SeqCst) {
                        let _ = tx2.send(r);
                    }
                });
                if let Err(e) = spawned {
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
}

#[pymethods]
impl Listener {
    #[new]
    #[pyo3(signature = (addr, token, name, session="syft-mpc-control", timeout_s=30.0, max_message=1_073_741_824,
                        tls_cert=None, tls_key=None))]
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
    ) -> Result<Listener> {
        let (key, session) = session_secrets(token, session)?;
        let cfg =
            TcpConfig { tls: tls_config(tls_cert, tls_key, None, None)?, ..control_config(timeout_s, max_message)? };
        let tls = cfg.tls.is_enabled();
        let my_id = worker_party_id(name);
        // Error labels by party id: clients (id 0) show up as "party 0 (client)".
        let names = vec!["client".to_string()];
        let addr = resolve(addr)?;
        py.detach(|| {
            let listener = bind(addr)?;
            let local_addr = listener.local_addr().map_err(|e| setup(format!("cannot read the bound address: {e}")))?;
            listener.set_nonblocking(true).map_err(|e| setup(format!("cannot poll the listener: {e}")))?;
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let stop = Arc::new(AtomicBool::new(false));
            let ctx = Arc::new(AcceptCtx { my_id, session, key, names, cfg });
            let stop2 = stop.clone();
            let thread = std::thread::Builder::new()
                .name("syft-mpc-accept".into())
                .spawn(move || accept_loop(listener, ctx, tx, stop2))
                .map_err(|e| setup(format!("cannot start the accept thread: {e}")))?;
            Ok(Listener { local_addr, tls, queue: Mutex::new(rx), stop, thread: Mutex::new(Some(thread)) })
        })
    }

    /// The bound address as `"host:port"` (the real port when 0 was asked for).
    #[getter]
    fn local_addr(&self) -> String {
        self.local_addr.to_string()
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
