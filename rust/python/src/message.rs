//! Control messages between Python and the transport: borrowed from Python without a copy
//! on the way out, handed over without a copy on the way in.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use syft_mpc_transport::Message;

/// Received messages of at least this many bytes come back as a numpy `uint8` array that
/// owns the received buffer (no copy); smaller ones as `bytes`.
const LARGE_MESSAGE: usize = 64 * 1024;

/// One piece of an outgoing message, borrowed from Python without a copy.
pub enum Part<'py> {
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

    pub fn bytes(&self) -> &[u8] {
        match self {
            Part::Bytes(b) => b.as_bytes(),
            Part::Array(a) => a.as_slice().unwrap_or(&[]), // contiguity checked in `extract`
        }
    }
}

/// A message to send: `bytes`, a 1-d contiguous `uint8` numpy array, or a list/tuple of
/// those (sent as their concatenation, without joining them in memory).
pub fn message_parts<'py>(data: &Bound<'py, PyAny>) -> PyResult<Vec<Part<'py>>> {
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
pub fn message_out(py: Python<'_>, msg: Message) -> PyResult<Bound<'_, PyAny>> {
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
/// array `Connection.recv` returns; unmapped when the last view of it goes away.
#[pyclass(frozen, module = "syft_mpc._native")]
struct ReceivedMessage {
    _bytes: Message,
}
