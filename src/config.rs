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

use crate::access::{Access, read_tokens};
use crate::bus::policy::{Policy, Rule};
use crate::bus::{BusConfig, SlowSubscriber};
use crate::net::listener::default_unix_path;
use crate::net::tuning::{Preset, SocketOptions};

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

/// How the event loop moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// io_uring where the kernel allows it, else epoll (with one warning).
    #[default]
    Auto,
    /// Readiness: epoll on Linux, kqueue on macOS.
    Epoll,
    /// Completions: io_uring (Linux); refuses to start where unavailable.
    IoUring,
}

impl Backend {
    /// The name used in flags, logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Epoll => "epoll",
            Backend::IoUring => "io-uring",
        }
    }
}

/// One layer of settings: every field optional, so layers can be merged.
/// The same struct is read from flags/env (clap) and from the TOML file.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Unix socket path, or "off" [default: $XDG_RUNTIME_DIR/junction.sock, else /tmp/junction-UID/junction.sock; $JUNCTION_TMPDIR replaces /tmp]
    #[arg(long, env = "JUNCTION_UNIX", value_name = "PATH|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix: Option<String>,
    /// File mode of the Unix socket, in octal [default: 0600]
    #[arg(long, env = "JUNCTION_UNIX_MODE", value_name = "OCTAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_mode: Option<String>,
    /// Owner of the Unix socket file: a user name or uid [default: the daemon's user]
    #[arg(long, env = "JUNCTION_UNIX_OWNER", value_name = "USER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_owner: Option<String>,
    /// Group of the Unix socket file: a group name or gid [default: the daemon's group]
    #[arg(long, env = "JUNCTION_UNIX_GROUP", value_name = "GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_group: Option<String>,
    /// Users allowed on the Unix socket: comma-separated names or uids, or "any" [default: the daemon's user and root]
    #[arg(long, env = "JUNCTION_ALLOW_UIDS", value_name = "USERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_uids: Option<String>,
    /// Groups (a peer's primary group) allowed on the Unix socket: comma-separated names or gids [default: none]
    #[arg(long, env = "JUNCTION_ALLOW_GIDS", value_name = "GROUPS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_gids: Option<String>,
    /// File holding the token TCP clients must send with rpc.auth before anything else [default: none]
    #[arg(long, env = "JUNCTION_AUTH_TOKEN_FILE", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,
    /// Refuse to listen on a non-loopback TCP address without an auth token [default: true]
    #[arg(long, env = "JUNCTION_PROTECTED_MODE", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected_mode: Option<bool>,
    /// TCP address to listen on, or "off" [default: 127.0.0.1:7710]
    #[arg(long, env = "JUNCTION_TCP", value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Listen backlog of both listeners (the kernel caps it at somaxconn) [default: 4096]
    #[arg(long, env = "JUNCTION_BACKLOG", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    /// Event loop backend: auto, epoll or io-uring [default: auto]
    #[arg(long, env = "JUNCTION_BACKEND", value_name = "BACKEND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Worker threads for pooled methods [default: number of cores]
    #[arg(long, env = "JUNCTION_WORKERS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Jobs that may wait for a worker; past that, a connection's pooled call waits on the loop and the connection is not read [default: 65536]
    #[arg(long, env = "JUNCTION_QUEUE", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    /// Largest frame (a JSON-RPC line) [default: 1MiB]
    #[arg(long, env = "JUNCTION_MAX_FRAME", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame: Option<ByteSize>,
    /// Pending output per connection at which it stops being read until half has drained [default: 4MiB]
    #[arg(long, env = "JUNCTION_MAX_OUTPUT", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output: Option<ByteSize>,
    /// Requests of one connection waiting on workers or bus providers at which it is not read until one is answered [default: 4096]
    #[arg(long, env = "JUNCTION_MAX_IN_FLIGHT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Ring and output buffer memory of all connections together past which none is read until some drains [default: 1GiB]
    #[arg(long, env = "JUNCTION_MAX_BUFFER_MEMORY", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_buffer_memory: Option<ByteSize>,
    /// Most entries in one JSON-RPC batch [default: 1024]
    #[arg(long, env = "JUNCTION_MAX_BATCH", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// Most connections open at once; one more is told so and closed [default: 10000]
    #[arg(long, env = "JUNCTION_MAX_CONNECTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Close a connection whose protocol is not known by then (no `{`, `[` or MCP1 magic yet) [default: 5s]
    #[arg(long, env = "JUNCTION_SNIFF_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sniff_timeout: Option<Span>,
    /// Close a connection that has not passed rpc.auth by then, whatever it sends meanwhile [default: 5s]
    #[arg(long, env = "JUNCTION_AUTH_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_timeout: Option<Span>,
    /// Most connections waiting to authenticate, apart from max-connections; one more is told so and closed [default: 64]
    #[arg(long, env = "JUNCTION_MAX_UNAUTHENTICATED", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unauthenticated: Option<usize>,
    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish [default: 10s]
    #[arg(long, env = "JUNCTION_DRAIN_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Span>,
    /// On SIGINT/SIGTERM, keep serving (and accepting) this long while /healthz answers 503, so load balancers stop sending first; then drain. A second signal skips it [default: 0s]
    #[arg(long, env = "JUNCTION_SHUTDOWN_GRACE", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<Span>,
    /// Close a connection whose frame has been arriving for this long: the slowloris case (0s: off) [default: 30s]
    #[arg(long, env = "JUNCTION_FRAME_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_timeout: Option<Span>,
    /// Close a connection with nothing in flight and no traffic for this long (0s: off) [default: 0s]
    #[arg(long, env = "JUNCTION_IDLE_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Span>,
    /// Close a connection whose peer takes none of its pending output for this long (0s: off) [default: 30s]
    #[arg(long, env = "JUNCTION_WRITE_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_timeout: Option<Span>,
    /// Socket option preset: default, low-latency or high-throughput [default: default]
    #[arg(long, env = "JUNCTION_TUNING", value_name = "PRESET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuning: Option<Preset>,
    /// TCP_NODELAY on TCP connections [preset default: true]
    #[arg(long, env = "JUNCTION_TCP_NODELAY", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_nodelay: Option<bool>,
    /// SO_KEEPALIVE on TCP connections [preset default: true]
    #[arg(long, env = "JUNCTION_TCP_KEEPALIVE", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<bool>,
    /// Idle time before the first keepalive probe [preset default: 60s]
    #[arg(long, env = "JUNCTION_TCP_KEEPALIVE_IDLE", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive_idle: Option<Span>,
    /// Time between keepalive probes [preset default: 10s]
    #[arg(long, env = "JUNCTION_TCP_KEEPALIVE_INTERVAL", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive_interval: Option<Span>,
    /// Unanswered probes before the kernel drops the connection [preset default: 3]
    #[arg(long, env = "JUNCTION_TCP_KEEPALIVE_COUNT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive_count: Option<u32>,
    /// SO_RCVBUF for TCP, 0 for the kernel's autotuning [preset default: 0]
    #[arg(long, env = "JUNCTION_TCP_RCVBUF", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_rcvbuf: Option<ByteSize>,
    /// SO_SNDBUF for TCP, 0 for the kernel's autotuning [preset default: 0]
    #[arg(long, env = "JUNCTION_TCP_SNDBUF", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_sndbuf: Option<ByteSize>,
    /// TCP_USER_TIMEOUT: drop a TCP peer that leaves data unacknowledged this long (0s: off) [preset default: 0s]
    #[arg(long, env = "JUNCTION_TCP_USER_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_user_timeout: Option<Span>,
    /// TCP_QUICKACK, re-armed after every read [preset default: false]
    #[arg(long, env = "JUNCTION_TCP_QUICKACK", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_quickack: Option<bool>,
    /// TCP_DEFER_ACCEPT: wake for a connection only once it sends data (0s: off) [preset default: 0s]
    #[arg(long, env = "JUNCTION_TCP_DEFER_ACCEPT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_defer_accept: Option<Span>,
    /// TCP_FASTOPEN queue length on the listener (0: off) [preset default: 0]
    #[arg(long, env = "JUNCTION_TCP_FASTOPEN", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_fastopen: Option<u32>,
    /// SO_REUSEADDR on the TCP listener [preset default: true]
    #[arg(long, env = "JUNCTION_TCP_REUSEADDR", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_reuseaddr: Option<bool>,
    /// SO_RCVBUF for Unix connections, 0 for the kernel default [preset default: 0]
    #[arg(long, env = "JUNCTION_UNIX_RCVBUF", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_rcvbuf: Option<ByteSize>,
    /// SO_SNDBUF for Unix connections, 0 for the kernel default [preset default: 0]
    #[arg(long, env = "JUNCTION_UNIX_SNDBUF", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_sndbuf: Option<ByteSize>,
    /// How long a call routed to a client provider may wait for its answer (0s: no limit) [default: 30s]
    #[arg(long, env = "JUNCTION_BUS_CALL_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_call_timeout: Option<Span>,
    /// Most events queued for one subscriber beyond its pending output [default: 1024]
    #[arg(long, env = "JUNCTION_BUS_QUEUE_EVENTS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_queue_events: Option<usize>,
    /// Most event bytes queued for one subscriber beyond its pending output [default: 1MiB]
    #[arg(long, env = "JUNCTION_BUS_QUEUE_BYTES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_queue_bytes: Option<ByteSize>,
    /// A subscriber whose queue is full: drop-oldest (it is told how many) or disconnect [default: drop-oldest]
    #[arg(long, env = "JUNCTION_BUS_SLOW_SUBSCRIBER", value_name = "POLICY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_slow_subscriber: Option<SlowSubscriber>,
    /// Who may register bus names: PATTERN=WHO,... (WHO: user, @group, any, tcp); repeat or separate with ';' [default: any Unix peer, no TCP peer]
    #[arg(
        long,
        env = "JUNCTION_BUS_ALLOW",
        value_name = "PATTERN=WHO",
        value_delimiter = ';'
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_allow: Option<Vec<String>>,
    /// Most bus names and patterns one connection may provide; past it bus.register gets -32025 [default: 1024]
    #[arg(long, env = "JUNCTION_BUS_MAX_NAMES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_max_names: Option<usize>,
    /// Most topics and patterns one connection may subscribe to; past it bus.subscribe gets -32025 [default: 1024]
    #[arg(long, env = "JUNCTION_BUS_MAX_SUBSCRIPTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_max_subscriptions: Option<usize>,
    /// Pending output of one connection past which it is closed (the peer does not read) [default: 64MiB, at least 2 x max-output]
    #[arg(long, env = "JUNCTION_MAX_OUTPUT_HARD", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_hard: Option<ByteSize>,
    /// Log line format [default: human]
    #[arg(long, env = "JUNCTION_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. "info" or "junction=debug" [default: info]
    #[arg(long, env = "JUNCTION_LOG", value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    // Access policy (docs/security.md).
    /// Let TCP peers in without rpc.auth, as the identity `anonymous` (loopback addresses only) [default: false]
    #[arg(long, env = "JUNCTION_TCP_ANONYMOUS", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_anonymous: Option<bool>,
    /// Grant a right: WHO:ACTION:PATTERN, with more patterns after commas (WHO: uid:N, user:NAME, gid:N, group:NAME, token:NAME, anonymous, *; ACTION: call, provide, publish, subscribe, or WHO:admin); repeat or separate with ';'
    #[arg(
        long,
        env = "JUNCTION_ALLOW",
        value_name = "WHO:ACTION:PATTERN",
        value_delimiter = ';'
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Deny a right (deny wins over any allow): WHO:ACTION:PATTERN, as --allow
    #[arg(
        long,
        env = "JUNCTION_DENY",
        value_name = "WHO:ACTION:PATTERN",
        value_delimiter = ';'
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
    /// Policy rules, `[[policy]]` tables (TOML file only)
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Vec<crate::policy::RuleTable>>,
    // Observing the traffic (docs/operations.md): the slow log.
    /// Calls taking this long or longer go to the slow log (rpc.slowlog); 0 logs every call [default: 10ms]
    #[arg(long, env = "JUNCTION_SLOWLOG_THRESHOLD", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowlog_threshold: Option<Span>,
    /// Most calls the slow log keeps (the oldest go first); 0 turns it off [default: 128]
    #[arg(long, env = "JUNCTION_SLOWLOG_MAX_LEN", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowlog_max_len: Option<usize>,
    // TLS and PROXY protocol on the TCP listener (docs/remote.md).
    /// PEM certificate chain (leaf first) the TCP listener presents; with --tls-key, the TCP port speaks TLS [default: none]
    #[arg(long, env = "JUNCTION_TLS_CERT", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "JUNCTION_TLS_KEY", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates (mutual TLS); a verified certificate is the identity cert:NAME [default: none]
    #[arg(long, env = "JUNCTION_TLS_CLIENT_CA", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: "required" (no certificate, no handshake) or "optional" (without one, rpc.auth) [default: required]
    #[arg(
        long,
        env = "JUNCTION_TLS_CLIENT_CERT",
        value_name = "required|optional"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<String>,
    /// With TLS on: "only" (plaintext connections are refused) or "both" (TLS and plaintext on one port, told apart by the first byte) [default: only]
    #[arg(long, env = "JUNCTION_TLS_MODE", value_name = "only|both")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_mode: Option<String>,
    /// Addresses or CIDR blocks (comma-separated) of proxies whose connections may start with a PROXY protocol v2 header [default: none]
    #[arg(long, env = "JUNCTION_PROXY_PROTOCOL_FROM", value_name = "ADDRS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol_from: Option<String>,
    // HTTP and WebSocket on the same sockets (docs/remote.md, "Browsers").
    /// Browser origins (scheme://host or scheme://host:port) whose pages may use the daemon over HTTP or WebSocket, or "*"; a request with another Origin gets 403 [default: none]
    #[arg(
        long,
        env = "JUNCTION_HTTP_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_origins: Option<Vec<String>>,
    /// Host header values HTTP requests may carry besides the loopback names (NAME or NAME:PORT, or "*"), against DNS rebinding [default: the TCP listen address]
    #[arg(
        long,
        env = "JUNCTION_HTTP_HOSTS",
        value_name = "HOST",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_hosts: Option<Vec<String>>,
    // Federation over NATS (docs/federation.md).
    /// Join a cluster of daemons over NATS: server URLs, comma-separated (nats://host:4222), or "off" [default: off]
    #[arg(long, env = "JUNCTION_NATS", value_name = "URL[,URL...]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<String>,
    /// The cluster's name: subjects are under junction.NAME [default: junction]
    #[arg(long, env = "JUNCTION_NATS_CLUSTER", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_cluster: Option<String>,
    /// The identity calls and events from the cluster are judged as: token:NAME in the policy [default: cluster]
    #[arg(long, env = "JUNCTION_NATS_IDENTITY", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_identity: Option<String>,
    /// A NATS credentials file (JWT and NKey seed)
    #[arg(long, env = "JUNCTION_NATS_CREDENTIALS", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_credentials: Option<PathBuf>,
    /// A CA certificate (PEM) to verify the NATS servers with
    #[arg(long, env = "JUNCTION_NATS_TLS_CA", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS with NATS (with --nats-tls-key)
    #[arg(long, env = "JUNCTION_NATS_TLS_CERT", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM)
    #[arg(long, env = "JUNCTION_NATS_TLS_KEY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse NATS servers that do not offer TLS [default: false]
    #[arg(long, env = "JUNCTION_NATS_TLS_REQUIRED", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_tls_required: Option<bool>,
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
        merge_fields!(self, lower; unix, unix_mode, unix_owner, unix_group, allow_uids, allow_gids,
            auth_token_file, protected_mode, tcp, backlog, backend, workers, queue, max_frame, max_output, max_in_flight,
            max_buffer_memory, max_batch, max_connections, sniff_timeout, drain_timeout, shutdown_grace, frame_timeout, idle_timeout,
            write_timeout, tuning, tcp_nodelay, tcp_keepalive, tcp_keepalive_idle,
            tcp_keepalive_interval, tcp_keepalive_count, tcp_rcvbuf, tcp_sndbuf, tcp_user_timeout,
            tcp_quickack, tcp_defer_accept, tcp_fastopen, tcp_reuseaddr, unix_rcvbuf, unix_sndbuf,
            bus_call_timeout, bus_queue_events, bus_queue_bytes, bus_slow_subscriber, bus_allow,
            auth_timeout, max_unauthenticated,
            bus_max_names, bus_max_subscriptions, max_output_hard,
            log_format, log, tcp_anonymous, allow, deny, policy,
            slowlog_threshold, slowlog_max_len,
            tls_cert, tls_key, tls_client_ca, tls_client_cert, tls_mode, proxy_protocol_from,
            http_origins, http_hosts,
            nats, nats_cluster, nats_identity, nats_credentials, nats_tls_ca, nats_tls_cert,
            nats_tls_key, nats_tls_required)
    }
}

