//! `Listener` / `Connection`: the control plane's authenticated, framed TCP channel.
//!
//! The driver ↔ worker and worker ↔ worker control messages of `syft_mpc.socket_worker`
//! travel over the transport crate's [`TcpChannel`]: versioned frames, size limits, a
//! timeout on every wait, and the mutual HMAC handshake (the token never crosses the wire).
//!
//! Party-id convention of the handshake (it binds both ids into the proofs):
//! * a worker named `name` is party [`worker_party_id`]`(name)`: `1 +` the first 4 bytes of
//!   SHA-256(`"syft-mpc worker id\0" || name`) mod `2^32 − 1` (never 0);
//! * whoever connects to a worker (a driver, or another worker) is party 0.
//!
//! So a client that reaches the wrong worker (another name on that port) fails the
//! handshake with a clear error instead of talking to the wrong object store. The key and
//! session id come from `session::session_secrets(token, session)`.
//!
//! A `Listener` runs its own accept thread; each accepted socket is authenticated on a
//! thread of its own (a slow or hostile client never delays the others), bounded by the
//! timeout as a whole, at most [`MAX_HANDSHAKES`] at once, and queued for `accept()`.
//! Every blocking call releases the GIL.
//!
//! TLS (optional): a `Listener` given `tls_cert`/`tls_key` (PEM files) accepts only TLS 1.3;
//! a `Connection.connect` given `tls_ca` (PEM) uses TLS and checks the worker's certificate
//! against it, for the name `tls_server_name` (default: the host part of `addr`). The HMAC
//! handshake runs inside the tunnel either way.

use crate::errors::{shape, Error, Result};
use crate::session::session_secrets;
use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use sha2::{Digest, Sha256};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use syft_mpc_transport::{
    accept_stream, bind, connect, Channel, Message, TcpChannel, TcpConfig, TlsConfig, TransportError,
};

/// Handshakes waiting for `accept()`; further connections wait in the kernel backlog.
const QUEUE: usize = 64;
/// Handshakes in progress at once (one thread each). Each lasts at most the timeout; past
/// this many, new connections are closed at once, so strangers opening connections
/// without finishing a handshake cannot exhaust the worker's threads or memory.
const MAX_HANDSHAKES: usize = 512;
const CLIENT_ID: u32 = 0;
/// Received messages of at least this many bytes come back as a numpy `uint8` array that
/// owns the received buffer (no copy); smaller ones as `bytes`.
const LARGE_MESSAGE: usize = 64 * 1024;

/// One piece of an outgoing message, borrowed from Python without a copy.
enum Part<'py> {
    Bytes(Bound<'py, PyBytes>),
    Array(PyReadonlyArray1<'py, u8>),
}

impl<'py> Part<'py> {
    fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Option<Part<'py>>> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Some(Part::Bytes(b.clone())));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, u8>>() {
            if a.as_slice().is_err() {
                return Err(PyTypeError::new_err("a message part must be a contiguous uint8 array"));
            }
            return Ok(Some(Part::Array(a)));
        }
        Ok(None)
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Part::Bytes(b) => b.as_bytes(),
            Part::Array(a) => a.as_slice().unwrap_or(&[]), // contiguity checked in `extract`
        }
    }
}

/// A message to send: `bytes`, a 1-d contiguous `uint8` numpy array, or a list/tuple of
/// those (sent as their concatenation, without joining them in memory).
fn message_parts<'py>(data: &Bound<'py, PyAny>) -> PyResult<Vec<Part<'py>>> {
    if let Some(p) = Part::extract(data)? {
        return Ok(vec![p]);
    }
    if data.is_instance_of::<PyList>() || data.is_instance_of::<PyTuple>() {
        let mut out = Vec::new();
        for item in data.try_iter()? {
            let item = item?;
            match Part::extract(&item)? {
                Some(p) => out.push(p),
                None => {
                    return Err(PyTypeError::new_err(format!(
                        "a message part must be bytes or a uint8 numpy array, got {}",
                        item.get_type().name()?
                    )))
                }
            }
        }
        return Ok(out);
    }
    Err(PyTypeError::new_err(format!(
        "a message must be bytes, a uint8 numpy array, or a list of those, got {}",
        data.get_type().name()?
    )))
}

