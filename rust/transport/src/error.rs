use std::time::Duration;

/// Everything that can go wrong between two parties. Each variant names the peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("timed out after {timeout:?} waiting for {peer}; it may have crashed or be overloaded")]
    Timeout { peer: String, timeout: Duration },
    #[error("{peer} closed the connection: {detail}")]
    Disconnected { peer: String, detail: String },
    #[error("malformed data from {peer}: {detail}; the connection was closed")]
    Malformed { peer: String, detail: String },
    #[error("message of {got} bytes from {peer}, expected {expected}; parties are out of step")]
    UnexpectedLength { peer: String, expected: usize, got: usize },
    #[error("message of {size} bytes to or from {peer} exceeds the limit of {limit} bytes")]
    TooLarge { peer: String, size: u64, limit: u64 },
    /// A frame failed its integrity check (see [`crate::frame`]): altered, replayed,
    /// reordered or injected between the parties. The connection is closed.
    #[error("integrity check failed on the connection with {peer}: {detail}; the connection was closed")]
    Integrity { peer: String, detail: String },
    #[error("authentication with {peer} failed: {detail}")]
    Auth { peer: String, detail: String },
    /// The TLS handshake failed: untrusted or mismatched certificate, or only one side uses TLS.
    #[error("TLS handshake with {peer} failed: {detail}")]
    Tls { peer: String, detail: String },
    #[error("I/O error with {peer}: {source}")]
    Io {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}