/// The resolved, checked configuration the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Unix socket path; None when off.
    pub unix: Option<PathBuf>,
    /// Socket file mode.
    pub unix_mode: u32,
    /// Socket file owner (uid); None: the daemon's.
    pub unix_owner: Option<u32>,
    /// Socket file group (gid); None: the daemon's.
    pub unix_group: Option<u32>,
    /// Who may connect: the Unix allow-list and the TCP auth token.
    pub access: Access,
    /// Where the auth token was read from (shown instead of the token).
    pub auth_token_file: Option<PathBuf>,
    /// Refuse a non-loopback TCP address without a token.
    pub protected_mode: bool,
    /// TCP address; None when off.
    pub tcp: Option<SocketAddr>,
    /// Listen backlog.
    pub backlog: u32,
    /// Event loop backend.
    pub backend: Backend,
    /// Worker threads.
    pub workers: usize,
    /// Job queue bound.
    pub queue: usize,
    /// Largest frame in bytes.
    pub max_frame: usize,
    /// Pending output at which a connection stops being read.
    pub max_output: usize,
    /// Pending output past which a connection is closed.
    pub max_output_hard: usize,
    /// Requests in flight at which a connection stops being read.
    pub max_in_flight: usize,
    /// Buffer memory of all connections past which none gets more to read into.
    pub max_buffer_memory: usize,
    /// Most entries in a batch.
    pub max_batch: usize,
    /// Most open connections.
    pub max_connections: usize,
    /// Sniff timeout.
    pub sniff_timeout: Duration,
    /// Longest a connection may take to pass `rpc.auth` (zero: off).
    pub auth_timeout: Duration,
    /// Most connections waiting to authenticate, beside `max_connections`.
    pub max_unauthenticated: usize,
    /// Drain timeout at shutdown.
    pub drain_timeout: Duration,
    /// Lame-duck time before the drain: serving, but reporting draining.
    pub shutdown_grace: Duration,
    /// Longest a frame may take to arrive (zero: off).
    pub frame_timeout: Duration,
    /// Longest a connection may sit idle (zero: off).
    pub idle_timeout: Duration,
    /// Longest pending output may wait for the peer to read (zero: off).
    pub write_timeout: Duration,
    /// Socket options.
    pub sockets: SocketOptions,
    /// Service bus settings.
    pub bus: BusConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
    /// Calls at least this slow go to the slow log (reloadable).
    pub slowlog_threshold: Duration,
    /// Most entries of the slow log; 0: off (reloadable).
    pub slowlog_max_len: usize,
    /// TLS and PROXY protocol on the TCP listener.
    pub remote: crate::net::tls::RemoteConfig,
    /// Federation over NATS (`--nats`); off when it has no URL.
    pub federation: crate::federation::FederationConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            unix: Some(default_unix_path()),
            unix_mode: 0o600,
            unix_owner: None,
            unix_group: None,
            access: Access::default(),
            auth_token_file: None,
            protected_mode: true,
            tcp: DEFAULT_TCP.parse().ok(),
            backlog: 4096,
            backend: Backend::Auto,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue: 65536,
            max_frame: 1 << 20,
            max_output: 4 << 20,
            max_output_hard: 64 << 20,
            max_in_flight: 4096,
            max_buffer_memory: 1 << 30,
            max_batch: 1024,
            max_connections: 10_000,
            sniff_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(5),
            max_unauthenticated: 64,
            drain_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::ZERO,
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::ZERO,
            write_timeout: Duration::from_secs(30),
            sockets: SocketOptions::default(),
            bus: BusConfig::default(),
            log_format: LogFormat::Human,
            log: "info".into(),
            slowlog_threshold: crate::observe::slowlog::DEFAULT_THRESHOLD,
            slowlog_max_len: crate::observe::slowlog::DEFAULT_MAX_LEN,
            remote: crate::net::tls::RemoteConfig::default(),
            federation: crate::federation::FederationConfig::default(),
        }
    }
}

