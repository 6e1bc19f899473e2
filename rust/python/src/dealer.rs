//! `Dealer`: the party that serves correlated randomness to one session.
//!
//! Like `Party`, it runs every call with the GIL released and takes its lock only after
//! releasing it.

use crate::config::{party_names, resolve, seconds, session_config, session_secrets, tls_config};
use crate::convert::stats_dict;
use crate::errors::{shape, Error, Result};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Mutex;
use syft_mpc_protocol as proto;
use syft_mpc_transport::{bind, TcpConfig};

/// The dealer (`crypto_provider`): serves correlated randomness to the parties of
/// one session. Run `serve()` on its own thread or process; it returns once the
/// parties close the session.
#[pyclass(frozen, module = "syft_mpc._native")]
pub struct Dealer {
    inner: Mutex<Option<proto::Dealer>>,
    n: usize,
}

impl Dealer {
    pub fn wrap(d: proto::Dealer, n: usize) -> Dealer {
        Dealer { inner: Mutex::new(Some(d)), n }
    }

    fn run<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut proto::Dealer) -> Result<T> + Send) -> Result<T> {
        py.detach(|| {
            let mut guard =
                self.inner.lock().map_err(|_| Error::Session("the dealer failed in an earlier call".into()))?;
            let d = guard.as_mut().ok_or_else(|| Error::Session("the dealer is closed".into()))?;
            f(d)
        })
    }
}

#[pymethods]
impl Dealer {
    /// The dealer of a TCP session of `n_parties` parties: listens on `dealer_addr`
    /// and accepts one authenticated connection from each party (see `Party.connect`
    /// for `token` and `session`). `timeout_s` bounds set-up; `idle_timeout_s` bounds
    /// how long `serve()` waits for the next request. With `tls_cert` and `tls_key` (PEM
    /// certificate chain and key) the parties must connect over TLS 1.3.
    #[staticmethod]
    #[pyo3(signature = (n_parties, dealer_addr, token, session="syft-mpc", timeout_s=30.0, idle_timeout_s=3600.0,
                        tls_cert=None, tls_key=None))]
    fn connect(
        py: Python<'_>,
        n_parties: usize,
        dealer_addr: &str,
        token: &str,
        session: &str,
        timeout_s: f64,
        idle_timeout_s: f64,
        tls_cert: Option<&str>,
        tls_key: Option<&str>,
    ) -> Result<Dealer> {
        if n_parties < 2 {
            return Err(shape(format!("a session needs at least 2 parties, got {n_parties}")));
        }
        let (key, sid) = session_secrets(token, session)?;
        let cfg = TcpConfig { tls: tls_config(tls_cert, tls_key, None, None)?, ..session_config(timeout_s)? };
        let idle = seconds(idle_timeout_s, "timeout")?;
        let addr = resolve(dealer_addr)?;
        let names = party_names(n_parties);
        // Set-up waits are bounded by `connect_timeout`; afterwards every wait for a
        // request by the idle timeout.
        let cfg = TcpConfig { timeout: idle, ..cfg };
        let d = py.detach(|| -> Result<proto::Dealer> {
            let listener = bind(addr)?;
            Ok(proto::tcp::accept_dealer(n_parties, &listener, &names, sid, &key, &cfg)?)
        })?;
        Ok(Dealer::wrap(d, n_parties))
    }

    #[getter]
    fn n_parties(&self) -> usize {
        self.n
    }

    fn __repr__(&self) -> String {
        format!("Dealer(n_parties={})", self.n)
    }

    /// Serves requests until the parties close the session; returns how many it served.
    fn serve(&self, py: Python<'_>) -> Result<u64> {
        self.run(py, |d| Ok(d.serve()?))
    }

    /// Traffic counters (bytes_sent, bytes_received; rounds are the parties').
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.run(py, |d| Ok(d.stats()))?;
        stats_dict(py, s)
    }

    /// Drops the dealer's connections. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let d = match self.inner.lock() {
                Ok(mut g) => g.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            drop(d);
        })
    }
}
