//! Arguments shared by sessions (`Party`, `Dealer`) and control connections (`Listener`,
//! `Connection`), checked in one place: secrets and party ids, addresses, timeouts, TCP and
//! TLS settings.
//!
//! Party-id convention of the control plane's handshake (it binds both ids into the proofs):
//! * a worker named `name` is party [`worker_party_id`]`(name)`: `1 +` the first 4 bytes of
//!   SHA-256(`"syft-mpc worker id\0" || name`) mod `2^32 − 1` (never 0);
//! * whoever connects to a worker (a driver, or another worker) is party [`CLIENT_ID`] (0).
//!
//! So a client that reaches the wrong worker (another name on that port) fails the
//! handshake with a clear error instead of talking to the wrong object store.

use crate::errors::{shape, Error, Result};
use pyo3::prelude::*;
use sha2::{Digest, Sha256};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;
use syft_mpc_transport::{key_from_token, TcpConfig, TlsConfig, TransportError};

/// The handshake party id of whoever connects to a worker (a driver, or another worker).
pub const CLIENT_ID: u32 = 0;

/// Least estimated entropy of a token, in bits. Whoever records a plaintext handshake can
/// test token guesses offline (one SHA-256 and one HMAC each, see the transport's
/// handshake): 2^128 guesses are out of reach, a short or patterned token is not.
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// An upper estimate of a token's entropy in bits, from its length and the characters it
/// draws on: `length × log2(alphabet)`, the alphabet being 16 when every character is a
/// hex digit (`secrets.token_hex`), else the sum of the classes present (digits 10,
/// lowercase 26, uppercase 26, other ASCII 33, non-ASCII 128). Right for random tokens;
/// it cannot tell words or a known phrase from random characters, so it only catches
/// short tokens and patterns: a token of fewer than 8 distinct characters ("aaaa…",
/// "abab…") counts as 0 bits (a random 32-digit hex token has about 14 distinct).
pub fn token_bits(token: &str) -> f64 {
    let chars: Vec<char> = token.chars().collect();
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return 0.0;
    }
    let alphabet = if chars.iter().all(char::is_ascii_hexdigit) {
        16.0
    } else {
        let has = |f: fn(&char) -> bool| chars.iter().any(f);
        [
            (has(char::is_ascii_digit), 10.0),
            (has(char::is_ascii_lowercase), 26.0),
            (has(char::is_ascii_uppercase), 26.0),
            (has(|c| c.is_ascii() && !c.is_ascii_alphanumeric()), 33.0),
            (has(|c| !c.is_ascii()), 128.0),
        ]
        .iter()
        .filter(|(present, _)| *present)
        .map(|(_, n)| n)
        .sum()
    };
    chars.len() as f64 * f64::log2(alphabet)
}

/// Refuses a token below [`MIN_TOKEN_BITS`] (estimated by [`token_bits`]) with an error
/// that says how to make a good one.
#[pyfunction]
pub fn check_token(token: &str) -> Result<()> {
    let bits = token_bits(token);
    if bits < MIN_TOKEN_BITS {
        return Err(shape(format!(
            "the token is too weak: about {bits:.0} bits of entropy (from its {} characters), at least \
             {MIN_TOKEN_BITS:.0} are needed, or whoever records one plaintext handshake can guess it offline; \
             generate one with python -c 'import secrets; print(secrets.token_hex(32))' and hand it to every \
             process through the environment or a file",
            token.chars().count()
        )));
    }
    Ok(())
}

/// Session key and id from the user's secrets — the one place they are derived.
/// key = the transport's `key_from_token` (SHA-256 of a domain label and the token);
/// session id = first 16 bytes of SHA-256(session). Errors: a token that fails
/// [`check_token`].
pub fn session_secrets(token: &str, session: &str) -> Result<([u8; 32], [u8; 16])> {
    check_token(token)?;
    let key = key_from_token(token.as_bytes());
    let digest = Sha256::digest(session.as_bytes());
    let mut sid = [0u8; 16];
    sid.copy_from_slice(&digest[..16]);
    Ok((key, sid))
}

/// The handshake party id of the worker named `name` (see the module docs); clients are party 0.
#[pyfunction]
pub fn worker_party_id(name: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(b"syft-mpc worker id\0");
    h.update(name.as_bytes());
    let d = h.finalize();
    1 + u32::from_le_bytes([d[0], d[1], d[2], d[3]]) % (u32::MAX - 1)
}

