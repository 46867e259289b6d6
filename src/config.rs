//! Every option and limit of the daemon, with its default, in one place.
//!
//! One [`Settings`] type is read from each source (command-line flags and
//! `JUNCTION_*` variables through clap, then the optional TOML file); layers
//! merge with flags > env > file > defaults and resolve into a checked
//! [`Config`]. The effective configuration prints back as TOML that can be
//! used as a configuration file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::net::listener::default_unix_path;

/// Default TCP address: loopback only.
pub const DEFAULT_TCP: &str = "127.0.0.1:7710";

/// Why the configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid {option}: {message}")]
    Invalid {
        /// The option's name.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(option: &'static str, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        option,
        message: message.to_string(),
    }
}

/// A byte count written as `1048576`, `64KiB`, `1MiB` or `1M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a size (use e.g. 1048576, 64KiB or 1MiB)"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
        };
        number
            .checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            0 => write!(f, "0"),
            _ if n % (1 << 30) == 0 => write!(f, "{}GiB", n >> 30),
            _ if n % (1 << 20) == 0 => write!(f, "{}MiB", n >> 20),
            _ if n % (1 << 10) == 0 => write!(f, "{}KiB", n >> 10),
            _ => write!(f, "{n}"),
        }
    }
}

/// A duration written as `5s`, `250ms` or `1m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Span)
            .map_err(|e| format!("{s:?} is not a duration ({e}; use e.g. 5s or 250ms)"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

macro_rules! text_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    Int(u64),
                    Text(String),
                }
                match Raw::deserialize(d)? {
                    Raw::Int(n) => n.to_string().parse(),
                    Raw::Text(s) => s.parse(),
                }
                .map_err(serde::de::Error::custom)
            }
        }
    };
}
text_serde!(ByteSize);
text_serde!(Span);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// One layer of settings: every field optional, so layers can be merged.
/// The same struct is read from flags/env (clap) and from the TOML file.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Unix socket path, or "off" [default: $XDG_RUNTIME_DIR/junction.sock, else /tmp/junction-UID/junction.sock]
    #[arg(long, env = "JUNCTION_UNIX", value_name = "PATH|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix: Option<String>,
    /// File mode of the Unix socket, in octal [default: 0600]
    #[arg(long, env = "JUNCTION_UNIX_MODE", value_name = "OCTAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_mode: Option<String>,
    /// TCP address to listen on, or "off" [default: 127.0.0.1:7710]
    #[arg(long, env = "JUNCTION_TCP", value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Listen backlog of both listeners (the kernel caps it at somaxconn) [default: 4096]
    #[arg(long, env = "JUNCTION_BACKLOG", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    /// Worker threads for pooled methods [default: number of cores]
    #[arg(long, env = "JUNCTION_WORKERS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Jobs that may wait for a worker before requests are refused as busy [default: 65536]
    #[arg(long, env = "JUNCTION_QUEUE", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    /// Largest frame (a JSON-RPC line) [default: 1MiB]
    #[arg(long, env = "JUNCTION_MAX_FRAME", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame: Option<ByteSize>,
    /// Most entries in one JSON-RPC batch [default: 1024]
    #[arg(long, env = "JUNCTION_MAX_BATCH", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// Most connections open at once; one more is told so and closed [default: 10000]
    #[arg(long, env = "JUNCTION_MAX_CONNECTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Close a connection that has not sent its first 4 bytes by then [default: 5s]
    #[arg(long, env = "JUNCTION_SNIFF_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sniff_timeout: Option<Span>,
    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish [default: 10s]
    #[arg(long, env = "JUNCTION_DRAIN_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Span>,
    /// Log line format [default: human]
    #[arg(long, env = "JUNCTION_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. "info" or "junction=debug" [default: info]
    #[arg(long, env = "JUNCTION_LOG", value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

macro_rules! merge_fields {
    ($high:ident, $low:ident; $($field:ident),*) => {
        Settings { $($field: $high.$field.or($low.$field)),* }
    };
}

impl Settings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// This layer over `lower`: a value set here wins.
    pub fn over(self, lower: Settings) -> Settings {
        merge_fields!(self, lower; unix, unix_mode, tcp, backlog, workers, queue, max_frame,
            max_batch, max_connections, sniff_timeout, drain_timeout, log_format, log)
    }
}

/// The resolved, checked configuration the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Unix socket path; None when off.
    pub unix: Option<PathBuf>,
    /// Socket file mode.
    pub unix_mode: u32,
    /// TCP address; None when off.
    pub tcp: Option<SocketAddr>,
    /// Listen backlog.
    pub backlog: u32,
    /// Worker threads.
    pub workers: usize,
    /// Job queue bound.
    pub queue: usize,
    /// Largest frame in bytes.
    pub max_frame: usize,
    /// Most entries in a batch.
    pub max_batch: usize,
    /// Most open connections.
    pub max_connections: usize,
    /// Sniff timeout.
    pub sniff_timeout: Duration,
    /// Drain timeout at shutdown.
    pub drain_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            unix: Some(default_unix_path()),
            unix_mode: 0o600,
            tcp: DEFAULT_TCP.parse().ok(),
            backlog: 4096,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue: 65536,
            max_frame: 1 << 20,
            max_batch: 1024,
            max_connections: 10_000,
            sniff_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            log_format: LogFormat::Human,
            log: "info".into(),
        }
    }
}

