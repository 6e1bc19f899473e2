//! `Connection`: one authenticated, framed TCP connection of the control plane.
//!
//! The driver ↔ worker and worker ↔ worker control messages of `syft_mpc.socket_worker`
//! travel over the transport crate's [`TcpChannel`]: versioned frames, size limits, a
//! timeout on every wait, and the mutual HMAC handshake (the token never crosses the wire).
//! The key and session id come from [`session_secrets`]`(token, session)`; the worker
//! connected to is party [`worker_party_id`]`(name)`, the connecting side party
//! [`CLIENT_ID`], so reaching another worker fails the handshake.
//!
//! TLS (optional): `Connection.connect` given `tls_ca` (PEM) uses TLS 1.3 and checks the
//! worker's certificate against it, for the name `tls_server_name` (default: the host part
//! of `addr`). The HMAC handshake runs inside the tunnel either way.

use crate::config::{
    control_config, host_of, resolve, seconds, session_secrets, setup, tls_config, worker_party_id, CLIENT_ID,
};
use crate::errors::{Error, Result};
use crate::message::{message_out, message_parts, Part};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::types::PyDict;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use syft_mpc_transport::{connect, Channel, Exporter, TcpChannel, TcpConfig, TransportError};

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
    exporter: Option<Exporter>,
    closed: AtomicBool,
}

impl Connection {
    pub fn wrap(chan: TcpChannel) -> Result<Connection> {
        let socket = chan
            .try_clone_socket()
            .map_err(|e| setup(format!("cannot keep a handle on the socket of {}: {e}", chan.peer())))?;
        Ok(Connection {
            peer: chan.peer().to_string(),
            peer_addr: chan.peer_addr(),
            tls: chan.is_tls(),
            exporter: chan.exporter(),
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
        let cfg =
            TcpConfig { tls: tls_config(None, None, tls_ca, server_name)?, ..control_config(timeout_s, max_message)? };
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

    /// 32 secret bytes that only the two ends of this connection can compute, for
    /// `context` (any bytes): derived from the keys of the handshake (the token and both
    /// sides' fresh nonces), never sent. Used to seal a secret for this peer alone.
    fn export_secret<'py>(&self, py: Python<'py>, context: &[u8]) -> Result<Bound<'py, PyBytes>> {
        let e = self.exporter.as_ref().ok_or_else(|| self.closed_error())?;
        Ok(PyBytes::new(py, &e.secret(context)))
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
