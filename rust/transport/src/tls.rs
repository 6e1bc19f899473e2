//! Optional TLS 1.3 (RFC 8446) under the framed channel: rustls with the ring provider.
//!
//! TLS adds confidentiality, integrity and server authentication: the connecting side
//! checks the peer's certificate chain against the CA it was given and the certificate's
//! name against the address (or name) it connected to. The HMAC handshake of
//! [`crate::handshake`] still runs, inside the tunnel: it proves knowledge of the token in
//! both directions (TLS here does not authenticate clients), and its proofs are bound to
//! this TLS connection by the `tls-exporter` channel binding (RFC 9266; an exporter value,
//! RFC 8446 §7.5), so a peer holding some valid certificate cannot relay a handshake from
//! one TLS connection into another. The per-frame MAC of [`crate::frame`] runs inside the
//! tunnel too: one wire format and one code path for both modes.
//!
//! Only TLS 1.3 is offered; session resumption and tickets are off (connections are long
//! lived, and a fresh full handshake keeps the exporter binding simple).
//!
//! IO: one rustls connection is one state machine, but a channel reads and writes on two
//! threads at once (full-duplex `exchange`). The connection sits behind a mutex that is
//! held only while encrypting or decrypting in memory; socket reads and writes happen on
//! two clones of the socket without it, so a reader blocked on the network never stalls
//! the writer. Records the reader makes the connection queue (a KeyUpdate answer, RFC 8446
//! §4.6.3) go out with the writer's next record, which is when the RFC requires them.

use crate::frame::FRAME_MAGIC;
use crate::tcp::socket::{deadline_after, record_error, tls_error, SocketReader};
use crate::TransportError;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, Connection, RootCertStore, ServerConfig};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Plaintext encrypted per lock of the connection (the rest of a larger write waits for the
/// next round): bounds both the time the reader may wait for the lock and the buffer.
/// (256 KiB was no faster for 100 MiB full-duplex exchanges.)
const WRITE_CHUNK: usize = 64 * 1024;
/// Raw bytes read from the socket per system call.
const READ_CHUNK: usize = 256 * 1024;
/// RFC 9266 label of the `tls-exporter` channel binding (32 bytes, empty context).
const BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// TLS settings of one side; the default is plaintext.
///
/// * `server`: this side's certificate chain and key. Connections it *accepts* use TLS.
/// * `client`: the CA(s) this side trusts. Connections it *makes* use TLS and check the
///   peer's certificate.
/// * `server_name`: the name the peer's certificate must carry when connecting; by default
///   the IP address connected to.
///
/// A mesh of parties (each both connects and accepts) needs both `server` and `client`.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    pub server: Option<Arc<ServerConfig>>,
    pub client: Option<Arc<ClientConfig>>,
    pub server_name: Option<ServerName<'static>>,
}

fn setup(detail: String) -> TransportError {
    TransportError::Setup(detail)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file, with an error that names it.
pub fn read_pem_file(path: &Path, what: &str) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|e| setup(format!("cannot read the {what} file {}: {e}", path.display())))
}

