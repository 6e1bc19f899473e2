//! `memory_session`: an in-process session, its parties and dealer connected by in-memory
//! channels.

use crate::config::seconds;
use crate::dealer::Dealer;
use crate::errors::{shape, Result};
use crate::party::Party;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use syft_mpc_protocol as proto;
use syft_mpc_transport::{memory_mesh, memory_pair, Channel};

/// An in-process session: `n_parties` parties and a dealer connected by in-memory
/// channels. Returns `(parties, dealer)`; run each party (and `dealer.serve()`) on
/// its own thread. `timeout_s` bounds every wait of the parties;
/// `dealer_timeout_s` bounds how long the dealer waits for the next request.
#[pyfunction]
#[pyo3(signature = (n_parties, timeout_s=30.0, dealer_timeout_s=3600.0))]
pub fn memory_session<'py>(
    py: Python<'py>,
    n_parties: usize,
    timeout_s: f64,
    dealer_timeout_s: f64,
) -> PyResult<Bound<'py, PyTuple>> {
    if n_parties < 2 {
        return Err(shape(format!("a session needs at least 2 parties, got {n_parties}")).into());
    }
    let t = seconds(timeout_s, "timeout")?;
    let td = seconds(dealer_timeout_s, "timeout")?;
    let (parties, dealer) = py.detach(|| -> Result<(Vec<proto::Party>, proto::Dealer)> {
        let mesh = memory_mesh(n_parties);
        let mut to_dealer: Vec<Box<dyn Channel>> = Vec::with_capacity(n_parties);
        let mut from_parties: Vec<Box<dyn Channel>> = Vec::with_capacity(n_parties);
        for i in 0..n_parties {
            // Each end reports the other's name: `party_end` talks to "dealer".
            let (mut party_end, mut dealer_end) = memory_pair((&format!("party {i}"), "dealer"));
            party_end.set_timeout(t);
            dealer_end.set_timeout(td);
            to_dealer.push(Box::new(party_end));
            from_parties.push(Box::new(dealer_end));
        }
        // Setup exchanges seeds, so every party and the dealer start concurrently.
        std::thread::scope(|s| {
            let dealer = s.spawn(move || proto::Dealer::new(from_parties));
            let handles: Vec<_> = mesh
                .into_iter()
                .zip(to_dealer)
                .enumerate()
                .map(|(i, (row, d))| {
                    let peers: Vec<Option<Box<dyn Channel>>> = row
                        .into_iter()
                        .map(|c| {
                            c.map(|mut c| {
                                c.set_timeout(t);
                                Box::new(c) as Box<dyn Channel>
                            })
                        })
                        .collect();
                    s.spawn(move || proto::Party::new(i, peers, d))
                })
                .collect();
            let dealer = dealer.join().expect("dealer setup panicked")?;
            let parties = handles
                .into_iter()
                .map(|h| h.join().expect("party setup panicked"))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok((parties, dealer))
        })
    })?;
    let list = PyList::empty(py);
    for p in parties {
        list.append(Bound::new(py, Party::wrap(p))?)?;
    }
    let dealer = Bound::new(py, Dealer::wrap(dealer, n_parties))?;
    PyTuple::new(py, [list.into_any(), dealer.into_any()])
}
