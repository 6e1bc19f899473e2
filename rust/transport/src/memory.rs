//! In-memory twin of the TCP channel: same trait, same failure semantics, no sockets.

use crate::{Channel, ChannelStats, TransportError, DEFAULT_TIMEOUT};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

pub struct MemoryChannel {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    peer: String,
    timeout: Duration,
    stats: ChannelStats,
}

impl std::fmt::Debug for MemoryChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryChannel(to {})", self.peer)
    }
}

/// Two connected ends; `names` are the names of the two sides (each end reports the other's).
pub fn memory_pair(names: (&str, &str)) -> (MemoryChannel, MemoryChannel) {
    let (tx_a, rx_b) = channel();
    let (tx_b, rx_a) = channel();
    let end = |tx, rx, peer: &str| MemoryChannel {
        tx,
        rx,
        peer: peer.to_string(),
        timeout: DEFAULT_TIMEOUT,
        stats: ChannelStats::default(),
    };
    (end(tx_a, rx_a, names.1), end(tx_b, rx_b, names.0))
}

/// A full mesh among `n` parties: `mesh[i][j]` is party i's channel to party j (`None` for i == j).
pub fn memory_mesh(n: usize) -> Vec<Vec<Option<MemoryChannel>>> {
    let mut mesh: Vec<Vec<Option<MemoryChannel>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = memory_pair((&format!("party {i}"), &format!("party {j}")));
            mesh[i][j] = Some(a);
            mesh[j][i] = Some(b);
        }
    }
    mesh
}

impl MemoryChannel {
    fn next(&mut self) -> Result<Vec<u8>, TransportError> {
        let msg = self.rx.recv_timeout(self.timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => TransportError::Timeout { peer: self.peer.clone(), timeout: self.timeout },
            RecvTimeoutError::Disconnected => {
                TransportError::Disconnected { peer: self.peer.clone(), detail: "the other end was dropped".into() }
            }
        })?;
        self.stats.bytes_received += msg.len() as u64;
        self.stats.messages_received += 1;
        Ok(msg)
    }
}

impl Channel for MemoryChannel {
    fn send(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        self.tx.send(msg.to_vec()).map_err(|_| TransportError::Disconnected {
            peer: self.peer.clone(),
            detail: "the other end was dropped".into(),
        })?;
        self.stats.bytes_sent += msg.len() as u64;
        self.stats.messages_sent += 1;
        Ok(())
    }
    fn recv_into(&mut self, buf: &mut [u8]) -> Result<(), TransportError> {
        let msg = self.next()?;
        if msg.len() != buf.len() {
            return Err(TransportError::UnexpectedLength {
                peer: self.peer.clone(),
                expected: buf.len(),
                got: msg.len(),
            });
        }
        buf.copy_from_slice(&msg);
        Ok(())
    }
    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        self.next()
    }
    fn exchange(&mut self, out: &[u8], inp: &mut [u8]) -> Result<(), TransportError> {
        // The queue is unbounded, so sending first cannot block.
        self.send(out)?;
        self.recv_into(inp)
    }
    fn peer(&self) -> &str {
        &self.peer
    }
    fn stats(&self) -> ChannelStats {
        self.stats
    }
    fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_exchanges_and_reports_drop() {
        let (mut a, mut b) = memory_pair(("alice", "bob"));
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 3];
            b.exchange(b"xyz", &mut buf).unwrap();
            assert_eq!(&buf, b"abc");
        });
        let mut buf = [0u8; 3];
        a.exchange(b"abc", &mut buf).unwrap();
        assert_eq!(&buf, b"xyz");
        t.join().unwrap();
        a.set_timeout(Duration::from_millis(50));
        let err = a.recv().unwrap_err().to_string();
        assert!(err.contains("bob"), "{err}");
    }
}