fn certificates(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup(format!("bad PEM in {origin}: {e}")))?;
    if certs.is_empty() {
        return Err(setup(format!("no certificate in {origin} (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")")));
    }
    Ok(certs)
}

impl TlsConfig {
    /// True when connections made or accepted use TLS.
    pub fn is_enabled(&self) -> bool {
        self.server.is_some() || self.client.is_some()
    }

    /// Accepts connections with TLS, presenting `cert_chain_pem` (this side's certificate
    /// first, then any intermediates) and its private key `key_pem` (PKCS#8, PKCS#1 or
    /// SEC1). `origin` names where they came from, for errors.
    pub fn with_identity(
        mut self,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        origin: &str,
    ) -> Result<Self, TransportError> {
        let certs = certificates(cert_chain_pem, origin)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            setup(format!(
                "no usable private key in {origin} ({e}); expected a PEM \"-----BEGIN PRIVATE KEY-----\" block"
            ))
        })?;
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| setup(format!("TLS set-up: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                setup(format!(
                    "cannot use the certificate and key of {origin}: {e}; is the key the one of the first certificate?"
                ))
            })?;
        cfg.send_tls13_tickets = 0;
        self.server = Some(Arc::new(cfg));
        Ok(self)
    }

    /// [`with_identity`](Self::with_identity) from PEM files.
    pub fn with_identity_files(self, cert_chain: &Path, key: &Path) -> Result<Self, TransportError> {
        let (c, k) = (read_pem_file(cert_chain, "TLS certificate")?, read_pem_file(key, "TLS private key")?);
        self.with_identity(&c, &k, &format!("{} and {}", cert_chain.display(), key.display()))
    }

    /// Makes connections with TLS, trusting the CA certificate(s) in `ca_pem` (a peer's
    /// chain must lead to one of them).
    pub fn with_trusted_ca(mut self, ca_pem: &[u8], origin: &str) -> Result<Self, TransportError> {
        let mut roots = RootCertStore::empty();
        for c in certificates(ca_pem, origin)? {
            roots.add(c).map_err(|e| setup(format!("cannot trust the CA certificate in {origin}: {e}")))?;
        }
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| setup(format!("TLS set-up: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.resumption = rustls::client::Resumption::disabled();
        self.client = Some(Arc::new(cfg));
        Ok(self)
    }

    /// [`with_trusted_ca`](Self::with_trusted_ca) from a PEM file.
    pub fn with_trusted_ca_file(self, ca: &Path) -> Result<Self, TransportError> {
        let pem = read_pem_file(ca, "TLS CA certificate")?;
        self.with_trusted_ca(&pem, &ca.display().to_string())
    }

    /// The name (DNS name or IP address) the peer's certificate must carry when connecting.
    pub fn with_server_name(mut self, name: &str) -> Result<Self, TransportError> {
        let n = ServerName::try_from(name.to_string())
            .map_err(|e| setup(format!("{name:?} is not a valid TLS server name: {e}")))?;
        self.server_name = Some(n);
        Ok(self)
    }

    /// A client connection to `addr`, when connections made use TLS.
    pub(crate) fn client_connection(&self, addr: SocketAddr) -> Result<Option<Connection>, TransportError> {
        let Some(cfg) = &self.client else { return Ok(None) };
        let name = self.server_name.clone().unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let conn = rustls::ClientConnection::new(cfg.clone(), name)
            .map_err(|e| setup(format!("cannot start a TLS connection to {addr}: {e}")))?;
        Ok(Some(conn.into()))
    }

    /// A server connection, when accepted connections use TLS.
    pub(crate) fn server_connection(&self) -> Result<Option<Connection>, TransportError> {
        let Some(cfg) = &self.server else { return Ok(None) };
        let conn = rustls::ServerConnection::new(cfg.clone())
            .map_err(|e| setup(format!("cannot start a TLS connection: {e}")))?;
        Ok(Some(conn.into()))
    }
}

fn lock(conn: &Mutex<Connection>) -> io::Result<MutexGuard<'_, Connection>> {
    conn.lock().map_err(|_| io::Error::other("the TLS state was poisoned by a panic"))
}

/// The receiving half: raw bytes come from its socket clone without the lock; the lock is
/// taken to decrypt them and to copy plaintext out.
pub(crate) struct TlsReader {
    pub(crate) sock: SocketReader,
    conn: Arc<Mutex<Connection>>,
    raw: Box<[u8]>,
    start: usize,
    end: usize,
}

