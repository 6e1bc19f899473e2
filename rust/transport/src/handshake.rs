//! Mutual authentication right after a TCP connect: each side proves knowledge of the
//! shared session key without sending it, bound to the session id, both party ids and
//! fresh nonces of both sides (so a recorded handshake cannot be replayed).
//!
//! Wire (each step is one framed message without a tag, both sides send at once, then read):
//! ```text
//! 1. hello   = "SMHI" | version u8 (= 2) | session id [16] | own party id u32 LE | nonce [32]
//! 2. proof   = HMAC-SHA256(key, LABEL | session | sender id u32 LE | receiver id u32 LE
//!                               | receiver's nonce | sender's nonce [| TLS binding [32]])  (32 bytes)
//! 3. verdict = 0x00 (accepted)  |  0x01 | UTF-8 reason (rejected)
//! ```
//! Over TLS ([`crate::tls`]) the handshake runs inside the tunnel and the proofs also cover
//! the connection's `tls-exporter` channel binding (RFC 9266), which both ends of one TLS
//! connection share and no other connection has: a proof cannot be relayed into another
//! TLS connection. Over plaintext TCP nothing is appended.
//! Proofs are checked in constant time (`hmac`'s `verify_slice`). Every message has a
//! 256-byte bound, and the whole handshake the timeout as one deadline (a peer sending a
//! byte at a time cannot stretch it). Failure mode: a wrong key, another session or
//! an unexpected party id gives [`TransportError::Auth`] naming the peer on both sides
//! (each side sends its verdict before closing); the connection is then dropped.

use crate::tcp::socket::deadline_after;
use crate::tcp::TcpChannel;
use crate::{Channel, TransportError};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::Duration;

const HELLO_MAGIC: [u8; 4] = *b"SMHI";
/// Handshake format version spoken by this build.
pub const HANDSHAKE_VERSION: u8 = 2;
const HELLO_LEN: usize = 4 + 1 + 16 + 4 + 32;
const PROOF_LABEL: &[u8] = b"syft-mpc transport v1 handshake proof\0";
const KEY_LABEL: &[u8] = b"syft-mpc session key v1\0";
const SESSION_KEYS_LABEL: &[u8] = b"syft-mpc transport v2 ";
const EXPORTER_LABEL: &[u8] = b"syft-mpc exporter v2\0";
/// Bound on every handshake message (and on the peer's rejection reason).
pub(crate) const HANDSHAKE_MAX: usize = 256;

type HmacSha256 = Hmac<Sha256>;

/// Derives the 32-byte session key from a shared token (any bytes, e.g. a random string
/// handed to every party out of band): `SHA-256("syft-mpc session key v1\0" || token)`.
pub fn key_from_token(token: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(KEY_LABEL);
    h.update(token);
    h.finalize().into()
}

/// A fresh random 16-byte session id (from the OS RNG).
pub fn random_session_id() -> Result<[u8; 16], TransportError> {
    let mut id = [0u8; 16];
    getrandom::getrandom(&mut id)
        .map_err(|e| TransportError::Setup(format!("OS random number generator failed: {e}")))?;
    Ok(id)
}

/// Hex form of a session id, for error messages.
pub fn session_hex(session: &[u8; 16]) -> String {
    session.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
struct Hello {
    session: [u8; 16],
    party: u32,
    nonce: [u8; 32],
}

impl Hello {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HELLO_LEN);
        v.extend_from_slice(&HELLO_MAGIC);
        v.push(HANDSHAKE_VERSION);
        v.extend_from_slice(&self.session);
        v.extend_from_slice(&self.party.to_le_bytes());
        v.extend_from_slice(&self.nonce);
        v
    }

    fn decode(b: &[u8]) -> Result<Hello, String> {
        if b.get(..4) != Some(&HELLO_MAGIC[..]) {
            return Err("the peer did not send a syft_mpc handshake".into());
        }
        if b.get(4) != Some(&HANDSHAKE_VERSION) {
            return Err(format!(
                "the peer speaks handshake version {:?}, this build speaks {HANDSHAKE_VERSION}; run the same syft_mpc version on every party",
                b.get(4)
            ));
        }
        if b.len() != HELLO_LEN {
            return Err(format!("handshake hello of {} bytes, expected {HELLO_LEN}", b.len()));
        }
        let mut session = [0u8; 16];
        session.copy_from_slice(&b[5..21]);
        let party = u32::from_le_bytes([b[21], b[22], b[23], b[24]]);
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(&b[25..57]);
        Ok(Hello { session, party, nonce })
    }
}

fn proof_mac(
    key: &[u8; 32],
    session: &[u8; 16],
    sender: u32,
    receiver: u32,
    receiver_nonce: &[u8; 32],
    sender_nonce: &[u8; 32],
    binding: Option<&[u8; 32]>,
) -> Result<HmacSha256, TransportError> {
    let mut mac = HmacSha256::new_from_slice(key).map_err(|e| TransportError::Setup(format!("HMAC key: {e}")))?;
    mac.update(PROOF_LABEL);
    mac.update(session);
    mac.update(&sender.to_le_bytes());
    mac.update(&receiver.to_le_bytes());
    mac.update(receiver_nonce);
    mac.update(sender_nonce);
    if let Some(b) = binding {
        mac.update(b);
    }
    Ok(mac)
}

