//! The one place where Rust errors become Python exceptions.
//!
//! The exception classes are declared in Python, in `syft_mpc.errors` (which draws the
//! whole tree); they are imported from there the first time one is raised and kept in a
//! [`PyOnceLock`] each, as with pyo3's `import_exception!`. The classes raised here:
//!
//! ```text
//! MpcError
//! ├── TransportError         a peer could not be reached or misbehaved; `peer` names it
//! │   ├── PeerTimeout        also a TimeoutError
//! │   ├── PeerDisconnected   also a ConnectionError
//! │   ├── AuthenticationError
//! │   ├── TlsError
//! │   └── IntegrityError     a frame altered, replayed, reordered or injected in transit
//! ├── ProtocolError          parties out of step, unsupported party count, dealer trouble
//! ├── ShapeError             also a ValueError
//! ├── FixedPointError        also a ValueError
//! └── ResourceLimitError     a size that overflows or an allocation refused (also a MemoryError)
//! ```
//!
//! A transport error that names its peer gets it in the instance's `peer` attribute (the
//! class default is None).

use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use syft_mpc_ring::fixed::FixedPointError as RingFixedPointError;
use syft_mpc_transport::TransportError as RingTransportError;

/// The Python module that declares the exception classes.
const MODULE: &str = "syft_mpc.errors";

/// An exception class of `syft_mpc.errors` raised by the bindings.
#[derive(Clone, Copy)]
enum Class {
    Transport,
    PeerTimeout,
    PeerDisconnected,
    Authentication,
    Tls,
    Integrity,
    Protocol,
    Shape,
    FixedPoint,
    ResourceLimit,
}

// One past the last variant, so a new class cannot be left out of the cache below.
const CLASSES: usize = Class::ResourceLimit as usize + 1;

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Transport => "TransportError",
            Class::PeerTimeout => "PeerTimeout",
            Class::PeerDisconnected => "PeerDisconnected",
            Class::Authentication => "AuthenticationError",
            Class::Tls => "TlsError",
            Class::Integrity => "IntegrityError",
            Class::Protocol => "ProtocolError",
            Class::Shape => "ShapeError",
            Class::FixedPoint => "FixedPointError",
            Class::ResourceLimit => "ResourceLimitError",
        }
    }

    /// The class, imported from [`MODULE`] on first use.
    fn get(self, py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
        static TYPES: [PyOnceLock<Py<PyType>>; CLASSES] = [const { PyOnceLock::new() }; CLASSES];
        TYPES[self as usize].import(py, MODULE, self.name())
    }
}

/// An exception of class `class` with message `msg`, and `peer` in its `peer` attribute
/// when given (transport errors).
fn raise(py: Python<'_>, class: Class, msg: String, peer: Option<&str>) -> PyErr {
    let ty = match class.get(py) {
        Ok(ty) => ty,
        Err(e) => {
            let err = PyImportError::new_err(format!("cannot import {MODULE}.{} to raise: {msg}", class.name()));
            err.set_cause(py, Some(e));
            return err;
        }
    };
    match ty.call1((msg.as_str(),)) {
        Ok(inst) => {
            if let Some(peer) = peer {
                let _ = inst.setattr("peer", peer);
            }
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
    /// A size from the caller's shapes that overflows, or an allocation the system refused.
    Resource(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn shape(msg: impl Into<String>) -> Error {
    Error::Shape(msg.into())
}

impl From<syft_mpc_ring::kernels::SizeError> for Error {
    fn from(e: syft_mpc_ring::kernels::SizeError) -> Self {
        Error::Resource(format!(
            "{e}; make the operands smaller or split the operation (the worker refused it before allocating)"
        ))
    }
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
    let msg = e.to_string();
    match &e {
        RingTransportError::Timeout { peer, .. } => raise(py, Class::PeerTimeout, msg, Some(peer)),
        RingTransportError::Disconnected { peer, .. } => raise(py, Class::PeerDisconnected, msg, Some(peer)),
        RingTransportError::Auth { peer, .. } => raise(py, Class::Authentication, msg, Some(peer)),
        RingTransportError::Tls { peer, .. } => raise(py, Class::Tls, msg, Some(peer)),
        RingTransportError::Integrity { peer, .. } => raise(py, Class::Integrity, msg, Some(peer)),
        RingTransportError::Malformed { peer, .. }
        | RingTransportError::UnexpectedLength { peer, .. }
        | RingTransportError::TooLarge { peer, .. }
        | RingTransportError::Io { peer, .. } => raise(py, Class::Transport, msg, Some(peer)),
        _ => raise(py, Class::Transport, msg, None),
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        Python::attach(|py| match e {
            Error::Transport(e) => transport_to_py(py, e),
            Error::Protocol(e) => {
                use syft_mpc_protocol::ProtocolError as P;
                match e {
                    P::Transport(e) => transport_to_py(py, e),
                    P::Shape(_) => raise(py, Class::Shape, e.to_string(), None),
                    other => raise(py, Class::Protocol, other.to_string(), None),
                }
            }
            Error::FixedPoint(e) => raise(py, Class::FixedPoint, e.to_string(), None),
            Error::Shape(msg) => raise(py, Class::Shape, msg, None),
            Error::Session(msg) => raise(py, Class::Protocol, msg, None),
            Error::Resource(msg) => raise(py, Class::ResourceLimit, msg, None),
        })
    }
}
