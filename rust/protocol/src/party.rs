//! One party's end of an MPC session: channels to its peers and to the dealer,
//! its PRG streams, and the round primitives every protocol is built from.

use crate::correlated::{expand, Request, Share};
use crate::{ProtocolError, Result};
use std::collections::VecDeque;
use std::time::Duration;
use syft_mpc_ring::prg::{Prg, Seed};
use syft_mpc_ring::{as_ring, as_u64, kernels, R64};
use syft_mpc_transport::Channel;

/// Scratch buffers kept between operations: the masked values and one per peer.
/// A truncated 1024² product holds six at once on the last party: ε|δ and a peer's (2 Mi
/// words each), its c_i, the peer's truncation opening and the pair's ⌊r/d⌋ (1 Mi each).
const SCRATCH_BUFFERS: usize = 6;

/// Communication counters of one party (peers and dealer kept apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Communication rounds with the other parties.
    pub rounds: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Bytes received from the dealer (seeds and corrections).
    pub dealer_bytes_received: u64,
}

/// Whether a share's explicit components (see [`crate::correlated`]) are in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Explicit {
    Received,
    /// Requested from the dealer, not yet read from its channel.
    OnTheWire,
}

pub struct Party {
    id: usize,
    peers: Vec<Option<Box<dyn Channel>>>,
    dealer: Box<dyn Channel>,
    /// Stream shared with the dealer: this party's correlated randomness.
    dealer_prg: Prg,
    /// `pair_prgs[j]`: stream shared with party j, for shares of zero.
    pair_prgs: Vec<Option<Prg>>,
    /// Material obtained ahead of use ([`Party::prefetch`], [`Party::preprocess`]), in
    /// order, with whether the last party has read its explicit components yet.
    ready: VecDeque<(Request, Share, Explicit)>,
    /// Reusable buffers for openings (see [`Party::scratch`]).
    pool: Vec<Vec<u64>>,
    rounds: u64,
    closed: bool,
    /// Dealer answers (explicit material) sent for but not yet read, on the last party:
    /// raised with every request, lowered as each answer is read. An operation that
    /// failed in between (a peer vanished) leaves it raised, and the dealer stream is then
    /// out of step: nothing more may be asked of the dealer.
    explicit_unread: usize,
}

impl Party {
    /// Joins a session: receives this party's seed from the dealer and agrees a
    /// pairwise seed with every peer (the lower id picks it). `peers[id]` must be `None`.
    pub fn new(id: usize, mut peers: Vec<Option<Box<dyn Channel>>>, mut dealer: Box<dyn Channel>) -> Result<Party> {
        let n = peers.len();
        if n < 2 || id >= n {
            return Err(ProtocolError::Parties(format!(
                "party id {id} in a session of {n} parties (need n ≥ 2, id < n)"
            )));
        }
        if peers.iter().enumerate().any(|(j, p)| p.is_some() == (j == id)) {
            return Err(ProtocolError::Parties(format!(
                "party {id} needs a channel to every other party and none to itself"
            )));
        }
        let mut seed = [0u8; 16];
        dealer.recv_into(&mut seed)?;
        let mut pair_prgs: Vec<Option<Prg>> = (0..n).map(|_| None).collect();
        for (j, ch) in peers.iter_mut().enumerate() {
            let Some(ch) = ch else { continue };
            let s = if j > id {
                let s = Seed::random();
                ch.send(&s.0)?;
                s
            } else {
                let mut s = [0u8; 16];
                ch.recv_into(&mut s)?;
                Seed(s)
            };
            pair_prgs[j] = Some(Prg::new(s));
        }
        Ok(Party {
            id,
            peers,
            dealer,
            dealer_prg: Prg::new(Seed(seed)),
            pair_prgs,
            ready: VecDeque::new(),
            pool: Vec::new(),
            rounds: 0,
            closed: false,
            explicit_unread: 0,
        })
    }