impl Config {
    /// Resolves a merged settings layer over the embedded defaults.
    pub fn resolve(settings: Settings) -> Result<Config, ConfigError> {
        let mut config = Config {
            sockets: resolve_sockets(&settings)?,
            bus: resolve_bus(&settings)?,
            federation: resolve_federation(&settings)?,
            ..Config::default()
        };
        config.access.policy = resolve_policy(&settings)?;
        config.remote = resolve_remote(&settings)?;
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
        let named = |option, text: &str, resolve: fn(&str) -> Result<u32, String>| {
            resolve(text).map_err(|e| invalid(option, e))
        };
        config.unix_owner = match &settings.unix_owner {
            Some(user) => Some(named("unix-owner", user, user_id)?),
            None => None,
        };
        config.unix_group = match &settings.unix_group {
            Some(group) => Some(named("unix-group", group, group_id)?),
            None => None,
        };
        if let Some(users) = &settings.allow_uids {
            if users.trim() == "any" {
                config.access.allow.any = true;
                config.access.allow.uids.clear();
            } else {
                config.access.allow.uids =
                    id_list(users, user_id).map_err(|e| invalid("allow-uids", e))?;
            }
        }
        if let Some(groups) = &settings.allow_gids {
            config.access.allow.gids =
                id_list(groups, group_id).map_err(|e| invalid("allow-gids", e))?;
        }
        if let Some(path) = settings.auth_token_file {
            config.access.tokens = read_tokens(&path).map_err(|e| invalid("auth-token-file", e))?;
            config.auth_token_file = Some(path);
        }
        config.access.tcp_anonymous = settings.tcp_anonymous.unwrap_or(false);
        if let Some(on) = settings.protected_mode {
            config.protected_mode = on;
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
        config.access.http = crate::http::HttpAccess::resolve(
            settings.http_origins.clone(),
            settings.http_hosts.clone(),
            config.tcp,
        );
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
        config.backend = settings.backend.unwrap_or(config.backend);
        config.workers = positive("workers", settings.workers, config.workers)?;
        config.queue = positive("queue", settings.queue, config.queue)?;
        config.max_batch = positive("max-batch", settings.max_batch, config.max_batch)?;
        config.max_in_flight = positive(
            "max-in-flight",
            settings.max_in_flight,
            config.max_in_flight,
        )?;
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
        if let Some(ByteSize(size)) = settings.max_output {
            if !(4096..=1 << 32).contains(&size) {
                return Err(invalid("max-output", "must be between 4KiB and 4GiB"));
            }
            config.max_output = size as usize;
        }
        config.max_output_hard = match settings.max_output_hard {
            Some(ByteSize(size)) if size < config.max_output as u64 => {
                return Err(invalid("max-output-hard", "must be at least max-output"));
            }
            Some(ByteSize(size)) => usize::try_from(size).unwrap_or(usize::MAX),
            None => config.max_output_hard.max(2 * config.max_output),
        };
        if let Some(ByteSize(size)) = settings.max_buffer_memory {
            if size < 1 << 20 {
                return Err(invalid("max-buffer-memory", "must be at least 1MiB"));
            }
            config.max_buffer_memory = usize::try_from(size).unwrap_or(usize::MAX);
        }
        if let Some(Span(t)) = settings.sniff_timeout {
            config.sniff_timeout = t;
        }
        config.max_unauthenticated = positive(
            "max-unauthenticated",
            settings.max_unauthenticated,
            config.max_unauthenticated,
        )?;
        if let Some(Span(t)) = settings.auth_timeout {
            config.auth_timeout = t;
        }
        if let Some(Span(t)) = settings.drain_timeout {
            config.drain_timeout = t;
        }
        if let Some(Span(t)) = settings.shutdown_grace {
            config.shutdown_grace = t;
        }
        let span = |value: Option<Span>, default: Duration| value.map_or(default, |Span(t)| t);
        config.frame_timeout = span(settings.frame_timeout, config.frame_timeout);
        config.idle_timeout = span(settings.idle_timeout, config.idle_timeout);
        config.write_timeout = span(settings.write_timeout, config.write_timeout);
        if let Some(format) = settings.log_format {
            config.log_format = format;
        }
        if let Some(log) = settings.log {
            config.log = log;
        }
        config.slowlog_threshold = span(settings.slowlog_threshold, config.slowlog_threshold);
        if let Some(n) = settings.slowlog_max_len {
            config.slowlog_max_len = n;
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
            unix_owner: self.unix_owner.map(|uid| uid.to_string()),
            unix_group: self.unix_group.map(|gid| gid.to_string()),
            allow_uids: Some(if self.access.allow.any {
                "any".into()
            } else {
                join_ids(&self.access.allow.uids)
            }),
            allow_gids: Some(join_ids(&self.access.allow.gids)),
            // The token itself is never rendered.
            auth_token_file: self.auth_token_file.clone(),
            protected_mode: Some(self.protected_mode),
            tcp: Some(self.tcp.map_or("off".into(), |a| a.to_string())),
            backlog: Some(self.backlog),
            backend: Some(self.backend),
            workers: Some(self.workers),
            queue: Some(self.queue),
            max_frame: Some(ByteSize(self.max_frame as u64)),
            max_output: Some(ByteSize(self.max_output as u64)),
            max_output_hard: Some(ByteSize(self.max_output_hard as u64)),
            max_in_flight: Some(self.max_in_flight),
            max_buffer_memory: Some(ByteSize(self.max_buffer_memory as u64)),
            max_batch: Some(self.max_batch),
            max_connections: Some(self.max_connections),
            sniff_timeout: Some(Span(self.sniff_timeout)),
            auth_timeout: Some(Span(self.auth_timeout)),
            max_unauthenticated: Some(self.max_unauthenticated),
            drain_timeout: Some(Span(self.drain_timeout)),
            shutdown_grace: Some(Span(self.shutdown_grace)),
            frame_timeout: Some(Span(self.frame_timeout)),
            idle_timeout: Some(Span(self.idle_timeout)),
            write_timeout: Some(Span(self.write_timeout)),
            tuning: Some(self.sockets.preset),
            tcp_nodelay: Some(self.sockets.tcp_nodelay),
            tcp_keepalive: Some(self.sockets.tcp_keepalive),
            tcp_keepalive_idle: Some(Span(self.sockets.tcp_keepalive_idle)),
            tcp_keepalive_interval: Some(Span(self.sockets.tcp_keepalive_interval)),
            tcp_keepalive_count: Some(self.sockets.tcp_keepalive_count),
            tcp_rcvbuf: Some(ByteSize(self.sockets.tcp_rcvbuf as u64)),
            tcp_sndbuf: Some(ByteSize(self.sockets.tcp_sndbuf as u64)),
            tcp_user_timeout: Some(Span(self.sockets.tcp_user_timeout)),
            tcp_quickack: Some(self.sockets.tcp_quickack),
            tcp_defer_accept: Some(Span(self.sockets.tcp_defer_accept)),
            tcp_fastopen: Some(self.sockets.tcp_fastopen),
            tcp_reuseaddr: Some(self.sockets.tcp_reuseaddr),
            unix_rcvbuf: Some(ByteSize(self.sockets.unix_rcvbuf as u64)),
            unix_sndbuf: Some(ByteSize(self.sockets.unix_sndbuf as u64)),
            bus_call_timeout: Some(Span(self.bus.call_timeout)),
            bus_queue_events: Some(self.bus.queue_events),
            bus_queue_bytes: Some(ByteSize(self.bus.queue_bytes as u64)),
            bus_slow_subscriber: Some(self.bus.slow_subscriber),
            bus_max_names: Some(self.bus.max_names),
            bus_max_subscriptions: Some(self.bus.max_subscriptions),
            bus_allow: Some(
                self.bus
                    .policy
                    .rules()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
            log_format: Some(self.log_format),
            log: Some(self.log.clone()),
            nats: Some(if self.federation.urls.is_empty() {
                "off".into()
            } else {
                self.federation.urls.join(",")
            }),
            nats_cluster: Some(self.federation.cluster.clone()),
            nats_identity: Some(self.federation.identity.clone()),
            nats_credentials: self.federation.credentials.clone(),
            nats_tls_ca: self.federation.tls_ca.clone(),
            nats_tls_cert: self.federation.tls_cert.clone(),
            nats_tls_key: self.federation.tls_key.clone(),
            nats_tls_required: Some(self.federation.tls_required),
            tcp_anonymous: Some(self.access.tcp_anonymous),
            // Flags print back as the tables they became.
            allow: Some(Vec::new()),
            deny: Some(Vec::new()),
            policy: Some(
                self.access
                    .policy
                    .rules()
                    .iter()
                    .map(crate::policy::Rule::to_table)
                    .collect(),
            ),
            slowlog_threshold: Some(Span(self.slowlog_threshold)),
            slowlog_max_len: Some(self.slowlog_max_len),
            tls_cert: self.remote.cert.clone(),
            tls_key: self.remote.key.clone(),
            tls_client_ca: self.remote.client_ca.clone(),
            tls_client_cert: self.remote.client_ca.as_ref().map(|_| {
                match self.remote.client_cert {
                    crate::net::tls::ClientCert::Optional => "optional",
                    _ => "required",
                }
                .into()
            }),
            tls_mode: self.remote.tls().then(|| {
                if self.remote.plaintext {
                    "both"
                } else {
                    "only"
                }
                .into()
            }),
            proxy_protocol_from: Some(self.remote.proxies.to_string()),
            http_origins: Some(self.access.http.origins.clone()),
            http_hosts: Some(self.access.http.hosts.clone()),
        }
    }

    /// The effective configuration as TOML, usable as a configuration file.
    pub fn render(&self) -> String {
        toml::to_string(&self.to_settings()).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// A user name or numeric uid.
pub(crate) fn user_id(name: &str) -> Result<u32, String> {
    let name = name.trim();
    if let Ok(uid) = name.parse() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        _ => Err(format!("no user named {name:?}")),
    }
}

/// A group name or numeric gid.
pub(crate) fn group_id(name: &str) -> Result<u32, String> {
    let name = name.trim();
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(format!("no group named {name:?}")),
    }
}

/// A comma-separated list of names or ids ("" is the empty list).
fn id_list(text: &str, resolve: fn(&str) -> Result<u32, String>) -> Result<Vec<u32>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(resolve)
        .collect()
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The bus settings, checked.
/// The federation settings (`--nats` and friends), checked.
fn resolve_federation(
    settings: &Settings,
) -> Result<crate::federation::FederationConfig, ConfigError> {
    let layer = crate::federation::FederationSettings {
        nats: settings.nats.as_deref(),
        cluster: settings.nats_cluster.as_deref(),
        identity: settings.nats_identity.as_deref(),
        credentials: settings.nats_credentials.as_ref(),
        tls_ca: settings.nats_tls_ca.as_ref(),
        tls_cert: settings.nats_tls_cert.as_ref(),
        tls_key: settings.nats_tls_key.as_ref(),
        tls_required: settings.nats_tls_required,
    };
    crate::federation::FederationConfig::resolve(&layer).map_err(|(option, e)| invalid(option, e))
}

fn resolve_bus(settings: &Settings) -> Result<BusConfig, ConfigError> {
    let mut bus = BusConfig::default();
    if let Some(Span(t)) = settings.bus_call_timeout {
        bus.call_timeout = t;
    }
    match settings.bus_queue_events {
        Some(0) => return Err(invalid("bus-queue-events", "must be at least 1")),
        Some(n) => bus.queue_events = n,
        None => {}
    }
    if let Some(ByteSize(size)) = settings.bus_queue_bytes {
        if !(1024..=1 << 32).contains(&size) {
            return Err(invalid("bus-queue-bytes", "must be between 1KiB and 4GiB"));
        }
        bus.queue_bytes = size as usize;
    }
    bus.slow_subscriber = settings.bus_slow_subscriber.unwrap_or(bus.slow_subscriber);
    match settings.bus_max_names {
        Some(0) => return Err(invalid("bus-max-names", "must be at least 1")),
        Some(n) => bus.max_names = n,
        None => {}
    }
    match settings.bus_max_subscriptions {
        Some(0) => return Err(invalid("bus-max-subscriptions", "must be at least 1")),
        Some(n) => bus.max_subscriptions = n,
        None => {}
    }
    if let Some(rules) = &settings.bus_allow {
        let rules = rules
            .iter()
            .filter(|r| !r.trim().is_empty())
            .map(|r| Rule::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("bus-allow", e))?;
        bus.policy = Policy::new(rules);
    }
    Ok(bus)
}

/// The policy rules: `[[policy]]` tables first, then `--allow` and `--deny`.
fn resolve_policy(settings: &Settings) -> Result<crate::policy::Policy, ConfigError> {
    use crate::policy::{Policy, Rule};
    let mut rules = Vec::new();
    for (n, table) in settings.policy.iter().flatten().enumerate() {
        rules.push(
            Rule::from_table(table, format!("[[policy]] #{}", n + 1))
                .map_err(|e| invalid("policy", e))?,
        );
    }
    for (flags, deny) in [(&settings.allow, false), (&settings.deny, true)] {
        for text in flags.iter().flatten().filter(|t| !t.trim().is_empty()) {
            rules.push(
                Rule::from_flag(text, deny)
                    .map_err(|e| invalid(if deny { "deny" } else { "allow" }, e))?,
            );
        }
    }
    Ok(Policy::new(rules))
}

/// The preset named by `tuning`, with each option set on its own applied over it.
/// The TLS and PROXY options, checked together (files are read at bind).
fn resolve_remote(settings: &Settings) -> Result<crate::net::tls::RemoteConfig, ConfigError> {
    use crate::net::tls::{ClientCert, RemoteConfig};
    let mut remote = RemoteConfig {
        cert: settings.tls_cert.clone(),
        key: settings.tls_key.clone(),
        client_ca: settings.tls_client_ca.clone(),
        ..RemoteConfig::default()
    };
    match (&remote.cert, &remote.key) {
        (Some(_), None) => return Err(invalid("tls-key", "--tls-cert needs --tls-key")),
        (None, Some(_)) => return Err(invalid("tls-cert", "--tls-key needs --tls-cert")),
        _ => {}
    }
    let tls = remote.cert.is_some();
    if !tls && remote.client_ca.is_some() {
        return Err(invalid("tls-client-ca", "needs --tls-cert and --tls-key"));
    }
    remote.client_cert = match (settings.tls_client_cert.as_deref(), &remote.client_ca) {
        (Some(_), None) => return Err(invalid("tls-client-cert", "needs --tls-client-ca")),
        (None, None) => ClientCert::Off,
        (None | Some("required"), Some(_)) => ClientCert::Required,
        (Some("optional"), Some(_)) => ClientCert::Optional,
        (Some(other), Some(_)) => {
            return Err(invalid(
                "tls-client-cert",
                format_args!("{other:?}: use required or optional"),
            ));
        }
    };
    remote.plaintext = match settings.tls_mode.as_deref() {
        None | Some("only") => false,
        Some("both") if tls => true,
        Some("both") => return Err(invalid("tls-mode", "needs --tls-cert and --tls-key")),
        Some(other) => {
            return Err(invalid(
                "tls-mode",
                format_args!("{other:?}: use only or both"),
            ));
        }
    };
    if let Some(list) = &settings.proxy_protocol_from {
        remote.proxies = crate::net::proxy::TrustedProxies::parse(list)
            .map_err(|e| invalid("proxy-protocol-from", e))?;
    }
    Ok(remote)
}

fn resolve_sockets(settings: &Settings) -> Result<SocketOptions, ConfigError> {
    let mut options = SocketOptions::preset(settings.tuning.unwrap_or_default());
    let buffer = |option, value: Option<ByteSize>, default: usize| match value {
        Some(ByteSize(n)) if n > (1 << 30) => Err(invalid(option, "must be at most 1GiB")),
        Some(ByteSize(n)) => Ok(n as usize),
        None => Ok(default),
    };
    let span = |value: Option<Span>, default: Duration| value.map_or(default, |Span(t)| t);
    options.tcp_nodelay = settings.tcp_nodelay.unwrap_or(options.tcp_nodelay);
    options.tcp_keepalive = settings.tcp_keepalive.unwrap_or(options.tcp_keepalive);
    options.tcp_keepalive_idle = span(settings.tcp_keepalive_idle, options.tcp_keepalive_idle);
    options.tcp_keepalive_interval = span(
        settings.tcp_keepalive_interval,
        options.tcp_keepalive_interval,
    );
    options.tcp_keepalive_count = settings
        .tcp_keepalive_count
        .unwrap_or(options.tcp_keepalive_count);
    options.tcp_rcvbuf = buffer("tcp-rcvbuf", settings.tcp_rcvbuf, options.tcp_rcvbuf)?;
    options.tcp_sndbuf = buffer("tcp-sndbuf", settings.tcp_sndbuf, options.tcp_sndbuf)?;
    options.tcp_user_timeout = span(settings.tcp_user_timeout, options.tcp_user_timeout);
    options.tcp_quickack = settings.tcp_quickack.unwrap_or(options.tcp_quickack);
    options.tcp_defer_accept = span(settings.tcp_defer_accept, options.tcp_defer_accept);
    options.tcp_fastopen = settings.tcp_fastopen.unwrap_or(options.tcp_fastopen);
    options.tcp_reuseaddr = settings.tcp_reuseaddr.unwrap_or(options.tcp_reuseaddr);
    options.unix_rcvbuf = buffer("unix-rcvbuf", settings.unix_rcvbuf, options.unix_rcvbuf)?;
    options.unix_sndbuf = buffer("unix-sndbuf", settings.unix_sndbuf, options.unix_sndbuf)?;
    if options.tcp_keepalive
        && (options.tcp_keepalive_idle.as_secs() == 0
            || options.tcp_keepalive_interval.as_secs() == 0)
    {
        return Err(invalid(
            "tcp-keepalive-idle/interval",
            "must be at least 1s while keepalive is on",
        ));
    }
    Ok(options)
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
    fn single_socket_options_override_the_preset() {
        let config = Config::resolve(Settings {
            tuning: Some(Preset::HighThroughput),
            tcp_sndbuf: Some(ByteSize(4096)),
            tcp_nodelay: Some(false),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(config.sockets.preset, Preset::HighThroughput);
        assert_eq!(config.sockets.tcp_rcvbuf, 1 << 20, "from the preset");
        assert_eq!(config.sockets.tcp_sndbuf, 4096, "set on its own");
        assert!(!config.sockets.tcp_nodelay);
        let rendered: Settings = toml::from_str(&config.render()).expect("toml");
        assert_eq!(Config::resolve(rendered).expect("valid"), config);
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
        let owner = bad(Settings {
            unix_owner: Some("no-such-user-here".into()),
            ..Default::default()
        });
        assert!(
            owner.contains("unix-owner") && owner.contains("no-such-user-here"),
            "{owner}"
        );
        assert!(
            bad(Settings {
                allow_gids: Some("0,no-such-group-here".into()),
                ..Default::default()
            })
            .contains("allow-gids")
        );
        assert!(toml::from_str::<Settings>("no-such-option = 1").is_err());
    }
}