impl TlsReader {
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.sock.sock
    }

    /// One socket read into the (empty) raw buffer; end of stream is an error.
    fn recv_raw(&mut self) -> io::Result<()> {
        loop {
            match self.sock.read(&mut self.raw) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    (self.start, self.end) = (0, n);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands buffered raw bytes to rustls until plaintext is available or they are used up.
    fn feed(&mut self, c: &mut Connection) -> io::Result<()> {
        feed(&self.raw[..self.end], &mut self.start, c)
    }
}

/// Hands `raw[*start..]` to rustls (advancing `start`) until plaintext is available or the
/// bytes are used up.
fn feed(raw: &[u8], start: &mut usize, c: &mut Connection) -> io::Result<()> {
    while *start < raw.len() {
        let n = c.read_tls(&mut &raw[*start..])?;
        if n == 0 {
            // The peer sent close_notify: nothing after it counts.
            *start = raw.len();
            break;
        }
        *start += n;
        let state = c.process_new_packets().map_err(record_error)?;
        if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
            break;
        }
    }
    Ok(())
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut c = lock(&self.conn)?;
                match c.reader().read(out) {
                    Ok(n) => return Ok(n), // 0: the peer closed cleanly (close_notify)
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.start < self.end {
                    feed(&self.raw[..self.end], &mut self.start, &mut c)?;
                    continue;
                }
            }
            self.recv_raw()?;
        }
    }
}

/// The sending half: encrypts under the lock into its own buffer, then writes that buffer
/// to its socket clone without the lock.
pub(crate) struct TlsWriter {
    sock: TcpStream,
    conn: Arc<Mutex<Connection>>,
    out: Vec<u8>,
    /// False while a write is under way (or failed part way): then no close_notify is sent,
    /// it would land in the middle of a record.
    clean: bool,
}

impl TlsWriter {
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Moves every queued TLS record into `out` (the caller holds the lock).
    fn take_records(out: &mut Vec<u8>, c: &mut Connection) -> io::Result<()> {
        out.clear();
        while c.wants_write() {
            c.write_tls(out)?;
        }
        Ok(())
    }

    fn send_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.clean = false;
        self.sock.write_all(&self.out)?;
        self.clean = true;
        Ok(())
    }
}

impl Write for TlsWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let n = {
            let mut c = lock(&self.conn)?;
            let n = c.writer().write(data)?;
            Self::take_records(&mut self.out, &mut c)?;
            n
        };
        self.send_out()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TlsWriter {
    /// Best effort close_notify (RFC 8446 §6.1), never blocking: the channel is going away.
    fn drop(&mut self) {
        if !self.clean {
            return;
        }
        if let Ok(mut c) = self.conn.lock() {
            c.send_close_notify();
            if Self::take_records(&mut self.out, &mut c).is_err() {
                return;
            }
        }
        if !self.out.is_empty() && self.sock.set_nonblocking(true).is_ok() {
            let _ = self.sock.write(&self.out);
        }
    }
}

/// Why a TLS handshake failed, with what to check.
fn explain(e: &rustls::Error, is_client: bool) -> String {
    use rustls::Error as E;
    let hint = match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "is the peer's certificate signed by the CA passed as tls_ca?"
        }
        E::InvalidCertificate(CertificateError::NotValidForName)
        | E::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "the certificate does not name the address connected to: connect by a name or IP address listed \
             in its subjectAltName, or pass tls_server_name"
        }
        E::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => "check the certificate's validity dates and both machines' clocks",
        E::InvalidCertificate(_) => "check the peer's certificate chain (tls_cert) against the CA (tls_ca)",
        E::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::UnsupportedCertificate,
        ) if !is_client => {
            "the client rejected this side's certificate: does it trust the CA that signed it (tls_ca), and \
             does the certificate name the address the client connects to?"
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the peer does not seem to speak TLS 1.3"
        }
        E::PeerIncompatible(_) => "both sides must support TLS 1.3",
        _ => "",
    };
    if hint.is_empty() {
        e.to_string()
    } else {
        format!("{e} — {hint}")
    }
}

fn plaintext_peer(is_client: bool) -> String {
    if is_client {
        "the peer answered without TLS (plaintext syft_mpc frames): give it a certificate and key (tls_cert, \
         tls_key), or connect without tls_ca"
            .into()
    } else {
        "the client does not use TLS (it sent plaintext syft_mpc frames): connect with tls_ca set to the CA that \
         signed this side's certificate"
            .into()
    }
}