    pub fn id(&self) -> usize {
        self.id
    }
    pub fn n_parties(&self) -> usize {
        self.peers.len()
    }
    pub(crate) fn is_last(&self) -> bool {
        self.id == self.n_parties() - 1
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats { rounds: self.rounds, ..Stats::default() };
        for ch in self.peers.iter().flatten() {
            let c = ch.stats();
            s.bytes_sent += c.bytes_sent;
            s.bytes_received += c.bytes_received;
        }
        s.dealer_bytes_received = self.dealer.stats().bytes_received;
        s
    }

    /// Bound on every wait for a peer or the dealer.
    pub fn set_timeout(&mut self, t: Duration) {
        self.peers.iter_mut().flatten().for_each(|c| c.set_timeout(t));
        self.dealer.set_timeout(t);
    }

    /// A buffer of at least `len` words from the scratch pool (contents unspecified; use
    /// `[..len]`). Reusing buffers matters: first-touch page faults on fresh 16 MB buffers
    /// cost as much as sending them over loopback. A pooled buffer keeps its full length,
    /// so reuse for a smaller request never zero-fills it again.
    pub(crate) fn scratch(&mut self, len: usize) -> Vec<u64> {
        let mut v = match self.pool.iter().position(|b| b.len() >= len) {
            Some(i) => return self.pool.swap_remove(i),
            None => self.pool.pop().unwrap_or_default(),
        };
        v.resize(len, 0);
        v
    }

    /// A buffer of exactly `len` ring elements from the scratch pool, for contents that are
    /// overwritten entirely (a dealer answer): see [`Party::scratch`].
    pub(crate) fn scratch_ring(&mut self, len: usize) -> Vec<R64> {
        let mut v = self.scratch(len);
        v.truncate(len);
        bytemuck::allocation::cast_vec(v)
    }

    /// Returns a ring buffer to the scratch pool.
    pub(crate) fn recycle_ring(&mut self, v: Vec<R64>) {
        if v.capacity() > 0 {
            self.recycle([bytemuck::allocation::cast_vec(v)]);
        }
    }

    /// Returns buffers to the scratch pool (it keeps the few largest).
    pub(crate) fn recycle(&mut self, bufs: impl IntoIterator<Item = Vec<u64>>) {
        self.pool.extend(bufs);
        self.pool.sort_by_key(|b| std::cmp::Reverse(b.len()));
        self.pool.truncate(SCRATCH_BUFFERS);
    }

    /// Sends `mine` to every peer and returns each peer's message of the same length,
    /// in increasing peer id, as the first `mine.len()` words of scratch buffers
    /// (recycle them). One round.
    ///
    /// Peers are visited in increasing id order; since every party follows the same
    /// total order and `exchange` is full duplex, the pairwise exchanges cannot deadlock.
    pub(crate) fn exchange_all(&mut self, mine: &[u64]) -> Result<Vec<Vec<u64>>> {
        self.rounds += 1;
        let mut out = Vec::with_capacity(self.n_parties() - 1);
        for j in 0..self.n_parties() {
            if j == self.id {
                continue;
            }
            let mut buf = self.scratch(mine.len());
            let ch = self.peers[j].as_mut().expect("a channel to every peer");
            ch.exchange(bytemuck::cast_slice(mine), bytemuck::cast_slice_mut(&mut buf[..mine.len()]))?;
            out.push(buf);
        }
        Ok(out)
    }

    /// Reveals additively shared values to all parties.
    /// Rounds: 1. Bytes: 8 per element to each peer.
    pub fn open(&mut self, x: &[R64]) -> Result<Vec<R64>> {
        // Summed into a new buffer in one pass (no copy of `x` first).
        let theirs = self.exchange_all(as_u64(x))?;
        let n = x.len();
        let mut out = kernels::add(x, as_ring(&theirs[0][..n]));
        for t in &theirs[1..] {
            kernels::add_assign(&mut out, as_ring(&t[..n]));
        }
        self.recycle(theirs);
        Ok(out)
    }

