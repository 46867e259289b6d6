//! TLS on the TCP listener, and the PROXY header before it: the layer a TCP
//! connection may have under the protocol sniffer.
//!
//! rustls runs sans I/O: the loop reads ciphertext into the connection's
//! `Layer` buffer (a fixed-size region, so a completion driver can read
//! into it like into a ring), the layer hands it to rustls, and the
//! plaintext rustls gives back goes into the connection's ring, where it is
//! sniffed and framed exactly as on a plain socket. Output goes the other
//! way: the connection's write queue into rustls, the records into the
//! layer's output buffer, and that to the socket. Nothing here blocks or
//! does I/O; `src/reactor/layer.rs` drives it.
//!
//! A plaintext connection on a listener without TLS or trusted proxies has
//! no layer at all (the loop pays one `is_some` per read and write). On a
//! listener with TLS, the first byte decides: `0x16` (a TLS handshake
//! record) starts TLS, anything else is plaintext (or refused, with
//! `tls-mode = only`).
//!
//! Memory per TLS connection is bounded: [`TLS_INPUT`] bytes of ciphertext
//! while a read is being handled (given back after it), rustls's own buffers (at most one record being deframed, 16 KiB of
//! plaintext read ahead, and [`TLS_BUFFER_LIMIT`] bytes of records to send),
//! and the output buffer, which holds what one call of `write_tls` made.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use super::proxy::{self, TrustedProxies};

/// Ciphertext read ahead per connection: the largest TLS record (16 KiB of
/// payload plus the header and the AEAD's expansion) and some.
pub const TLS_INPUT: usize = 18 * 1024;

/// Records rustls may hold for sending before its writer takes no more plaintext.
pub const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// The line a plaintext client gets on a port that serves TLS only.
pub const TLS_REQUIRED_REPLY: &[u8] = b"{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32007,\"message\":\
\"Unauthorized: this port speaks TLS only (tls-mode = only); connect with TLS, e.g. junction --tls\"},\"id\":null}\n";

/// Whether clients of a TLS listener must show a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCert {
    /// No client CA: certificates are not asked for.
    Off,
    /// A client without a certificate signed by the client CA is refused in the handshake.
    Required,
    /// A certificate is verified when shown; without one, the client authenticates with `rpc.auth`.
    Optional,
}

/// What the TCP listener does with TLS and PROXY headers (the `tls-*` and
/// `proxy-protocol-from` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key of the leaf.
    pub key: Option<PathBuf>,
    /// PEM CA certificates client certificates must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required.
    pub client_cert: ClientCert,
    /// Plaintext is served beside TLS on the same port.
    pub plaintext: bool,
    /// Who may send a PROXY v2 header.
    pub proxies: TrustedProxies,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            client_cert: ClientCert::Off,
            plaintext: false,
            proxies: TrustedProxies::default(),
        }
    }
}

impl RemoteConfig {
    /// True when the TCP listener speaks TLS.
    pub fn tls(&self) -> bool {
        self.cert.is_some()
    }

    /// True when the TCP listener takes plaintext connections.
    pub fn serves_plaintext(&self) -> bool {
        !self.tls() || self.plaintext
    }

