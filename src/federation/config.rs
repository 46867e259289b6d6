//! The federation settings (`--nats` and friends), checked once at start.

use std::path::PathBuf;

/// How this daemon joins a cluster; `urls` empty: it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationConfig {
    /// NATS server URLs (`nats://host:4222`, `tls://...`), tried in order.
    pub urls: Vec<String>,
    /// The cluster's name: the subject prefix `junction.NAME`, so that
    /// several clusters can share one NATS deployment.
    pub cluster: String,
    /// The token name calls and events from the cluster are judged as
    /// (`token:NAME` in the policy).
    pub identity: String,
    /// A NATS credentials file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// A CA certificate file (PEM) to verify the servers with.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key.
    pub tls_key: Option<PathBuf>,
    /// Refuse servers that do not offer TLS.
    pub tls_required: bool,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            cluster: "junction".into(),
            identity: "cluster".into(),
            credentials: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
        }
    }
}

/// The settings as flags or the file give them.
#[derive(Debug, Default)]
pub struct FederationSettings<'a> {
    /// `--nats URL[,URL...]`.
    pub nats: Option<&'a str>,
    /// `--nats-cluster NAME`.
    pub cluster: Option<&'a str>,
    /// `--nats-identity NAME`.
    pub identity: Option<&'a str>,
    /// `--nats-credentials FILE`.
    pub credentials: Option<&'a PathBuf>,
    /// `--nats-tls-ca FILE`.
    pub tls_ca: Option<&'a PathBuf>,
    /// `--nats-tls-cert FILE`.
    pub tls_cert: Option<&'a PathBuf>,
    /// `--nats-tls-key FILE`.
    pub tls_key: Option<&'a PathBuf>,
    /// `--nats-tls-required BOOL`.
    pub tls_required: Option<bool>,
}

impl FederationConfig {
    /// Checks the settings: Err names the option and what is wrong.
    pub fn resolve(s: &FederationSettings<'_>) -> Result<Self, (&'static str, String)> {
        let mut config = FederationConfig::default();
        if let Some(urls) = s.nats {
            config.urls = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty() && *u != "off")
                .map(String::from)
                .collect();
            if let Some(bad) = config
                .urls
                .iter()
                .find(|u| u.chars().any(char::is_whitespace))
            {
                return Err(("nats", format!("{bad:?} is not a URL")));
            }
        }
        if let Some(cluster) = s.cluster {
            if cluster.is_empty() || cluster.len() > 64 {
                return Err(("nats-cluster", "must be 1 to 64 bytes".into()));
            }
            config.cluster = cluster.into();
        }
        if let Some(identity) = s.identity {
            if !crate::policy::valid_token_name(identity) {
                return Err((
                    "nats-identity",
                    format!("{identity:?} is not a token name (letters, digits, '-', '_' and '.')"),
                ));
            }
            if identity == crate::policy::OWNER_TOKEN {
                return Err((
                    "nats-identity",
                    "\"owner\" would give the cluster the daemon's own rights; choose another name"
                        .into(),
                ));
            }
            config.identity = identity.into();
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err((
                "nats-tls-cert",
                "--nats-tls-cert and --nats-tls-key go together".into(),
            ));
        }
        config.credentials = s.credentials.cloned();
        config.tls_ca = s.tls_ca.cloned();
        config.tls_cert = s.tls_cert.cloned();
        config.tls_key = s.tls_key.cloned();
        config.tls_required = s.tls_required.unwrap_or(false);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_are_checked() {
        let off = FederationConfig::resolve(&FederationSettings::default()).expect("default");
        assert!(off.urls.is_empty(), "no --nats: off");
        let on = FederationConfig::resolve(&FederationSettings {
            nats: Some("nats://a:4222, nats://b:4222"),
            cluster: Some("prod"),
            identity: Some("peers"),
            ..FederationSettings::default()
        })
        .expect("valid");
        assert_eq!(on.urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(
            (on.cluster.as_str(), on.identity.as_str()),
            ("prod", "peers")
        );
        let off = FederationConfig::resolve(&FederationSettings {
            nats: Some("off"),
            ..FederationSettings::default()
        })
        .expect("off");
        assert!(off.urls.is_empty());
        for (settings, option) in [
            (
                FederationSettings {
                    identity: Some("owner"),
                    ..FederationSettings::default()
                },
                "nats-identity",
            ),
            (
                FederationSettings {
                    identity: Some("a b"),
                    ..FederationSettings::default()
                },
                "nats-identity",
            ),
            (
                FederationSettings {
                    cluster: Some(""),
                    ..FederationSettings::default()
                },
                "nats-cluster",
            ),
        ] {
            let error = FederationConfig::resolve(&settings).expect_err("refused");
            assert_eq!(error.0, option, "{error:?}");
        }
        let cert = PathBuf::from("/c.pem");
        let error = FederationConfig::resolve(&FederationSettings {
            tls_cert: Some(&cert),
            ..FederationSettings::default()
        })
        .expect_err("a cert needs its key");
        assert_eq!(error.0, "nats-tls-cert");
    }
}
