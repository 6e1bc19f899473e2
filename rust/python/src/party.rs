//! `Party`: one party's end of an MPC session on numpy arrays.
//!
//! Every method that talks to peers runs with the GIL released, and takes the
//! party's lock only after releasing it: a thread that waits for the lock must
//! never hold the GIL that the lock's holder needs to return.

use crate::config::{self, party_names, resolve, session_config, session_secrets, tls_config};
use crate::convert::{conv_params, elems, matmul_dims, ring, ring_out, same_shape, shape4, stats_dict};
use crate::errors::{shape, Error, Result};
use crate::request::Request;
use numpy::{PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Mutex;
use syft_mpc_protocol as proto;
use syft_mpc_transport::{bind, TcpConfig};

type Out<'py> = Result<Bound<'py, PyArrayDyn<u64>>>;
type OutPair<'py> = Result<(Bound<'py, PyArrayDyn<u64>>, Bound<'py, PyArrayDyn<u64>>)>;

/// One party's end of an MPC session over additive shares in Z_2^64.
///
/// Arrays are numpy `uint64` (ring elements: shares, fixed-point encodings);
/// every party must call the same methods in the same order with shares of
/// the same shapes. Methods release the GIL while they compute and wait.
#[pyclass(frozen, module = "syft_mpc._native")]
pub struct Party {
    inner: Mutex<Option<proto::Party>>,
    id: usize,
    n: usize,
}

impl Party {
    pub fn wrap(p: proto::Party) -> Party {
        Party { id: p.id(), n: p.n_parties(), inner: Mutex::new(Some(p)) }
    }

    /// Runs `f` on the party with the GIL released.
    fn run<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut proto::Party) -> Result<T> + Send) -> Result<T> {
        py.detach(|| {
            let mut guard = self.lock()?;
            let p = guard.as_mut().ok_or_else(|| self.closed_error())?;
            f(p)
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<proto::Party>>> {
        self.inner.lock().map_err(|_| {
            Error::Session(format!("party {} failed in an earlier call (a panic); start a new session", self.id))
        })
    }

    fn closed_error(&self) -> Error {
        Error::Session(format!("party {} is closed (or failed); start a new session", self.id))
    }
}

#[pymethods]
impl Party {
    /// Joins a session over TCP as party `party_id` of `len(addrs)`.
    ///
    /// Listens on `addrs[party_id]`, connects to / accepts every other party
    /// (`addrs[i]` is where party i listens) and to the dealer at `dealer_addr`.
    /// Every process of the session passes the same `token` (a secret, at least 16
    /// characters, e.g. `secrets.token_hex(32)`) and `session` (a public name for this
    /// computation). `timeout_s` bounds set-up and every later wait for a peer.
    ///
    /// TLS: with `tls_cert`, `tls_key` (this party's PEM certificate chain and key: it
    /// accepts connections from higher ids) and `tls_ca` (PEM CA that signed the other
    /// parties' and the dealer's certificates: it connects to them), every connection of
    /// the session uses TLS 1.3. A peer's certificate must name the IP address it is
    /// reached at, or `tls_server_name` when given (one name for every peer).
    #[staticmethod]
    #[pyo3(signature = (party_id, addrs, dealer_addr, token, session="syft-mpc", timeout_s=30.0,
                        tls_cert=None, tls_key=None, tls_ca=None, tls_server_name=None))]
    fn connect(
        py: Python<'_>,
        party_id: usize,
        addrs: Vec<String>,
        dealer_addr: &str,
        token: &str,
        session: &str,
        timeout_s: f64,
        tls_cert: Option<&str>,
        tls_key: Option<&str>,
        tls_ca: Option<&str>,
        tls_server_name: Option<&str>,
    ) -> Result<Party> {
        let n = addrs.len();
        if n < 2 || party_id >= n {
            return Err(shape(format!(
                "party_id {party_id} with {n} addresses: need at least 2 parties and party_id < len(addrs)"
            )));
        }
        let (key, sid) = session_secrets(token, session)?;
        if (tls_cert.is_some() || tls_key.is_some() || tls_ca.is_some())
            && (tls_cert.is_none() || tls_key.is_none() || tls_ca.is_none())
        {
            return Err(shape(
                "a party over TLS needs tls_cert and tls_key (it accepts connections) and tls_ca (it connects): \
                 pass all three or none",
            ));
        }
        let tls = tls_config(tls_cert, tls_key, tls_ca, tls_server_name)?;
        let cfg = TcpConfig { tls, ..session_config(timeout_s)? };
        let addrs = addrs.iter().map(|a| resolve(a)).collect::<Result<Vec<_>>>()?;
        let dealer_addr = resolve(dealer_addr)?;
        let names = party_names(n);
        let p = py.detach(|| -> Result<proto::Party> {
            let listener = bind(addrs[party_id])?;
            Ok(proto::tcp::connect_party(party_id, &addrs, listener, dealer_addr, &names, sid, &key, &cfg)?)
        })?;
        Ok(Party::wrap(p))
    }

    /// This party's id, `0 <= id < n_parties`.
    #[getter]
    fn id(&self) -> usize {
        self.id
    }

    #[getter]
    fn n_parties(&self) -> usize {
        self.n
    }

    /// `True` once `close()` or `abort()` was called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        py.detach(|| self.inner.lock().map(|g| g.is_none()).unwrap_or(true))
    }

    fn __repr__(&self) -> String {
        format!("Party(id={}, n_parties={})", self.id, self.n)
    }

    /// Bound (seconds) on every wait for a peer or the dealer.
    fn set_timeout(&self, py: Python<'_>, seconds: f64) -> Result<()> {
        let t = config::seconds(seconds, "timeout")?;
        self.run(py, |p| {
            p.set_timeout(t);
            Ok(())
        })
    }

    /// Communication counters: rounds, bytes_sent, bytes_received, dealer_bytes_received.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.run(py, |p| Ok(p.stats()))?;
        stats_dict(py, s)
    }

    /// Reveals shared values to every party. One round.
    fn open<'py>(&self, py: Python<'py>, x: PyReadonlyArrayDyn<'py, u64>) -> Out<'py> {
        let v = elems(&x);
        let out = self.run(py, |p| Ok(p.open(ring(&v))?))?;
        ring_out(py, out, x.shape())
    }

    /// This party's share of `owner`'s plaintext, with no communication.
    /// The owner passes `x`; the other parties pass `shape`.
    #[pyo3(signature = (owner, x=None, shape=None))]
    fn input<'py>(
        &self,
        py: Python<'py>,
        owner: usize,
        x: Option<PyReadonlyArrayDyn<'py, u64>>,
        shape: Option<Vec<usize>>,
    ) -> Out<'py> {
        let dims: Vec<usize> = match (&x, shape) {
            (Some(a), None) => a.shape().to_vec(),
            (Some(a), Some(s)) if a.shape() == s.as_slice() => s,
            (Some(a), Some(s)) => {
                return Err(crate::errors::shape(format!("input: x has shape {:?} but shape={s:?}", a.shape())));
            }
            (None, Some(s)) => s,
            (None, None) => return Err(crate::errors::shape("input: pass x (on the owner) or shape (on the others)")),
        };
        if (owner == self.id) != x.is_some() {
            return Err(crate::errors::shape(format!(
                "input: party {} {} the owner (party {owner}); only the owner passes x",
                self.id,
                if owner == self.id { "is" } else { "is not" }
            )));
        }
        let len = dims.iter().product();
        let v = x.as_ref().map(elems);
        let out = self.run(py, |p| Ok(p.input(owner, v.as_deref().map(ring), len)?))?;
        ring_out(py, out, &dims)
    }

    /// Beaver product of two shared arrays of one shape: the raw ring product, or with
    /// `divisor > 1` the product truncated by it (as `truncate`, one more round; the dealer
    /// prepares the truncation pair while the product runs).
    #[pyo3(signature = (x, y, divisor=1))]
    fn mul<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, u64>,
        y: PyReadonlyArrayDyn<'py, u64>,
        divisor: u64,
    ) -> Out<'py> {
        same_shape("mul", x.shape(), y.shape())?;
        let (a, b) = (elems(&x), elems(&y));
        let out = self.run(py, |p| Ok(p.mul_truncated(ring(&a), ring(&b), divisor)?))?;
        ring_out(py, out, x.shape())
    }

    /// Shared `(m,k) @ (k,n)`, or batched `(b,m,k) @ (b,k,n)`, in one round; truncated by
    /// `divisor` as in `mul`.
    #[pyo3(signature = (x, y, divisor=1))]
    fn matmul<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, u64>,
        y: PyReadonlyArrayDyn<'py, u64>,
        divisor: u64,
    ) -> Out<'py> {
        let (batch, m, k, n) = matmul_dims(x.shape(), y.shape())?;
        let (a, b) = (elems(&x), elems(&y));
        let bt = batch.unwrap_or(1);
        let out = self.run(py, |p| Ok(p.bmm_truncated(ring(&a), ring(&b), bt, m, k, n, divisor)?))?;
        match batch {
            None => ring_out(py, out, &[m, n]),
            Some(bt) => ring_out(py, out, &[bt, m, n]),
        }
    }

    /// Shared 2-d convolution (as `torch.nn.functional.conv2d`), in one round; truncated by
    /// `divisor` as in `mul`.
    #[pyo3(
        signature = (x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, divisor=1),
        text_signature = "($self, x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, divisor=1)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn conv2d<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, u64>,
        w: PyReadonlyArrayDyn<'py, u64>,
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
        divisor: u64,
    ) -> Out<'py> {
        let xs = shape4("input", x.shape())?;
        let ws = shape4("weight", w.shape())?;
        let (params, _) = conv_params(xs, ws, stride, padding, dilation, groups)?;
        let (a, b) = (elems(&x), elems(&w));
        let (out, s) = self.run(py, |p| Ok(p.conv2d_truncated(ring(&a), xs, ring(&b), ws, &params, divisor)?))?;
        ring_out(py, out, &s)
    }

    /// Shared `x / divisor` (signed), dealer-assisted, any number of parties; within 1 ulp.
    fn truncate<'py>(&self, py: Python<'py>, x: PyReadonlyArrayDyn<'py, u64>, divisor: u64) -> Out<'py> {
        let v = elems(&x);
        let out = self.run(py, |p| Ok(p.truncate(ring(&v), divisor)?))?;
        ring_out(py, out, x.shape())
    }

    /// SecureML local truncation by `2**frac_bits` (2 parties only; no communication).
    fn truncate_local<'py>(&self, py: Python<'py>, x: PyReadonlyArrayDyn<'py, u64>, frac_bits: u32) -> Out<'py> {
        let v = elems(&x);
        let out = self.run(py, |p| Ok(p.truncate_local(ring(&v), frac_bits)?))?;
        ring_out(py, out, x.shape())
    }

    /// Shares of `1 if x < 0 else 0` (signed reading), as ring integers 0/1.
    fn ltz<'py>(&self, py: Python<'py>, x: PyReadonlyArrayDyn<'py, u64>) -> Out<'py> {
        let v = elems(&x);
        let out = self.run(py, |p| Ok(p.ltz(ring(&v))?))?;
        ring_out(py, out, x.shape())
    }

    /// Shares of `max(x, 0)` (signed reading).
    fn relu<'py>(&self, py: Python<'py>, x: PyReadonlyArrayDyn<'py, u64>) -> Out<'py> {
        let v = elems(&x);
        let out = self.run(py, |p| Ok(p.relu(ring(&v))?))?;
        ring_out(py, out, x.shape())
    }

    /// Shares of `p * (1 if x < 0 else 0)` for `payload` of shape `(k, *x.shape)`, in the
    /// comparison's rounds (a select without a Beaver round of its own).
    fn ltz_times<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, u64>,
        payload: PyReadonlyArrayDyn<'py, u64>,
    ) -> Out<'py> {
        if payload.shape().get(1..) != Some(x.shape()) {
            return Err(Error::Shape(format!(
                "ltz_times payload of shape {:?} for x of shape {:?}: it must be (k, *x.shape)",
                payload.shape(),
                x.shape()
            )));
        }
        let (v, p) = (elems(&x), elems(&payload));
        let out = self.run(py, |party| Ok(party.ltz_times(ring(&v), ring(&p))?))?;
        ring_out(py, out, payload.shape())
    }

    /// Shares of `p * (1 if x < t else 0)` for public thresholds `t` (ring values, read as
    /// signed) and `payload` of shape `(k, len(thresholds), *x.shape)`, in one comparison's
    /// rounds: one opening of x and one set of tables serve every threshold.
    fn below_times<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, u64>,
        thresholds: Vec<u64>,
        payload: PyReadonlyArrayDyn<'py, u64>,
    ) -> Out<'py> {
        if payload.shape().get(1) != Some(&thresholds.len()) || payload.shape().get(2..) != Some(x.shape()) {
            return Err(Error::Shape(format!(
                "below_times payload of shape {:?} for {} thresholds and x of shape {:?}: it must be \
                 (k, len(thresholds), *x.shape)",
                payload.shape(),
                thresholds.len(),
                x.shape()
            )));
        }
        let (v, p) = (elems(&x), elems(&payload));
        let t: Vec<syft_mpc_ring::R64> = thresholds.into_iter().map(syft_mpc_ring::R64).collect();
        let out = self.run(py, |party| Ok(party.below_times(ring(&v), &t, ring(&p))?))?;
        ring_out(py, out, payload.shape())
    }

    /// Shares of `S = Σ_k cos_coef[k]·cos((k+1)θ) + sin_coef[k]·sin((k+1)θ)` encoded at
    /// `2**29 / divisor`, for `θ = 2π·(x·multiplier mod 2**32)/2**32` and coefficients whose
    /// magnitudes sum to at most 1, in two rounds (a dealer's trigonometric masks).
    fn fourier<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, u64>,
        multiplier: u64,
        cos_coef: Vec<f64>,
        sin_coef: Vec<f64>,
        divisor: u64,
    ) -> Out<'py> {
        let v = elems(&x);
        let out = self.run(py, |p| Ok(p.fourier(ring(&v), multiplier, &cos_coef, &sin_coef, divisor)?))?;
        ring_out(py, out, x.shape())
    }

    /// `(max(x, 0), 1 if x >= 0 else 0)` in ReLU's rounds (the mask is for a backward pass).
    fn relu_mask<'py>(&self, py: Python<'py>, x: PyReadonlyArrayDyn<'py, u64>) -> OutPair<'py> {
        let v = elems(&x);
        let (y, mask) = self.run(py, |p| Ok(p.relu_with_mask(ring(&v))?))?;
        Ok((ring_out(py, y, x.shape())?, ring_out(py, mask, x.shape())?))
    }

    /// Offline phase: fetches the correlated randomness for `requests` now, so the
    /// operations that use it later (same order, same shapes) run only their online
    /// phase. All parties pass the same list; material is consumed first-in first-out,
    /// and an operation that does not match the next preprocessed request raises.
    fn preprocess(&self, py: Python<'_>, requests: Vec<PyRef<'_, Request>>) -> Result<()> {
        let reqs: Vec<proto::Request> = requests.iter().map(|r| r.0.clone()).collect();
        self.run(py, |p| Ok(p.preprocess(&reqs)?))
    }

    /// Ends the session for this party (the last party tells the dealer to stop).
    /// Idempotent.
    fn close(&self, py: Python<'_>) -> Result<()> {
        py.detach(|| {
            let p = self.lock()?.take();
            match p {
                Some(p) => Ok(p.close()?),
                None => Ok(()),
            }
        })
    }

    /// Drops this party's connections without waiting for anything: peers blocked
    /// on it fail promptly with `PeerDisconnected`. Use after an error. Idempotent.
    fn abort(&self, py: Python<'_>) {
        py.detach(|| {
            let p = match self.inner.lock() {
                Ok(mut g) => g.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            drop(p);
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// `close()` on success, `abort()` when the block raised.
    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> Result<bool> {
        if exc_type.is_some_and(|t| !t.is_none()) {
            self.abort(py);
        } else {
            self.close(py)?;
        }
        Ok(false)
    }
}
