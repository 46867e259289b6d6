//! The client's TLS: a rustls session shared by the reading and the
//! writing half of a connection.
//!
//! The client reads and writes through two handles on one socket (a
//! [`super::Responder`] may answer from another thread while the reader
//! blocks), so a single blocking `StreamOwned` does not fit: the session
//! sits behind a mutex that is held only while rustls works, never while
//! the socket is waited on. The handshake completes in
//! [`TlsOptions::connect`], before the halves are made.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Where the system's CA bundle is looked for when no `ca` is given.
pub const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How to talk TLS to the daemon (`junction --tls`): which CA to trust,
/// the client certificate for mutual TLS, and the name to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates the daemon's certificate must chain to
    /// (None: the system's CA bundle).
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS), with `key`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// The name the daemon's certificate must carry (None: the host part of the address).
    pub server_name: Option<String>,
}

/// Why TLS could not be set up (files, names); handshake failures are I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read or holds nothing usable.
    #[error("{what} {path}: {why}")]
    File {
        /// Which option.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// No CA given and no system bundle found.
    #[error("no CA to check the daemon's certificate with: pass --ca FILE")]
    NoCa,
    /// The server name is not a DNS name or an IP address.
    #[error("{0:?} is not a server name (a DNS name or an IP address)")]
    ServerName(String),
    /// A client certificate without its key, or the reverse, or a mismatch.
    #[error("client certificate: {0}")]
    ClientCert(String),
}

fn pem_certs(
    what: &'static str,
    path: &PathBuf,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let fail = |why: String| TlsSetupError::File {
        what,
        path: path.clone(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(certs)
}

impl TlsOptions {
    /// The rustls configuration these options make.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        let ca = match &self.ca {
            Some(path) => path.clone(),
            None => SYSTEM_CA_FILES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or(TlsSetupError::NoCa)?,
        };
        for cert in pem_certs("ca", &ca)? {
            // A system bundle may hold certificates webpki does not parse: skip them.
            let added = roots.add(cert);
            if self.ca.is_some() {
                added.map_err(|e| TlsSetupError::File {
                    what: "ca",
                    path: ca.clone(),
                    why: e.to_string(),
                })?;
            }
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::ClientCert(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = pem_certs("cert", cert)?;
                let pem = std::fs::read(key).map_err(|e| TlsSetupError::File {
                    what: "key",
                    path: key.clone(),
                    why: e.to_string(),
                })?;
                let key_der =
                    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsSetupError::File {
                        what: "key",
                        path: key.clone(),
                        why: format!("no PEM private key in it ({e})"),
                    })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| TlsSetupError::ClientCert(e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsSetupError::ClientCert(
                    "--cert and --key go together".into(),
                ));
            }
        };
        Ok(Arc::new(config))
    }

    /// The name checked against the daemon's certificate for `addr` (`host:port`).
    pub fn name_for(&self, addr: &str) -> Result<ServerName<'static>, TlsSetupError> {
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => addr
                .rsplit_once(':')
                .map_or(addr, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']'),
        };
        ServerName::try_from(host.to_string()).map_err(|_| TlsSetupError::ServerName(host.into()))
    }

    /// Completes a handshake on `tcp` with the daemon at `addr`.
    pub(crate) fn connect(&self, tcp: TcpStream, addr: &str) -> io::Result<TlsSocket> {
        let config = self.client_config().map_err(io::Error::other)?;
        let name = self.name_for(addr).map_err(io::Error::other)?;
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut stream = &tcp;
        while conn.is_handshaking() {
            conn.complete_io(&mut stream)?;
        }
        // A TLS 1.3 client sends its Finished in the last flight: push it out.
        while conn.wants_write() {
            conn.write_tls(&mut stream)?;
        }
        Ok(TlsSocket {
            tcp,
            session: Arc::new(Mutex::new(conn)),
            pending: Vec::new(),
        })
    }
}

/// One handle on a TLS connection: the socket and the shared session.
pub(crate) struct TlsSocket {
    pub(crate) tcp: TcpStream,
    session: Arc<Mutex<ClientConnection>>,
    /// Ciphertext read but not yet taken by rustls.
    pending: Vec<u8>,
}

fn lock(session: &Mutex<ClientConnection>) -> MutexGuard<'_, ClientConnection> {
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TlsSocket {
    /// Another handle on the same connection (the reading or writing half).
    pub(crate) fn try_clone(&self) -> io::Result<TlsSocket> {
        Ok(TlsSocket {
            tcp: self.tcp.try_clone()?,
            session: Arc::clone(&self.session),
            pending: Vec::new(),
        })
    }

    /// Sends what rustls has queued (alerts, key updates), under the lock.
    fn flush_records(conn: &mut ClientConnection, mut tcp: &TcpStream) -> io::Result<()> {
        while conn.wants_write() {
            conn.write_tls(&mut tcp)?;
        }
        Ok(())
    }
}

impl Read for TlsSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut conn = lock(&self.session);
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n), // 0: the daemon's close_notify
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if !self.pending.is_empty() {
                    let mut ciphertext = &self.pending[..];
                    conn.read_tls(&mut ciphertext)?;
                    let taken = self.pending.len() - ciphertext.len();
                    self.pending.drain(..taken);
                    let state = conn.process_new_packets().map_err(|e| {
                        let _ = Self::flush_records(&mut conn, &self.tcp);
                        io::Error::new(io::ErrorKind::InvalidData, e)
                    });
                    Self::flush_records(&mut conn, &self.tcp)?;
                    state?;
                    continue;
                }
            }
            // Waited for without the lock, so the writing half goes on.
            let mut chunk = [0u8; 16 * 1024];
            let n = (&self.tcp).read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Write for TlsSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut conn = lock(&self.session);
        let n = conn.writer().write(buf)?;
        Self::flush_records(&mut conn, &self.tcp)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut conn = lock(&self.session);
        Self::flush_records(&mut conn, &self.tcp)
    }
}

/// The crypto provider: ring's, as the daemon's (it builds with a C
/// compiler only). rustls deprecates it for lacking post-quantum key
/// exchange; classical X25519 and P-256 remain.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