/// A received message as `bytes` (small) or a writable numpy `uint8` array that owns the
/// received buffer (large): no copy either way for large messages.
fn message_out(py: Python<'_>, msg: Message) -> PyResult<Bound<'_, PyAny>> {
    if msg.len() < LARGE_MESSAGE {
        return Ok(PyBytes::new(py, &msg).into_any());
    }
    match msg.try_into_vec() {
        Ok(v) => Ok(v.into_pyarray(py).into_any()),
        Err(mut mapped) => {
            let (len, ptr) = (mapped.len(), mapped.as_mut_ptr());
            // Moving the message moves its handle, not the mapped bytes: `ptr` stays valid.
            let owner = Bound::new(py, ReceivedMessage { _bytes: mapped })?;
            // SAFETY: the view covers the `len` bytes of the message that `owner` owns and
            // never moves or frees while alive; numpy keeps `owner` as the array's base, so
            // the memory outlives every array or tensor viewing it. The bytes are only
            // written through numpy, never again from Rust.
            let arr = unsafe {
                let view = numpy::ndarray::ArrayView1::from_shape_ptr(len, ptr.cast_const());
                numpy::PyArray1::<u8>::borrow_from_array(&view, owner.into_any())
            };
            Ok(arr.into_any())
        }
    }
}

/// Owner of a large received message (a memory mapping): the base object of the numpy
/// array [`Connection::recv`] returns; unmapped when the last view of it goes away.
#[pyclass(frozen, module = "syft_mpc._native")]
struct ReceivedMessage {
    _bytes: Message,
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Listener>()?;
    m.add_class::<Connection>()?;
    m.add_function(wrap_pyfunction!(worker_party_id, m)?)?;
    Ok(())
}

/// The handshake party id of the worker named `name` (see the module docs); clients are party 0.
#[pyfunction]
pub fn worker_party_id(name: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(b"syft-mpc worker id\0");
    h.update(name.as_bytes());
    let d = h.finalize();
    1 + u32::from_le_bytes([d[0], d[1], d[2], d[3]]) % (u32::MAX - 1)
}

fn seconds(s: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| shape(format!("{what} must be a positive number of seconds, got {s}")))
}

fn setup(detail: String) -> Error {
    Error::Transport(TransportError::Setup(detail))
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| setup(format!("cannot resolve address {addr:?} (expected \"host:port\"): {e}")))?
        .next()
        .ok_or_else(|| setup(format!("address {addr:?} resolves to nothing")))
}

fn config(timeout_s: f64, max_message: u64) -> Result<TcpConfig> {
    let t = seconds(timeout_s, "timeout_s")?;
    if max_message == 0 {
        return Err(shape("max_message must be at least 1 byte"));
    }
    Ok(TcpConfig { timeout: t, connect_timeout: t, max_message, ..TcpConfig::default() })
}

/// TLS settings from PEM file paths: `cert` + `key` (this side's identity, for accepting),
/// `ca` (whom to trust, for connecting), `server_name` (what the peer's certificate must
/// name; default: the address connected to). All `None`: plaintext.
pub(crate) fn tls_config(
    cert: Option<&str>,
    key: Option<&str>,
    ca: Option<&str>,
    server_name: Option<&str>,
) -> Result<TlsConfig> {
    let mut tls = TlsConfig::default();
    match (cert, key) {
        (Some(c), Some(k)) => tls = tls.with_identity_files(Path::new(c), Path::new(k))?,
        (None, None) => {}
        _ => return Err(shape("tls_cert and tls_key go together: pass both (PEM files) or neither")),
    }
    if let Some(ca) = ca {
        tls = tls.with_trusted_ca_file(Path::new(ca))?;
    }
    if let Some(name) = server_name {
        if ca.is_none() {
            return Err(shape("tls_server_name needs tls_ca (the CA that signed the peer's certificate)"));
        }
        tls = tls.with_server_name(name)?;
    }
    Ok(tls)
}

