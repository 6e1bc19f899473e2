//! `Request`: the correlated randomness one operation needs, for `Party.preprocess`.

use crate::convert::conv_params;
use crate::errors::Result;
use pyo3::prelude::*;
use syft_mpc_protocol as proto;

/// Correlated randomness one operation needs, for `Party.preprocess` (the offline phase).
///
/// Build with the static constructors, e.g. `Request.mul(1_000_000)`,
/// `Request.matmul(64, 784, 128)`, `Request.relu(4096)`; every party passes the same list.
#[pyclass(frozen, eq, module = "syft_mpc._native")]
#[derive(Clone, PartialEq)]
pub struct Request(pub proto::Request);

#[pymethods]
impl Request {
    /// For `Party.mul` of `n` elements.
    #[staticmethod]
    fn mul(n: usize) -> Request {
        Request(proto::Request::Mul { len: n })
    }
    /// For `Party.matmul` of an `(m, k)` by a `(k, n)` matrix (`batch` > 1: batched).
    #[staticmethod]
    #[pyo3(signature = (m, k, n, batch=1))]
    fn matmul(m: usize, k: usize, n: usize, batch: usize) -> Request {
        Request(proto::Request::Matmul { batch, m, k, n })
    }
    /// For `Party.conv2d` of an `x_shape` input by a `w_shape` weight.
    #[staticmethod]
    #[pyo3(
        signature = (x_shape, w_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1),
        text_signature = "(x_shape, w_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)"
    )]
    fn conv2d(
        x_shape: [usize; 4],
        w_shape: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    ) -> Result<Request> {
        let (params, _) = conv_params(x_shape, w_shape, stride, padding, dilation, groups)?;
        Ok(Request(proto::Request::Conv2d { x_shape, w_shape, params }))
    }
    /// For `Party.truncate` of `n` elements by `divisor`.
    #[staticmethod]
    fn truncate(n: usize, divisor: u64) -> Request {
        Request(proto::Request::Trunc { len: n, divisor })
    }
    /// For `Party.ltz` of `n` elements.
    #[staticmethod]
    fn ltz(n: usize) -> Request {
        Request::below_times(n, 1, 0)
    }
    /// For `Party.relu` (and `relu_mask`) of `n` elements.
    #[staticmethod]
    fn relu(n: usize) -> Request {
        Request::below_times(n, 1, 1)
    }
    /// For `Party.ltz_times` of `n` elements with `k` payload vectors.
    #[staticmethod]
    fn ltz_times(n: usize, k: usize) -> Request {
        Request::below_times(n, 1, k)
    }
    /// For `Party.below_times` of `n` elements, `t` thresholds and `k` payload vectors.
    #[staticmethod]
    fn below_times(n: usize, t: usize, k: usize) -> Request {
        Request(proto::Request::Compare { len: n, thresholds: t, products: k })
    }
    /// For `Party.fourier` of `n` elements with `k` harmonics, divided by `divisor`.
    #[staticmethod]
    fn fourier(n: usize, k: usize, divisor: u64) -> Request {
        Request(proto::Request::Fourier { len: n, harmonics: k, divisor })
    }
    fn __repr__(&self) -> String {
        format!("Request.{:?}", self.0)
    }
}