impl Config {
    /// Resolves a merged settings layer over the embedded defaults.
    pub fn resolve(settings: Settings) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(unix) = settings.unix {
            config.unix = match unix.as_str() {
                "off" => None,
                "" => return Err(invalid("unix", "empty path (use \"off\" to disable)")),
                path => Some(PathBuf::from(path)),
            };
        }
        if let Some(mode) = settings.unix_mode {
            config.unix_mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    invalid(
                        "unix-mode",
                        format_args!("{mode:?} is not an octal mode like 0600"),
                    )
                })?;
        }
        if let Some(tcp) = settings.tcp {
            config.tcp = match tcp.as_str() {
                "off" => None,
                addr => Some(addr.parse().map_err(|_| {
                    invalid(
                        "tcp",
                        format_args!("{addr:?} is not HOST:PORT (e.g. 127.0.0.1:7710) or \"off\""),
                    )
                })?),
            };
        }
        if config.unix.is_none() && config.tcp.is_none() {
            return Err(invalid(
                "listeners",
                "both --unix and --tcp are off; nothing to serve",
            ));
        }
        let positive = |option, value: Option<usize>, default| match value {
            Some(0) => Err(invalid(option, "must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        config.backlog = settings
            .backlog
            .unwrap_or(config.backlog)
            .clamp(1, i32::MAX as u32);
        config.workers = positive("workers", settings.workers, config.workers)?;
        config.queue = positive("queue", settings.queue, config.queue)?;
        config.max_batch = positive("max-batch", settings.max_batch, config.max_batch)?;
        config.max_connections = positive(
            "max-connections",
            settings.max_connections,
            config.max_connections,
        )?;
        if let Some(ByteSize(size)) = settings.max_frame {
            if !(64..=1 << 30).contains(&size) {
                return Err(invalid("max-frame", "must be between 64 bytes and 1GiB"));
            }
            config.max_frame = size as usize;
        }
        if let Some(Span(t)) = settings.sniff_timeout {
            config.sniff_timeout = t;
        }
        if let Some(Span(t)) = settings.drain_timeout {
            config.drain_timeout = t;
        }
        if let Some(format) = settings.log_format {
            config.log_format = format;
        }
        if let Some(log) = settings.log {
            config.log = log;
        }
        Ok(config)
    }

    /// The configuration as a complete settings layer (every field set).
    pub fn to_settings(&self) -> Settings {
        Settings {
            unix: Some(
                self.unix
                    .as_ref()
                    .map_or("off".into(), |p| p.display().to_string()),
            ),
            unix_mode: Some(format!("{:04o}", self.unix_mode)),
            tcp: Some(self.tcp.map_or("off".into(), |a| a.to_string())),
            backlog: Some(self.backlog),
            workers: Some(self.workers),
            queue: Some(self.queue),
            max_frame: Some(ByteSize(self.max_frame as u64)),
            max_batch: Some(self.max_batch),
            max_connections: Some(self.max_connections),
            sniff_timeout: Some(Span(self.sniff_timeout)),
            drain_timeout: Some(Span(self.drain_timeout)),
            log_format: Some(self.log_format),
            log: Some(self.log.clone()),
        }
    }

    /// The effective configuration as TOML, usable as a configuration file.
    pub fn render(&self) -> String {
        toml::to_string(&self.to_settings()).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_spans_parse_and_print_back() {
        assert_eq!("1MiB".parse::<ByteSize>(), Ok(ByteSize(1 << 20)));
        assert_eq!("64k".parse::<ByteSize>(), Ok(ByteSize(64 << 10)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(1 << 20).to_string(), "1MiB");
        assert_eq!(
            "250ms".parse::<Span>(),
            Ok(Span(Duration::from_millis(250)))
        );
        assert!("soon".parse::<Span>().is_err());
    }

    #[test]
    fn layers_merge_highest_first() {
        let file = Settings {
            workers: Some(3),
            tcp: Some("127.0.0.1:9000".into()),
            ..Default::default()
        };
        let flags = Settings {
            workers: Some(7),
            ..Default::default()
        };
        let config = Config::resolve(flags.over(file)).expect("valid");
        assert_eq!(config.workers, 7);
        assert_eq!(config.tcp, "127.0.0.1:9000".parse().ok());
        assert_eq!(config.max_frame, 1 << 20);
    }

    #[test]
    fn rendered_config_reads_back_as_the_same_config() {
        let config = Config::resolve(Settings {
            unix: Some("/tmp/x.sock".into()),
            tcp: Some("off".into()),
            max_frame: Some(ByteSize(4096)),
            ..Default::default()
        })
        .expect("valid");
        let reread: Settings = toml::from_str(&config.render()).expect("toml");
        assert_eq!(Config::resolve(reread).expect("valid"), config);
    }

    #[test]
    fn bad_values_are_named() {
        let bad = |s: Settings| Config::resolve(s).unwrap_err().to_string();
        assert!(
            bad(Settings {
                unix_mode: Some("999".into()),
                ..Default::default()
            })
            .contains("unix-mode")
        );
        assert!(
            bad(Settings {
                tcp: Some("nowhere".into()),
                ..Default::default()
            })
            .contains("tcp")
        );
        assert!(
            bad(Settings {
                workers: Some(0),
                ..Default::default()
            })
            .contains("workers")
        );
        assert!(
            bad(Settings {
                unix: Some("off".into()),
                tcp: Some("off".into()),
                ..Default::default()
            })
            .contains("nothing to serve")
        );
        assert!(toml::from_str::<Settings>("no-such-option = 1").is_err());
    }
}