    /// [`Party::open`] reusing the share's buffer for the result.
    pub(crate) fn open_owned(&mut self, mut x: Vec<R64>) -> Result<Vec<R64>> {
        let theirs = self.exchange_all(as_u64(&x))?;
        let n = x.len();
        for t in &theirs {
            kernels::add_assign(&mut x, as_ring(&t[..n]));
        }
        self.recycle(theirs);
        Ok(x)
    }

    /// Reveals XOR-shared bit vectors (packed in u64 words). Rounds: 1.
    pub(crate) fn open_bits(&mut self, x: &[u64]) -> Result<Vec<u64>> {
        let mut acc = x.to_vec();
        let theirs = self.exchange_all(x)?;
        for t in &theirs {
            acc.iter_mut().zip(t).for_each(|(a, b)| *a ^= b);
        }
        self.recycle(theirs);
        Ok(acc)
    }

    /// Secret-shares `owner`'s plaintext `x` (`len` elements; `None` on the other
    /// parties) with no communication: every party adds a pseudo-random share of
    /// zero from its pairwise seeds (PRZS, as in CrypTen's `generate_random_sharing`
    /// of zero), and the owner adds `x`.
    /// Rounds: 0. Security: shares are pseudo-random to any coalition without the owner.
    pub fn input(&mut self, owner: usize, x: Option<&[R64]>, len: usize) -> Result<Vec<R64>> {
        if owner >= self.n_parties() {
            return Err(ProtocolError::Parties(format!(
                "input owner {owner} is not a party of this {}-party session",
                self.n_parties()
            )));
        }
        let mut share = match (owner == self.id, x) {
            (true, Some(x)) if x.len() == len => x.to_vec(),
            (true, Some(x)) => {
                return Err(ProtocolError::Shape(format!("input has {} elements, expected {len}", x.len())))
            }
            (true, None) => return Err(ProtocolError::Parties(format!("party {owner} owns the input but gave none"))),
            (false, _) => vec![R64::ZERO; len],
        };
        for (j, prg) in self.pair_prgs.iter_mut().enumerate() {
            let Some(prg) = prg else { continue };
            let z = prg.ring_vec(len);
            if j > self.id {
                kernels::add_assign(&mut share, &z);
            } else {
                kernels::sub_assign(&mut share, &z);
            }
        }
        Ok(share)
    }

    /// Offline phase: obtains the correlated randomness for `requests` now, so the
    /// operations that later use it (in the same order) only run their online phase.
    /// Every party calls this with the same list. The last party sends all requests
    /// before waiting for the first answer, so the dealer generates in bulk.
    pub fn preprocess(&mut self, requests: &[Request]) -> Result<()> {
        self.prefetch(requests)?;
        // Answers arrive in request order: read every one still pending, oldest first.
        let mut ready = std::mem::take(&mut self.ready);
        let received = ready.iter_mut().try_for_each(|(_, share, state)| {
            self.receive_explicit(share, *state)?;
            *state = Explicit::Received;
            Ok(())
        });
        self.ready = ready;
        received
    }

    /// Asks the dealer for the material of `requests` (the operations this party runs
    /// next, in order) without waiting for it: the dealer generates it while the parties
    /// compute, and each operation reads its part when it needs it. Every party calls this
    /// with the same list. Used to get a product's truncation pair while the product runs.
    pub fn prefetch(&mut self, requests: &[Request]) -> Result<()> {
        self.check_dealer_in_step()?;
        for r in requests {
            r.validate()?;
            if *r == Request::Bye {
                return Err(ProtocolError::Dealer("Bye is not a request for material".into()));
            }
        }
        let last = self.is_last();
        if last {
            for r in requests {
                self.dealer.send(&r.encode())?;
                self.explicit_unread += 1;
            }
        }
        let state = if last { Explicit::OnTheWire } else { Explicit::Received };
        for r in requests {
            let share = expand(r, &mut self.dealer_prg, last);
            self.ready.push_back((r.clone(), share, state));
        }
        Ok(())
    }

