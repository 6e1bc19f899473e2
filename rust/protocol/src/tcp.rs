//! Session set-up over TCP: parties form a full mesh among themselves and each
//! connects to the dealer, which listens. Every connection is authenticated with
//! the session key (see `syft_mpc_transport::handshake`).

use crate::{Dealer, Party, Result};
use std::net::{SocketAddr, TcpListener};
use syft_mpc_transport::{accept, connect, tcp_mesh, Channel, TcpConfig};

/// Names for error messages: `names[i]` for party i, `names[n]` for the dealer.
pub fn default_names(n_parties: usize) -> Vec<String> {
    (0..=n_parties).map(|i| if i == n_parties { "dealer".to_string() } else { format!("party{i}") }).collect()
}

/// Joins a session as party `id`: connects to the dealer at `dealer_addr`, then to every
/// other party (listening on `listener`, whose address is `addrs[id]`).
pub fn connect_party(
    id: usize,
    addrs: &[SocketAddr],
    listener: TcpListener,
    dealer_addr: SocketAddr,
    names: &[String],
    session: [u8; 16],
    key: &[u8; 32],
    cfg: &TcpConfig,
) -> Result<Party> {
    let n = addrs.len();
    let dealer = connect(dealer_addr, id as u32, n as u32, session, key, &names[n], cfg)?;
    let mesh = tcp_mesh(id as u32, addrs, listener, &names[..n], session, key, cfg)?;
    let peers = mesh.into_iter().map(|c| c.map(|c| Box::new(c) as Box<dyn Channel>)).collect();
    Party::new(id, peers, Box::new(dealer))
}

/// Serves as the dealer of an `n_parties` session: accepts one authenticated
/// connection from each party on `listener`, in any order, and sends their seeds.
pub fn accept_dealer(
    n_parties: usize,
    listener: &TcpListener,
    names: &[String],
    session: [u8; 16],
    key: &[u8; 32],
    cfg: &TcpConfig,
) -> Result<Dealer> {
    let mut waiting: Vec<u32> = (0..n_parties as u32).collect();
    let mut chans: Vec<Option<Box<dyn Channel>>> = (0..n_parties).map(|_| None).collect();
    while !waiting.is_empty() {
        let c = accept(listener, n_parties as u32, &waiting, session, key, names, cfg)?;
        let id = c.peer_id();
        waiting.retain(|&w| w != id);
        chans[id as usize] = Some(Box::new(c));
    }
    Dealer::new(chans.into_iter().map(|c| c.expect("every party connected")).collect())
}
