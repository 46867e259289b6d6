//! Test certificates made with rcgen: a CA, the daemon's certificate
//! (localhost, 127.0.0.1), client certificates, and a stranger CA.

use std::path::{Path, PathBuf};

use junction::net::tls::{ClientCert, RemoteConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

/// PEM files in a directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A client certificate and key on disk.
pub struct ClientPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pem");
    path
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params
}

impl Pki {
    /// A CA and the daemon's certificate, written under `dir`.
    pub fn new(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        // The CA's key is kept in a file too, so that clients can be made later.
        write(dir, "ca.key", &ca_key.serialize_pem());
        let ca = CertifiedIssuer::self_signed(ca_params("Junction test CA"), ca_key).expect("ca");
        let ca_path = write(dir, "ca.pem", &ca.pem());
        let server_key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&server_key, &ca).expect("server cert");
        Pki {
            dir: dir.to_path_buf(),
            ca: ca_path,
            cert: write(dir, "server.pem", &cert.pem()),
            key: write(dir, "server.key", &server_key.serialize_pem()),
        }
    }

    /// The CA as an issuer again (from its files).
    fn issuer(&self) -> rcgen::Issuer<'static, KeyPair> {
        let key = KeyPair::from_pem(&std::fs::read_to_string(self.dir.join("ca.key")).unwrap())
            .expect("ca key");
        rcgen::Issuer::new(ca_params("Junction test CA"), key)
    }

    /// A client certificate signed by this CA: with `dns` as its SAN DNS
    /// name, or with only `cn` as its subject's common name.
    pub fn client(&self, file: &str, cn: &str, dns: Option<&str>) -> ClientPair {
        client_signed(&self.dir, file, cn, dns, &self.issuer())
    }

    /// A client certificate from another CA, which the daemon does not trust.
    pub fn stranger(&self, file: &str, cn: &str) -> ClientPair {
        let key = KeyPair::generate().expect("key");
        let other = CertifiedIssuer::self_signed(ca_params("Another CA"), key).expect("ca");
        client_signed(&self.dir, file, cn, None, &other)
    }

    /// The listener settings for TLS with these files.
    pub fn remote(&self) -> RemoteConfig {
        RemoteConfig {
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            ..RemoteConfig::default()
        }
    }

    /// The same with client certificates checked against the CA.
    pub fn mutual(&self, required: bool) -> RemoteConfig {
        RemoteConfig {
            client_ca: Some(self.ca.clone()),
            client_cert: if required {
                ClientCert::Required
            } else {
                ClientCert::Optional
            },
            ..self.remote()
        }
    }

    /// Client options trusting this CA.
    pub fn options(&self) -> junction::client::TlsOptions {
        junction::client::TlsOptions {
            ca: Some(self.ca.clone()),
            ..Default::default()
        }
    }

    /// The same showing `pair`.
    pub fn options_with(&self, pair: &ClientPair) -> junction::client::TlsOptions {
        junction::client::TlsOptions {
            cert: Some(pair.cert.clone()),
            key: Some(pair.key.clone()),
            ..self.options()
        }
    }
}

fn client_signed(
    dir: &Path,
    file: &str,
    cn: &str,
    dns: Option<&str>,
    issuer: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
) -> ClientPair {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    if let Some(dns) = dns {
        params.subject_alt_names = vec![SanType::DnsName(dns.try_into().expect("dns name"))];
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).expect("client cert");
    ClientPair {
        cert: write(dir, &format!("{file}.pem"), &cert.pem()),
        key: write(dir, &format!("{file}.key"), &key.serialize_pem()),
    }
}