    /// This party's share of the correlated randomness for `req`: obtained ahead, or
    /// requested now. Unless it was preprocessed, the last party's explicit components are
    /// still on their way: the caller runs its first opening (which needs only the
    /// PRG-expanded components) and then calls [`Party::receive_explicit`], so the dealer
    /// generates while the parties exchange instead of before.
    pub(crate) fn material(&mut self, req: &Request) -> Result<(Share, Explicit)> {
        if self.ready.is_empty() {
            self.prefetch(std::slice::from_ref(req))?;
        }
        match self.ready.front() {
            Some((r, ..)) if r == req => {}
            // Kept: the operation it was obtained for may still run.
            Some((r, ..)) => {
                return Err(ProtocolError::Dealer(format!(
                    "material was obtained ahead for {r:?} but the next operation needs {req:?}; all parties \
                     must run the same sequence"
                )))
            }
            None => unreachable!("prefetch queued the request"),
        }
        let (_, share, state) = self.ready.pop_front().expect("checked above");
        Ok((share, state))
    }

    /// Receives the explicit components of `share` from the dealer if they are still on
    /// their way (the last party, on demand); requests are answered in order.
    pub(crate) fn receive_explicit(&mut self, share: &mut Share, state: Explicit) -> Result<()> {
        if state == Explicit::Received {
            return Ok(());
        }
        share.allocate_explicit(|len| self.scratch_ring(len));
        self.dealer.recv_into_parts(&mut share.explicit_mut())?;
        self.explicit_unread -= 1;
        Ok(())
    }

    /// Reads the explicit components of the next dealer answer still on the wire into
    /// `parts` on a second thread while `work` runs on this one (the last party only), and
    /// then `then`'s, the answer after it (a truncated product's truncation pair): the
    /// dealer's send of a large answer blocks until it is read, and with it the dealer's
    /// next request, so reading early lets the dealer move on and takes the transfer off
    /// the operation's end.
    pub(crate) fn receive_explicit_during<T>(
        &mut self,
        parts: &mut [&mut [u8]],
        mut then: Option<&mut Share>,
        work: impl FnOnce() -> T,
    ) -> Result<T> {
        if let Some(share) = then.as_deref_mut() {
            share.allocate_explicit(|len| self.scratch_ring(len));
        }
        let dealer = &mut self.dealer;
        let (out, received) = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let first = dealer.recv_into_parts(parts);
                let second = match (&first, then) {
                    (Ok(()), Some(share)) => Some(dealer.recv_into_parts(&mut share.explicit_mut())),
                    _ => None,
                };
                (first, second)
            });
            let out = work();
            (out, reader.join())
        });
        let (first, second) = match received {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        first?;
        self.explicit_unread -= 1;
        if let Some(r) = second {
            r?;
            self.explicit_unread -= 1;
        }
        Ok(out)
    }

    /// Whether no material was obtained ahead (the next operation asks for its own).
    pub(crate) fn nothing_ahead(&self) -> bool {
        self.ready.is_empty()
    }

    /// The dealer's answers must all be read, but for those of material still queued.
    fn check_dealer_in_step(&self) -> Result<()> {
        let queued = self.ready.iter().filter(|(.., state)| *state == Explicit::OnTheWire).count();
        if self.explicit_unread > queued {
            return Err(ProtocolError::Dealer(
                "an earlier operation failed before reading the dealer's answer, so the dealer stream is out of \
                 step; this session cannot continue, start a new one"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Ends the session: the last party tells the dealer it may stop serving.
    pub fn close(mut self) -> Result<()> {
        self.say_bye()
    }

    fn say_bye(&mut self) -> Result<()> {
        // With an answer left unread the dealer may be blocked sending it: dropping the
        // channel, not a goodbye queued behind it, is what ends its wait.
        if !self.closed && self.is_last() && self.explicit_unread == 0 {
            self.closed = true;
            self.dealer.send(&Request::Bye.encode())?;
        }
        self.closed = true;
        Ok(())
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        let _ = self.say_bye();
    }
}
