//! The one place where Rust errors become Python exceptions.
//!
//! The hierarchy (re-exported by `syft_mpc.errors`):
//!
//! ```text
//! MpcError(Exception)
//! ├── TransportError                      a peer could not be reached or misbehaved
//! │   ├── PeerTimeout(…, TimeoutError)    no answer within the timeout
//! │   ├── PeerDisconnected(…, ConnectionError)
//! │   ├── AuthenticationError             wrong token / session, or a stranger
//! │   └── TlsError                        TLS handshake failed (certificate, CA, name, TLS on one side only)
//! ├── ProtocolError                       parties out of step, unsupported party count, dealer trouble
//! ├── ShapeError(…, ValueError)           operands whose shapes do not fit
//! └── FixedPointError(…, ValueError)      NaN, out of range, unsupported precision
//! ```
//!
//! The classes need multiple inheritance (`ShapeError` is also a `ValueError`),
//! which `create_exception!` cannot express, so they are built once with
//! `type(name, bases, dict)` when the module is initialised. Transport errors
//! carry the peer's name in the `peer` attribute.

use pyo3::exceptions::{PyConnectionError, PyException, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use syft_mpc_ring::fixed::FixedPointError as RingFixedPointError;
use syft_mpc_transport::TransportError as RingTransportError;

struct Types {
    mpc: Py<PyType>,
    transport: Py<PyType>,
    peer_timeout: Py<PyType>,
    peer_disconnected: Py<PyType>,
    auth: Py<PyType>,
    tls: Py<PyType>,
    protocol: Py<PyType>,
    shape: Py<PyType>,
    fixed_point: Py<PyType>,
}

static TYPES: PyOnceLock<Types> = PyOnceLock::new();

fn new_type<'py>(py: Python<'py>, name: &str, bases: &[&Bound<'py, PyType>], doc: &str) -> PyResult<Py<PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "syft_mpc.errors")?;
    ns.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let ty = py.get_type::<PyType>().call1((name, bases, ns))?;
    Ok(ty.cast_into::<PyType>()?.unbind())
}

fn build(py: Python<'_>) -> PyResult<Types> {
    let exc = py.get_type::<PyException>();
    let value = py.get_type::<PyValueError>();
    let mpc = new_type(py, "MpcError", &[&exc], "Base class of every error raised by syft_mpc.")?;
    let mpc_b = mpc.bind(py);
    let transport = new_type(
        py,
        "TransportError",
        &[mpc_b],
        "A peer could not be reached, timed out, or sent malformed data. `peer` names it.\n\n\
         The session's channels are unusable afterwards: start a new session.",
    )?;
    let transport_b = transport.bind(py);
    let peer_timeout = new_type(
        py,
        "PeerTimeout",
        &[transport_b, &py.get_type::<PyTimeoutError>()],
        "A peer did not answer within the timeout; it may have crashed or be overloaded.",
    )?;
    let peer_disconnected = new_type(
        py,
        "PeerDisconnected",
        &[transport_b, &py.get_type::<PyConnectionError>()],
        "A peer closed its connection.",
    )?;
    let auth = new_type(
        py,
        "AuthenticationError",
        &[transport_b],
        "A connection failed authentication: check that every process uses the same token and session.",
    )?;
    let tls = new_type(
        py,
        "TlsError",
        &[transport_b],
        "A TLS handshake failed: the peer's certificate is not signed by the trusted CA (tls_ca) or does not \
         name the address connected to, or only one side uses TLS. The message says which.",
    )?;
    let protocol = new_type(
        py,
        "ProtocolError",
        &[mpc_b],
        "Parties are out of step, a protocol was used with an unsupported number of parties, \
         or the dealer could not serve a request.",
    )?;
    let shape =
        new_type(py, "ShapeError", &[mpc_b, &value], "Operands whose shapes or dtypes do not fit the operation.")?;
    let fixed_point = new_type(
        py,
        "FixedPointError",
        &[mpc_b, &value],
        "A value has no fixed-point encoding (NaN, infinite, out of range) or the precision is unsupported.",
    )?;
    Ok(Types { mpc, transport, peer_timeout, peer_disconnected, auth, tls, protocol, shape, fixed_point })
}

fn types(py: Python<'_>) -> &Types {
    TYPES.get_or_try_init(py, || build(py)).expect("building the syft_mpc exception classes failed")
}

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let t = TYPES.get_or_try_init(py, || build(py))?;
    for ty in [
        &t.mpc,
        &t.transport,
        &t.peer_timeout,
        &t.peer_disconnected,
        &t.auth,
        &t.tls,
        &t.protocol,
        &t.shape,
        &t.fixed_point,
    ] {
        let ty = ty.bind(py);
        m.add(ty.name()?, ty)?;
    }
    Ok(())
}