/// The host part of `"host:port"` (without IPv6 brackets): the default TLS server name.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

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
        let cfg = TcpConfig { tls: tls_config(tls_cert, tls_key, None, None)?, ..config(timeout_s, max_message)? };
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

/// One authenticated control connection: whole messages (`bytes`) in order, both ways.
///
/// `Connection.connect(addr, token, name, ...)` reaches the worker `name` at `addr`
/// (retrying "connection refused" until `timeout_s`), over TLS when `tls_ca` is given;
/// `Listener.accept()` returns the server side. `send`, `recv` and `request` release the GIL; `close()` may be called
/// from another thread and makes a blocked `recv` fail at once. After any error the
/// connection is closed (the transport never retries).
#[pyclass(frozen, module = "syft_mpc._native")]
pub struct Connection {
    chan: Mutex<Option<TcpChannel>>,
    socket: TcpStream,
    peer: String,
    peer_addr: Option<SocketAddr>,
    tls: bool,
    closed: AtomicBool,
}

impl Connection {
    fn wrap(chan: TcpChannel) -> Result<Connection> {
        let socket = chan
            .try_clone_socket()
            .map_err(|e| setup(format!("cannot keep a handle on the socket of {}: {e}", chan.peer())))?;
        Ok(Connection {
            peer: chan.peer().to_string(),
            peer_addr: chan.peer_addr(),
            tls: chan.is_tls(),
            socket,
            chan: Mutex::new(Some(chan)),
            closed: AtomicBool::new(false),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut TcpChannel) -> std::result::Result<T, TransportError>) -> Result<T> {
        let mut g = self.chan.lock().map_err(|_| Error::Session(format!("connection to {} failed", self.peer)))?;
        let chan = g.as_mut().ok_or_else(|| self.closed_error())?;
        let r = f(chan);
        if r.is_err() {
            *g = None; // the transport poisoned it: drop the socket now
        }
        r.map_err(|e| if self.closed.load(Ordering::SeqCst) { self.closed_error() } else { Error::Transport(e) })
    }

    fn closed_error(&self) -> Error {
        Error::Transport(TransportError::Disconnected {
            peer: self.peer.clone(),
            detail: "the connection is closed; open a new one".into(),
        })
    }
}

#[pymethods]
impl Connection {
    /// Connects to the worker `name` at `addr` (`"host:port"`) and authenticates with `token`.
    ///
    /// `timeout_s` bounds connecting (a worker that is still starting is retried) and is
    /// the default bound on every later wait. With `tls_ca` (a PEM file of the CA that
    /// signed the worker's certificate) the connection uses TLS 1.3 and the certificate must
    /// name `tls_server_name` (default: the host part of `addr`). Errors: `TransportError`
    /// if nobody listens, `AuthenticationError` for a wrong token or another worker at that
    /// address, `TlsError` for an untrusted certificate or a TLS / plaintext mismatch.
    #[staticmethod]
    #[pyo3(signature = (addr, token, name, session="syft-mpc-control", timeout_s=30.0, max_message=1_073_741_824,
                        tls_ca=None, tls_server_name=None))]
    fn connect(
        py: Python<'_>,
        addr: &str,
        token: &str,
        name: &str,
        session: &str,
        timeout_s: f64,
        max_message: u64,
        tls_ca: Option<&str>,
        tls_server_name: Option<&str>,
    ) -> Result<Connection> {
        let (key, session) = session_secrets(token, session)?;
        let server_name = tls_server_name.or_else(|| tls_ca.map(|_| host_of(addr)));
        let cfg = TcpConfig { tls: tls_config(None, None, tls_ca, server_name)?, ..config(timeout_s, max_message)? };
        let peer_id = worker_party_id(name);
        let label = format!("worker {name}");
        py.detach(|| {
            let sa = resolve(addr)?;
            let chan = connect(sa, CLIENT_ID, peer_id, session, &key, &label, &cfg)?;
            Connection::wrap(chan)
        })
    }

    /// Sends one message (any size up to `max_message`): `bytes`, a contiguous 1-d `uint8`
    /// numpy array, or a list/tuple of those, sent as one message (their concatenation)
    /// without joining them: e.g. `[b"R", header, tensor_bytes_view]`.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let parts = message_parts(data)?;
        let slices: Vec<&[u8]> = parts.iter().map(Part::bytes).collect();
        py.detach(|| self.with(|c| c.send_parts(&slices)))?;
        Ok(())
    }

    /// Receives one message; waits at most `timeout_s` (default: the connection's timeout).
    ///
    /// Messages under 64 KiB come back as `bytes`; larger ones as a writable 1-d numpy
    /// `uint8` array that owns the received buffer (no copy; `memoryview(msg)` and
    /// `torch.frombuffer` wrap it as it is).
    #[pyo3(signature = (timeout_s=None))]
    fn recv<'py>(&self, py: Python<'py>, timeout_s: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let t = timeout_s.map(|s| seconds(s, "timeout_s")).transpose()?;
        let msg = py.detach(|| {
            self.with(|c| {
                if let Some(t) = t {
                    c.set_timeout(t);
                }
                c.recv_message()
            })
        })?;
        message_out(py, msg)
    }

    /// `send(data)` then `recv(timeout_s)` in one call (one GIL release per round trip).
    #[pyo3(signature = (data, timeout_s=None))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        timeout_s: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = timeout_s.map(|s| seconds(s, "timeout_s")).transpose()?;
        let parts = message_parts(data)?;
        let slices: Vec<&[u8]> = parts.iter().map(Part::bytes).collect();
        let msg = py.detach(|| {
            self.with(|c| {
                if let Some(t) = t {
                    c.set_timeout(t);
                }
                c.send_parts(&slices)?;
                c.recv_message()
            })
        })?;
        message_out(py, msg)
    }

    /// Sets the default bound on every later wait.
    fn set_timeout(&self, py: Python<'_>, timeout_s: f64) -> Result<()> {
        let t = seconds(timeout_s, "timeout_s")?;
        py.detach(|| {
            self.with(|c| {
                c.set_timeout(t);
                Ok(())
            })
        })
    }

    /// Closes the connection; safe from any thread, also while another one waits in `recv`.
    fn close(&self, py: Python<'_>) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.socket.shutdown(Shutdown::Both);
        py.detach(|| {
            if let Ok(mut g) = self.chan.lock() {
                *g = None;
            }
        });
    }

    /// True once closed or failed.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.chan.lock().map(|g| g.is_none()).unwrap_or(true)
    }

    /// The authenticated peer, e.g. `"party 0"` (a client) or `"party 123 (worker bob)"`.
    #[getter]
    fn peer(&self) -> String {
        self.peer.clone()
    }

    /// The peer's socket address as `"host:port"`, if known.
    #[getter]
    fn peer_addr(&self) -> Option<String> {
        self.peer_addr.map(|a| a.to_string())
    }

    /// True when the connection runs over TLS.
    #[getter]
    fn tls(&self) -> bool {
        self.tls
    }

    /// Payload bytes and messages sent and received so far.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.chan.lock().ok().and_then(|g| g.as_ref().map(|c| c.stats())).unwrap_or_default();
        let d = PyDict::new(py);
        d.set_item("bytes_sent", s.bytes_sent)?;
        d.set_item("bytes_received", s.bytes_received)?;
        d.set_item("messages_sent", s.messages_sent)?;
        d.set_item("messages_received", s.messages_received)?;
        Ok(d)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let tls = if self.tls { ", TLS" } else { "" };
        match self.peer_addr {
            Some(a) => format!("Connection(to {} at {a}{tls})", self.peer),
            None => format!("Connection(to {}{tls})", self.peer),
        }
    }
}