    /// True when every TCP client must show a certificate the client CA signed.
    pub fn mutual(&self) -> bool {
        self.tls() && self.client_cert == ClientCert::Required
    }
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which option.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds nothing usable.
    #[error("{what} {path}: {why}")]
    Content {
        /// Which option.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the combination (a key that does not match the certificate...).
    #[error("TLS setup: {0}")]
    Setup(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let content = |why: String| TlsError::Content {
        what,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(content("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The TLS and PROXY settings the loop applies at accept, loaded once.
pub struct Remote {
    tls: Option<Arc<ServerConfig>>,
    plaintext: bool,
    proxies: TrustedProxies,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("tls", &self.tls.is_some())
            .field("plaintext", &self.plaintext)
            .field("proxies", &self.proxies)
            .finish()
    }
}

impl Remote {
    /// Reads the certificate, key and client CA files; None when neither
    /// TLS nor PROXY headers are configured (no connection gets a layer).
    pub fn load(config: &RemoteConfig) -> Result<Option<Arc<Remote>>, TlsError> {
        let tls = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => Some(Arc::new(server_config(config, cert, key)?)),
            _ => None,
        };
        if tls.is_none() && config.proxies.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Remote {
            tls,
            plaintext: config.serves_plaintext(),
            proxies: config.proxies.clone(),
        })))
    }

    /// True when plaintext connections are served beside TLS (or there is no TLS).
    pub fn serves_plaintext(&self) -> bool {
        self.plaintext
    }

    /// The layer a new TCP connection from `addr` starts with, if any.
    pub(crate) fn layer_for(&self, addr: Option<std::net::SocketAddr>) -> Option<Box<Layer>> {
        let proxied = self.proxies.trusts(addr);
        if !proxied && self.tls.is_none() {
            return None;
        }
        Some(Box::new(Layer {
            stage: if proxied { Stage::Proxy } else { Stage::Sniff },
            input: vec![0; proxy::MAX_HEADER],
            start: 0,
            end: 0,
            out: Vec::new(),
            sent: 0,
            tls: None,
            handshaken: false,
            failed: false,
            closing: false,
        }))
    }
}

fn server_config(config: &RemoteConfig, cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = certificates("tls-cert", cert)?;
    let pem = read("tls-key", key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Content {
        what: "tls-key",
        path: key.to_path_buf(),
        why: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) in it ({e})"),
    })?;
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &config.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("tls-client-ca", path)? {
                roots.add(ca).map_err(|e| TlsError::Content {
                    what: "tls-client-ca",
                    path: path.clone(),
                    why: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match config.client_cert {
                ClientCert::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Setup(format!("the certificate and key do not go together: {e}")))?;
    server.alpn_protocols.clear();
    // Stateless tickets would need a ticketer; session IDs stay in a small cache.
    server.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
    Ok(server)
}

/// The crypto provider: *ring* (a C compiler is all it needs to build; aws-lc-rs
/// would need cmake). rustls 0.23.48 deprecates it for lacking post-quantum
/// key exchange (X25519MLKEM768); classical X25519 and P-256 remain.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The name a verified client certificate stands for: its first SAN DNS
/// name, else its first SAN URI, else its subject's common name (CN).
pub fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    if let Some(dns) = parsed.valid_dns_names().next() {
        return Some(dns.to_string());
    }
    if let Some(uri) = parsed.valid_uri_names().next() {
        return Some(uri.to_string());
    }
    common_name(parsed.subject())
}

/// The first CN in a DER Name (the SEQUENCE's content): SETs of
/// SEQUENCE { OID, value }.
fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    while !name.is_empty() {
        let (tag, set, rest) = der(name)?;
        name = rest;
        if tag != 0x31 {
            return None;
        }
        let mut set = set;
        while !set.is_empty() {
            let (tag, attribute, rest) = der(set)?;
            set = rest;
            if tag != 0x30 || !attribute.starts_with(CN) {
                continue;
            }
            let (tag, value, _) = der(&attribute[CN.len()..])?;
            // UTF8String, PrintableString, IA5String, TeletexString.
            if matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
                return std::str::from_utf8(value).ok().map(str::to_string);
            }
        }
    }
    None
}

/// One DER element: its tag, its content and what follows.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Ciphertext buffers given back by connections between reads, for the
/// next read of any connection: a busy TLS connection takes one per read
/// without allocating (or zeroing) it, an idle one holds none. At most
/// [`SpareBuffers::MAX`] are kept (about 1 MiB).
#[derive(Debug, Default)]
pub(crate) struct SpareBuffers(Vec<Vec<u8>>);

impl SpareBuffers {
    /// Buffers kept at most.
    pub(crate) const MAX: usize = 64;

    fn take(&mut self) -> Vec<u8> {
        self.0.pop().unwrap_or_else(|| vec![0; TLS_INPUT])
    }

    fn give(&mut self, buffer: Vec<u8>) {
        if self.0.len() < Self::MAX && buffer.len() == TLS_INPUT {
            self.0.push(buffer);
        }
    }
}

/// Where a layered connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// From a trusted proxy: a PROXY header may come first.
    Proxy,
    /// The first byte tells TLS from plaintext.
    Sniff,
    /// TLS.
    Tls,
}

/// A connection's layer under the sniffer: the PROXY header and TLS.
pub(crate) struct Layer {
    pub(crate) stage: Stage,
    /// Bytes read and not yet handled: `input[start..end]`. Its length is
    /// fixed while a read may be posted into it.
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// Records to send: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    pub(crate) tls: Option<ServerConnection>,
    /// The handshake completed (and the connection was told so).
    pub(crate) handshaken: bool,
    /// The handshake or a record failed: the alert goes out, input is discarded.
    pub(crate) failed: bool,
    /// close_notify has been queued.
    pub(crate) closing: bool,
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("stage", &self.stage)
            .field("pending", &(self.end - self.start))
            .field("out", &(self.out.len() - self.sent))
            .field("handshaken", &self.handshaken)
            .finish()
    }
}