/// Runs the TLS handshake on `stream` (timeouts already set) to completion, then returns
/// the two halves and the connection's channel binding. Errors name `peer` and say what to
/// check; a fatal alert is sent to the peer first when rustls has one.
pub(crate) fn establish(
    stream: TcpStream,
    mut conn: Connection,
    peer: &str,
    timeout: Duration,
) -> Result<(TlsReader, TlsWriter, [u8; 32]), TransportError> {
    let is_client = matches!(conn, Connection::Client(_));
    conn.set_buffer_limit(Some(WRITE_CHUNK));
    let fail = |detail: String| TransportError::Tls { peer: peer.to_string(), detail };
    let io_fail = |e: io::Error| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => TransportError::Timeout { peer: peer.to_string(), timeout },
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::NotConnected => fail(format!(
            "the connection was closed during the TLS handshake ({e}); {}",
            if is_client {
                "does the peer listen with TLS (tls_cert, tls_key), and accept this client?"
            } else {
                "the client may not use TLS, or may have rejected this side's certificate"
            }
        )),
        _ => TransportError::Io { peer: peer.to_string(), source: e },
    };
    let wsock = stream.try_clone().map_err(|e| TransportError::Io { peer: peer.to_string(), source: e })?;
    let conn = Arc::new(Mutex::new(conn));
    // The TLS handshake as a whole is bounded by the timeout, as the HMAC handshake after it is.
    let sock = SocketReader { sock: stream, deadline: Some(deadline_after(timeout)) };
    let mut r = TlsReader { sock, conn: conn.clone(), raw: vec![0u8; READ_CHUNK].into(), start: 0, end: 0 };
    let mut w = TlsWriter { sock: wsock, conn, out: Vec::new(), clean: true };
    let mut first_read = true;
    loop {
        let handshaking = {
            let mut c = lock(&w.conn).map_err(io_fail)?;
            TlsWriter::take_records(&mut w.out, &mut c).map_err(io_fail)?;
            c.is_handshaking()
        };
        w.send_out().map_err(io_fail)?;
        if !handshaking {
            break;
        }
        if r.start == r.end {
            r.recv_raw().map_err(io_fail)?;
        }
        let plaintext = first_read && r.raw[r.start..r.end].starts_with(&FRAME_MAGIC);
        first_read = false;
        let mut c = lock(&w.conn).map_err(io_fail)?;
        if let Err(e) = r.feed(&mut c) {
            // Last gasp: tell the peer why (rustls queued an alert), without waiting.
            let _ = TlsWriter::take_records(&mut w.out, &mut c);
            drop(c);
            let _ = w.send_out();
            w.clean = false;
            return Err(match (plaintext, tls_error(&e)) {
                (true, _) => fail(plaintext_peer(is_client)),
                (false, Some(t)) => fail(explain(t, is_client)),
                (false, None) => io_fail(e),
            });
        }
        if plaintext {
            // rustls accepted bytes that begin like a frame: not possible for real TLS.
            w.clean = false;
            return Err(fail(plaintext_peer(is_client)));
        }
    }
    let binding = lock(&w.conn)
        .map_err(io_fail)?
        .export_keying_material([0u8; 32], BINDING_LABEL, None)
        .map_err(|e| fail(format!("cannot derive the channel binding: {e}")))?;
    Ok((r, w, binding))
}

/// Bytes a TLS peer sends first: a handshake record (a ClientHello) or an alert, both
/// `type | 0x03 | minor version` (RFC 8446 §5.1).
pub(crate) fn looks_like_tls(first: &[u8]) -> Option<&'static str> {
    match first {
        [0x16, 0x03, ..] => Some(
            "the client speaks TLS but this side does not: start this side with a certificate and key \
             (tls_cert, tls_key), or connect without tls_ca",
        ),
        [0x15, 0x03, ..] => Some(
            "the peer speaks TLS (it answered with a TLS alert) but this side does not: connect with tls_ca \
             set to the CA that signed the peer's certificate",
        ),
        _ => None,
    }
}