fn raise(py: Python<'_>, ty: &Py<PyType>, msg: String, peer: Option<&str>) -> PyErr {
    let ty = ty.bind(py);
    match ty.call1((msg.clone(),)) {
        Ok(inst) => {
            let _ = inst.setattr("peer", peer);
            PyErr::from_value(inst)
        }
        Err(_) => PyErr::from_type(ty.clone(), msg),
    }
}

/// Every failure a binding can report, converted to a Python exception in `From<Error> for PyErr`.
#[derive(Debug)]
pub enum Error {
    Transport(RingTransportError),
    Protocol(syft_mpc_protocol::ProtocolError),
    FixedPoint(RingFixedPointError),
    /// Input validated by the binding (shapes, dtypes, arguments).
    Shape(String),
    /// Misuse of a session object (e.g. a closed party).
    Session(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn shape(msg: impl Into<String>) -> Error {
    Error::Shape(msg.into())
}

impl From<RingTransportError> for Error {
    fn from(e: RingTransportError) -> Self {
        Error::Transport(e)
    }
}
impl From<RingFixedPointError> for Error {
    fn from(e: RingFixedPointError) -> Self {
        Error::FixedPoint(e)
    }
}
impl From<syft_mpc_protocol::ProtocolError> for Error {
    fn from(e: syft_mpc_protocol::ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

fn transport_to_py(py: Python<'_>, e: RingTransportError) -> PyErr {
    let t = types(py);
    let msg = e.to_string();
    match &e {
        RingTransportError::Timeout { peer, .. } => raise(py, &t.peer_timeout, msg, Some(peer)),
        RingTransportError::Disconnected { peer, .. } => raise(py, &t.peer_disconnected, msg, Some(peer)),
        RingTransportError::Auth { peer, .. } => raise(py, &t.auth, msg, Some(peer)),
        RingTransportError::Tls { peer, .. } => raise(py, &t.tls, msg, Some(peer)),
        RingTransportError::Malformed { peer, .. }
        | RingTransportError::UnexpectedLength { peer, .. }
        | RingTransportError::TooLarge { peer, .. }
        | RingTransportError::Io { peer, .. } => raise(py, &t.transport, msg, Some(peer)),
        _ => raise(py, &t.transport, msg, None),
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        Python::attach(|py| {
            let t = types(py);
            match e {
                Error::Transport(e) => transport_to_py(py, e),
                Error::Protocol(e) => {
                    use syft_mpc_protocol::ProtocolError as P;
                    match e {
                        P::Transport(e) => transport_to_py(py, e),
                        P::Shape(_) => raise(py, &t.shape, e.to_string(), None),
                        other => raise(py, &t.protocol, other.to_string(), None),
                    }
                }
                Error::FixedPoint(e) => raise(py, &t.fixed_point, e.to_string(), None),
                Error::Shape(msg) => raise(py, &t.shape, msg, None),
                Error::Session(msg) => raise(py, &t.protocol, msg, None),
            }
        })
    }
}