impl Layer {
    /// Bytes read and not yet handled.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.input[self.start..self.end]
    }

    /// `n` bytes of [`Layer::pending`] were handled.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The free space to read into (the pending bytes moved to the front
    /// first; the buffer made again if it was given back).
    pub(crate) fn room(&mut self, spare: &mut SpareBuffers) -> &mut [u8] {
        if self.input.is_empty() {
            self.input = match self.stage {
                Stage::Tls => spare.take(),
                Stage::Proxy | Stage::Sniff => vec![0; proxy::MAX_HEADER],
            };
        }
        if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.input[self.end..]
    }

    /// `n` bytes were read into [`Layer::room`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.input.len());
    }

    /// True when the input buffer is full.
    pub(crate) fn full(&self) -> bool {
        !self.input.is_empty() && self.start == 0 && self.end == self.input.len()
    }

    /// Gives the ciphertext buffer back once everything read was handled:
    /// an idle TLS connection then holds rustls's state only, not
    /// [`TLS_INPUT`] bytes (the next read makes it again). Call only with
    /// no read in flight into it.
    pub(crate) fn shed(&mut self, spare: &mut SpareBuffers) {
        if self.stage == Stage::Tls && self.start == self.end && !self.input.is_empty() {
            spare.give(std::mem::take(&mut self.input));
            self.start = 0;
            self.end = 0;
        }
    }

    /// Starts TLS with what was read so far as the first ciphertext.
    pub(crate) fn start_tls(&mut self, remote: &Remote, spare: &mut SpareBuffers) -> bool {
        let Some(config) = &remote.tls else {
            return false;
        };
        let Ok(mut tls) = ServerConnection::new(Arc::clone(config)) else {
            return false;
        };
        tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        // The preamble buffer (at most MAX_HEADER bytes) always fits.
        let pending = self.end - self.start;
        let mut input = spare.take();
        input[..pending].copy_from_slice(self.pending());
        self.input = input;
        self.start = 0;
        self.end = pending;
        self.tls = Some(tls);
        self.stage = Stage::Tls;
        true
    }

    /// Hands pending ciphertext to rustls (as much as it takes). Err when
    /// the stream is not TLS or a record fails: rustls has queued an alert.
    pub(crate) fn feed(&mut self) -> Result<rustls::IoState, rustls::Error> {
        let Some(tls) = self.tls.as_mut() else {
            return Err(rustls::Error::General("no TLS session".into()));
        };
        let mut pending = &self.input[self.start..self.end];
        let before = pending.len();
        // Never with nothing to give: rustls takes a read of 0 bytes for the
        // end of the stream. Err only when rustls holds a full plaintext
        // buffer: the rest is kept for later.
        if before > 0 {
            let _ = tls.read_tls(&mut pending);
        }
        let taken = before - pending.len();
        let state = tls.process_new_packets();
        self.consume(taken);
        state
    }

    /// True while there are records (or a queued alert) to send.
    pub(crate) fn has_output(&self) -> bool {
        self.sent < self.out.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// The records to send next, made from what rustls holds once the
    /// previous ones are all out. Call only with no write in flight.
    pub(crate) fn output(&mut self) -> &[u8] {
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            if let Some(tls) = self.tls.as_mut() {
                while tls.wants_write() {
                    if tls.write_tls(&mut self.out).is_err() {
                        break;
                    }
                }
            }
        }
        &self.out[self.sent..]
    }

    /// `n` bytes of [`Layer::output`] went out.
    pub(crate) fn sent(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
        if self.sent == self.out.len() && self.out.capacity() > 2 * TLS_BUFFER_LIMIT {
            self.out = Vec::new();
            self.sent = 0;
        }
    }

    /// The client certificate's name, once a certificate was verified.
    pub(crate) fn peer_name(&self) -> Option<String> {
        let certs = self.tls.as_ref()?.peer_certificates()?;
        certificate_name(certs.first()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walker_finds_the_common_name() {
        // SET { SEQUENCE { OID 2.5.4.6 (C), PrintableString "FR" } },
        // SET { SEQUENCE { OID 2.5.4.3 (CN), UTF8String "agent-7" } }
        let name = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'F', b'R', 0x31,
            0x10, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x07, b'a', b'g', b'e', b'n',
            b't', b'-', b'7',
        ];
        assert_eq!(common_name(&name).as_deref(), Some("agent-7"));
        assert_eq!(common_name(&name[..14]), None, "truncated");
        assert_eq!(common_name(&[]), None);
    }
}