/// The keys of one authenticated connection, as seen from one side.
pub(crate) struct SessionKeys {
    /// MAC key of the frames this side sends, and of those it receives.
    pub(crate) send: [u8; 32],
    pub(crate) recv: [u8; 32],
    /// Pseudorandom key behind [`TcpChannel::export_secret`].
    pub(crate) exporter: [u8; 32],
}

/// Derives both directions' keys and the exporter key (see the module docs). Both sides
/// get the same three values, with `send` and `recv` swapped.
fn session_keys(
    key: &[u8; 32],
    session: &[u8; 16],
    mine: (u32, &[u8; 32]),
    theirs: (u32, &[u8; 32]),
    binding: Option<&[u8; 32]>,
) -> Result<SessionKeys, TransportError> {
    // Nonces differ (an echoed one is rejected), so (id, nonce) orders the two sides even
    // if the ids were equal.
    let i_am_low = mine < theirs;
    let (low, high) = if i_am_low { (mine, theirs) } else { (theirs, mine) };
    let salt = [&low.1[..], &high.1[..]].concat();
    let hk = Hkdf::<Sha256>::new(Some(&salt), key);
    let expand = |what: &[u8]| -> Result<[u8; 32], TransportError> {
        let mut out = [0u8; 32];
        let mut info = [SESSION_KEYS_LABEL, what, b"\0", session].concat();
        info.extend_from_slice(&low.0.to_le_bytes());
        info.extend_from_slice(&high.0.to_le_bytes());
        if let Some(b) = binding {
            info.extend_from_slice(b);
        }
        hk.expand(&info, &mut out).map_err(|e| TransportError::Setup(format!("HKDF: {e}")))?;
        Ok(out)
    };
    let (low_to_high, high_to_low) = (expand(b"low to high")?, expand(b"high to low")?);
    let (send, recv) = if i_am_low { (low_to_high, high_to_low) } else { (high_to_low, low_to_high) };
    Ok(SessionKeys { send, recv, exporter: expand(b"exporter")? })
}

/// `HKDF-Expand(exporter, "syft-mpc exporter v2\0" | context, 32)`.
pub(crate) fn expand_exporter(exporter: &[u8; 32], context: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let info = [EXPORTER_LABEL, context].concat();
    // A 32-byte PRK is a valid HKDF-SHA256 PRK, and 32 bytes of output are within bounds.
    if let Ok(hk) = Hkdf::<Sha256>::from_prk(exporter) {
        let _ = hk.expand(&info, &mut out);
    }
    out
}