/// Party labels of a session's error messages; the dealer has id `n`.
pub fn party_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("party {i}")).chain(std::iter::once("dealer".to_string())).collect()
}

/// A positive number of seconds as a duration; `what` names the argument in the error.
pub fn seconds(s: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| shape(format!("{what} must be a positive number of seconds, got {s}")))
}

/// A set-up failure (bad address, port in use, ...).
pub fn setup(detail: String) -> Error {
    Error::Transport(TransportError::Setup(detail))
}

/// Resolves `"host:port"` (an IP or a name) to one socket address.
pub fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| setup(format!("cannot resolve address {addr:?} (expected \"host:port\"): {e}")))?
        .next()
        .ok_or_else(|| setup(format!("address {addr:?} resolves to nothing")))
}

/// TCP settings with set-up and every wait bounded by `timeout`.
fn bounded(timeout: Duration) -> TcpConfig {
    TcpConfig { timeout, connect_timeout: timeout, ..TcpConfig::default() }
}

/// TCP settings of a session: set-up and every wait bounded by `timeout_s`.
pub fn session_config(timeout_s: f64) -> Result<TcpConfig> {
    Ok(bounded(seconds(timeout_s, "timeout")?))
}

/// TCP settings of a control connection: set-up and every wait bounded by `timeout_s`,
/// messages of at most `max_message` bytes.
pub fn control_config(timeout_s: f64, max_message: u64) -> Result<TcpConfig> {
    let t = seconds(timeout_s, "timeout_s")?;
    if max_message == 0 {
        return Err(shape("max_message must be at least 1 byte"));
    }
    Ok(TcpConfig { max_message, ..bounded(t) })
}

/// TLS settings from PEM file paths: `cert` + `key` (this side's identity, for accepting),
/// `ca` (whom to trust, for connecting), `server_name` (what the peer's certificate must
/// name; default: the address connected to). All `None`: plaintext.
pub fn tls_config(
    cert: Option<&str>,
    key: Option<&str>,
    ca: Option<&str>,
    server_name: Option<&str>,
) -> Result<TlsConfig> {
    let mut tls = TlsConfig::default();
    match (cert, key) {
        (Some(c), Some(k)) => tls = tls.with_identity_files(Path::new(c), Path::new(k))?,
        (None, None) => {}
        _ => return Err(shape("tls_cert and tls_key go together: pass both (PEM files) or neither")),
    }
    if let Some(ca) = ca {
        tls = tls.with_trusted_ca_file(Path::new(ca))?;
    }
    if let Some(name) = server_name {
        if ca.is_none() {
            return Err(shape("tls_server_name needs tls_ca (the CA that signed the peer's certificate)"));
        }
        tls = tls.with_server_name(name)?;
    }
    Ok(tls)
}

/// The host part of `"host:port"` (without IPv6 brackets): the default TLS server name.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimates() {
        let ok = |t: &str| token_bits(t) >= MIN_TOKEN_BITS;
        assert!(ok(&"0123456789abcdef".repeat(2))); // 32 hex digits: 128 bits, as secrets.token_hex(16)
        assert!(ok("00112233445566770011223344556677")); // 8 distinct hex digits still count as hex
        assert!(!ok(&"0123456789abcdef".repeat(2)[..31]));
        assert!(ok("2f1c9e0d7a6b5843cafe0123456789ab")); // hex
        assert!(ok("Xq3-v_9ZpL0aTr7mNc2wEy")); // secrets.token_urlsafe(16)
        assert!(!ok("secret"));
        assert!(!ok("not-the-right-token"));
        assert!(!ok(&"ab".repeat(40))); // patterns of few characters
        assert!(!ok(""));
        assert!(ok("another-token-0123456789"));
    }
}

/// The implementation of the per-frame MAC's universal hash (POLYVAL) that connections of
/// this process use: `{"chosen": name, "available": [names, best first]}`. Every path gives
/// the same tags; the choice only changes speed.
#[pyfunction]
pub fn frame_mac_info(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    use syft_mpc_transport::polyval_hash::Path;
    let d = pyo3::types::PyDict::new(py);
    d.set_item("chosen", Path::best().name())?;
    d.set_item("available", Path::available().into_iter().map(Path::name).collect::<Vec<_>>())?;
    Ok(d)
}