/// Makes untrusted peer text safe to embed in an error message.
fn sanitize(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Which peer ids a side accepts: `Ok(label)` names an acceptable peer, `Err(reason)` rejects.
pub(crate) type Identify<'a> = &'a dyn Fn(u32) -> Result<String, String>;

/// Runs the handshake on a fresh channel; returns the authenticated peer id, its label
/// and the connection's keys (for [`TcpChannel::start_session`]).
/// `rename` gives the channel's peer name once the peer's claimed id is known.
pub(crate) fn handshake(
    chan: &mut TcpChannel,
    my_id: u32,
    session: &[u8; 16],
    key: &[u8; 32],
    identify: Identify<'_>,
    rename: &dyn Fn(u32, Option<&str>) -> String,
    timeout: Duration,
) -> Result<(u32, String, SessionKeys), TransportError> {
    chan.set_timeout(timeout);
    chan.set_deadline(Some(deadline_after(timeout)));
    let mut nonce = [0u8; 32];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| TransportError::Setup(format!("OS random number generator failed: {e}")))?;
    chan.send(&Hello { session: *session, party: my_id, nonce }.encode())?;
    chan.refuse_tls_peer()?;
    let raw = chan.recv()?;
    let peer = Hello::decode(&raw)
        .map_err(|detail| chan.fail(TransportError::Malformed { peer: chan.peer().into(), detail }))?;
    let identity = identify(peer.party);
    chan.set_peer_name(rename(peer.party, identity.as_ref().ok().map(String::as_str)));

    let binding = chan.tls_binding().copied();
    let binding = binding.as_ref();
    let mine = proof_mac(key, session, my_id, peer.party, &peer.nonce, &nonce, binding)?.finalize().into_bytes();
    chan.send(&mine)?;
    let their_proof = chan.recv()?;

    let rejection = if peer.session != *session {
        Some(format!(
            "session id mismatch: the peer is in session {}, this party in {}; start every party with the same session",
            session_hex(&peer.session),
            session_hex(session)
        ))
    } else if let Err(reason) = &identity {
        Some(reason.clone())
    } else if peer.nonce == nonce {
        Some("the peer echoed this party's nonce (reflected connection)".into())
    } else if proof_mac(key, session, peer.party, my_id, &nonce, &peer.nonce, binding)?
        .verify_slice(&their_proof)
        .is_err()
    {
        Some(if binding.is_some() {
            "the peer's proof of the session key is wrong: the parties were given different keys or tokens \
             (or the TLS connection is relayed)"
                .into()
        } else {
            "the peer's proof of the session key is wrong: the parties were given different keys or tokens".into()
        })
    } else {
        None
    };

    let mut verdict = vec![u8::from(rejection.is_some())];
    if let Some(r) = &rejection {
        verdict.extend_from_slice(&r.as_bytes()[..r.len().min(HANDSHAKE_MAX - 1)]);
    }
    let sent = chan.send(&verdict);
    // Read the peer's verdict even when rejecting, so our verdict is not lost to a reset.
    let theirs = sent.and_then(|()| chan.recv());
    let peer_name = chan.peer().to_string();
    if let Some(detail) = rejection {
        return Err(chan.fail(TransportError::Auth { peer: peer_name, detail }));
    }
    let theirs = theirs?;
    match theirs.split_first() {
        Some((0, [])) => {
            let keys = session_keys(key, session, (my_id, &nonce), (peer.party, &peer.nonce), binding)?;
            Ok((peer.party, identity.unwrap_or_default(), keys))
        }
        Some((1, reason)) => Err(chan.fail(TransportError::Auth {
            peer: peer_name,
            detail: format!("the peer rejected this party: {}", sanitize(reason)),
        })),
        _ => Err(chan.fail(TransportError::Malformed { peer: peer_name, detail: "bad handshake verdict".into() })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_rejects() {
        let h = Hello { session: [3; 16], party: 7, nonce: [9; 32] };
        let enc = h.encode();
        let d = Hello::decode(&enc).unwrap();
        assert_eq!((d.session, d.party, d.nonce), (h.session, h.party, h.nonce));
        assert!(Hello::decode(&enc[..10]).is_err());
        assert!(Hello::decode(b"").is_err());
        let mut bad = enc.clone();
        bad[4] = 9;
        assert!(Hello::decode(&bad).unwrap_err().contains("version"));
    }

    #[test]
    fn proofs_bind_direction_and_key() {
        let k = key_from_token(b"secret");
        let (n0, n1) = ([1u8; 32], [2u8; 32]);
        let t = proof_mac(&k, &[0; 16], 0, 1, &n1, &n0, None).unwrap().finalize().into_bytes();
        assert!(proof_mac(&k, &[0; 16], 0, 1, &n1, &n0, None).unwrap().verify_slice(&t).is_ok());
        assert!(proof_mac(&k, &[0; 16], 1, 0, &n0, &n1, None).unwrap().verify_slice(&t).is_err());
        assert!(proof_mac(&key_from_token(b"other"), &[0; 16], 0, 1, &n1, &n0, None)
            .unwrap()
            .verify_slice(&t)
            .is_err());
        // Bound to the TLS connection: another binding (another connection) fails.
        let tb = proof_mac(&k, &[0; 16], 0, 1, &n1, &n0, Some(&[7; 32])).unwrap().finalize().into_bytes();
        assert!(proof_mac(&k, &[0; 16], 0, 1, &n1, &n0, Some(&[7; 32])).unwrap().verify_slice(&tb).is_ok());
        assert!(proof_mac(&k, &[0; 16], 0, 1, &n1, &n0, Some(&[8; 32])).unwrap().verify_slice(&tb).is_err());
        assert!(proof_mac(&k, &[0; 16], 0, 1, &n1, &n0, None).unwrap().verify_slice(&tb).is_err());
        assert_ne!(key_from_token(b"secret"), key_from_token(b"secret2"));
    }

    #[test]
    fn session_keys_agree_across_sides_and_differ_per_direction_and_connection() {
        let k = key_from_token(b"secret");
        let (n0, n1, n2) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let a = session_keys(&k, &[0; 16], (0, &n0), (5, &n1), None).unwrap();
        let b = session_keys(&k, &[0; 16], (5, &n1), (0, &n0), None).unwrap();
        assert_eq!((a.send, a.recv, a.exporter), (b.recv, b.send, b.exporter));
        assert_ne!(a.send, a.recv);
        // Another nonce (another connection), token, session or TLS binding: other keys.
        let other = |x: SessionKeys| assert!(x.send != a.send && x.recv != a.recv && x.exporter != a.exporter);
        other(session_keys(&k, &[0; 16], (0, &n2), (5, &n1), None).unwrap());
        other(session_keys(&key_from_token(b"secret2"), &[0; 16], (0, &n0), (5, &n1), None).unwrap());
        other(session_keys(&k, &[1; 16], (0, &n0), (5, &n1), None).unwrap());
        other(session_keys(&k, &[0; 16], (0, &n0), (5, &n1), Some(&[9; 32])).unwrap());
        assert_ne!(expand_exporter(&a.exporter, b"x"), expand_exporter(&a.exporter, b"y"));
    }
}
