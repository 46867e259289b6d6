//! Who may talk to the daemon.
//!
//! Unix-socket peers are known by their kernel credentials (SO_PEERCRED on
//! Linux, getpeereid elsewhere) and checked against an allow-list of uids and
//! gids when they connect. TCP peers have no credentials; when an auth token
//! is configured, a TCP connection's first request must be `rpc.auth` with
//! that token. Tokens are compared in constant time and never logged.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;

pub use junction_client::path::{client_secret, split_named, tcp_token_path, token_path};

use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::net::Transport;
use crate::policy::OWNER_TOKEN;

/// What the kernel says about the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeerCred {
    /// Its process id (None where the platform does not report it).
    pub pid: Option<i32>,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective (primary) group id.
    pub gid: u32,
}

/// Who is at the other end of a connection, as far as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A Unix-socket peer and its credentials (None if they could not be read).
    Unix(Option<PeerCred>),
    /// A TCP peer and its address (None if it could not be read).
    Tcp(Option<SocketAddr>),
}

impl Peer {
    /// The transport the peer came in on.
    pub fn transport(&self) -> Transport {
        match self {
            Peer::Unix(_) => Transport::Unix,
            Peer::Tcp(_) => Transport::Tcp,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Unix(Some(c)) => match c.pid {
                Some(pid) => write!(f, "unix pid={pid} uid={} gid={}", c.uid, c.gid),
                None => write!(f, "unix uid={} gid={}", c.uid, c.gid),
            },
            Peer::Unix(None) => f.write_str("unix (credentials unknown)"),
            Peer::Tcp(Some(addr)) => write!(f, "tcp {addr}"),
            Peer::Tcp(None) => f.write_str("tcp (address unknown)"),
        }
    }
}

/// Reads the credentials of a connected Unix socket's peer.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_credentials(socket: &impl AsFd) -> io::Result<PeerCred> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(socket, PeerCredentials).map_err(io::Error::from)?;
    Ok(PeerCred {
        pid: Some(cred.pid()),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// Reads the credentials of a connected Unix socket's peer.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn peer_credentials(socket: &impl AsFd) -> io::Result<PeerCred> {
    let (uid, gid) = nix::unistd::getpeereid(socket).map_err(io::Error::from)?;
    Ok(PeerCred {
        pid: None,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}

/// The uids and gids allowed on the Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    /// Anyone who can open the socket file (the file mode is then the only gate).
    pub any: bool,
    /// Allowed user ids.
    pub uids: Vec<u32>,
    /// Allowed primary group ids.
    pub gids: Vec<u32>,
}

impl Default for AllowList {
    /// The daemon's own user and root.
    fn default() -> Self {
        let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
        uids.dedup();
        Self {
            any: false,
            uids,
            gids: Vec::new(),
        }
    }
}

impl AllowList {
    /// Whether a peer with these credentials may connect.
    pub fn permits(&self, cred: &PeerCred) -> bool {
        self.any || self.uids.contains(&cred.uid) || self.gids.contains(&cred.gid)
    }
}

/// A shared secret TCP clients present with `rpc.auth`. Its Debug output is
/// redacted, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(Box<[u8]>);

/// Tokens shorter than this are refused on a non-loopback address.
pub const SHORT_TOKEN: usize = 16;

/// Bytes of randomness in a token the daemon generates.
pub const GENERATED_TOKEN_BYTES: usize = 32;

/// Why a token file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the auth token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The file holds nothing but whitespace and comments.
    #[error("the auth token file {0} is empty")]
    Empty(String),
    /// A line is not `NAME:SECRET`, or a name repeats.
    #[error("the auth token file {path}, line {line}: {why}")]
    Line {
        /// The file.
        path: String,
        /// The line number (from 1).
        line: usize,
        /// What is wrong (never the secret).
        why: String,
    },
}

impl AuthToken {
    /// A token from its bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into().into_boxed_slice())
    }

    /// Length in bytes (for the "short token" check; never the bytes).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: an empty token is refused when it is read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in time that depends on the lengths only, never on where
    /// the first differing byte is.
    pub fn matches(&self, offered: &[u8]) -> bool {
        self.0.as_ref().ct_eq(offered).into()
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// A token and the name rules know its holder by (`token:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedToken {
    /// The name; [`OWNER_TOKEN`] stands for the daemon's own user.
    pub name: String,
    /// The secret.
    pub token: AuthToken,
}

impl NamedToken {
    /// The token of the daemon's own user.
    pub fn owner(token: AuthToken) -> Self {
        Self {
            name: OWNER_TOKEN.into(),
            token,
        }
    }
}

/// Reads a token file: one `NAME:SECRET` per line (blank lines and lines
/// starting with `#` are skipped), or a single line holding only a secret,
/// which is the daemon's own user's token ([`OWNER_TOKEN`]).
pub fn read_tokens(path: &Path) -> Result<Vec<NamedToken>, TokenError> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| TokenError::Read {
        path: shown.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let line_error = |line, why: &str| TokenError::Line {
        path: shown.clone(),
        line,
        why: why.into(),
    };
    match lines.as_slice() {
        [] => Err(TokenError::Empty(shown.clone())),
        [(_, only)] if split_named(only).is_none() => {
            Ok(vec![NamedToken::owner(AuthToken::new(only.as_bytes()))])
        }
        _ => {
            let mut tokens: Vec<NamedToken> = Vec::with_capacity(lines.len());
            for (n, line) in &lines {
                let Some((name, secret)) = split_named(line) else {
                    return Err(line_error(
                        *n,
                        "expected NAME:SECRET (NAME of letters, digits, '-', '_', '.')",
                    ));
                };
                let secret = secret.trim();
                if secret.is_empty() {
                    return Err(line_error(*n, "the secret is empty"));
                }
                if tokens.iter().any(|t| t.name == name) {
                    return Err(line_error(*n, "this name is already used"));
                }
                tokens.push(NamedToken {
                    name: name.into(),
                    token: AuthToken::new(secret.as_bytes()),
                });
            }
            Ok(tokens)
        }
    }
}

/// Creates a fresh random token and writes it, mode 0600, to `path`: into
/// a new file (O_EXCL, O_NOFOLLOW) that then replaces `path` atomically,
/// so a symlink planted at `path` is replaced, never followed.
pub fn generate_token_file(path: &Path) -> io::Result<AuthToken> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut random = [0u8; GENERATED_TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.new", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(hex.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(AuthToken::new(hex.into_bytes()))
}

/// The access policy every connection is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Who may use the Unix socket.
    pub allow: AllowList,
    /// The tokens TCP connections authenticate with; empty: the server
    /// generates one for the daemon's user when it binds.
    pub tokens: Vec<NamedToken>,
    /// TCP peers may skip `rpc.auth` and be `anonymous` (loopback only).
    pub tcp_anonymous: bool,
    /// Who may do what.
    pub policy: crate::policy::Policy,
    /// Which browser Origins and Host names HTTP requests may carry.
    pub http: crate::http::HttpAccess,
}

/// Where a new connection stands before its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Requests are served.
    Open,
    /// The peer is not on the allow-list: it gets an error and a close.
    Denied,
    /// The first request must be `rpc.auth` with the token.
    AuthRequired,
}

impl Access {
    /// The gate a new connection starts at. A Unix peer whose credentials
    /// could not be read is denied unless anyone is allowed. A TCP peer
    /// must authenticate unless anonymous TCP is on.
    pub fn gate(&self, peer: &Peer) -> Gate {
        match peer {
            Peer::Unix(_) if self.allow.any => Gate::Open,
            Peer::Unix(Some(cred)) if self.allow.permits(cred) => Gate::Open,
            Peer::Unix(_) => Gate::Denied,
            Peer::Tcp(_) if self.tcp_anonymous => Gate::Open,
            Peer::Tcp(_) => Gate::AuthRequired,
        }
    }

    /// The name of the token `offered` is, if any. Every token is compared
    /// (in constant time each), whichever matches.
    pub fn match_token(&self, offered: &[u8]) -> Option<&str> {
        let mut found = None;
        for named in &self.tokens {
            if named.token.matches(offered) && found.is_none() {
                found = Some(named.name.as_str());
            }
        }
        found
    }
}

/// How often a failed authentication is logged at most.
const AUTH_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A warning that is logged at most once per period, with the number of
/// times it was due since the last line, so that a peer cannot flood the
/// log with it (failed authentications, policy refusals).
pub(crate) struct LogThrottle(std::sync::Mutex<(Option<std::time::Instant>, u64)>);

impl LogThrottle {
    /// A warning not logged yet.
    pub(crate) const fn new() -> Self {
        Self(std::sync::Mutex::new((None, 0)))
    }

    /// Counts one occurrence; returns how many there were (this one
    /// included) when it is time to log a line, else None.
    pub(crate) fn due(&self, every: std::time::Duration) -> Option<u64> {
        let mut last = self.0.lock().ok()?;
        let now = std::time::Instant::now();
        last.1 += 1;
        if last.0.is_some_and(|at| now.duration_since(at) < every) {
            return None;
        }
        let count = last.1;
        *last = (Some(now), 0);
        Some(count)
    }
}

/// Logs a failed authentication (never the token), at most once per
/// `AUTH_WARNING_EVERY` (5 s) with the number since the last line, so that a
/// peer guessing tokens cannot flood the log.
pub fn warn_auth_failure(conn: usize, peer: &Peer) {
    static WARNING: LogThrottle = LogThrottle::new();
    if let Some(failures) = WARNING.due(AUTH_WARNING_EVERY) {
        tracing::warn!(conn, peer = %peer, failures, "authentication failed; closing");
    }
}

/// The method a TCP client authenticates with.
pub const AUTH_METHOD: &str = "rpc.auth";

/// The token offered in `rpc.auth`'s params: `{"token": "..."}`, `["..."]`,
/// or (MCP1) a raw body holding the token's bytes.
pub fn offered_token(params: crate::router::Params<'_>) -> Option<Vec<u8>> {
    use crate::router::Params;
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Offer {
        Named { token: String },
        Positional((String,)),
    }
    match params {
        Params::None => None,
        Params::Raw(bytes) => Some(bytes.to_vec()),
        Params::Json(raw) => match serde_json::from_str::<Offer>(raw.get()).ok()? {
            Offer::Named { token } | Offer::Positional((token,)) => Some(token.into_bytes()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Params;
    use serde_json::value::RawValue;

    #[test]
    fn a_throttled_warning_logs_once_per_period_with_the_count() {
        let warning = LogThrottle::new();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(warning.due(hour), Some(1), "the first one is logged");
        assert_eq!(warning.due(hour), None);
        assert_eq!(warning.due(hour), None);
        // Once the period has passed, the line counts what was held back.
        assert_eq!(warning.due(std::time::Duration::ZERO), Some(3));
        assert_eq!(warning.due(std::time::Duration::ZERO), Some(1));
    }

    #[test]
    fn tokens_match_exactly_and_never_print() {
        let token = AuthToken::new("s3cret-s3cret-s3cret");
        assert!(token.matches(b"s3cret-s3cret-s3cret"));
        assert!(!token.matches(b"s3cret-s3cret-s3creT"));
        assert!(!token.matches(b"s3cret"));
        assert!(!token.matches(b""));
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn the_allow_list_checks_uid_or_gid() {
        let list = AllowList {
            any: false,
            uids: vec![1000],
            gids: vec![50],
        };
        let cred = |uid, gid| PeerCred {
            pid: Some(1),
            uid,
            gid,
        };
        assert!(list.permits(&cred(1000, 1)));
        assert!(list.permits(&cred(7, 50)));
        assert!(!list.permits(&cred(7, 7)));
        let mut access = Access {
            allow: list,
            ..Access::default()
        };
        assert_eq!(access.gate(&Peer::Unix(None)), Gate::Denied);
        assert_eq!(access.gate(&Peer::Unix(Some(cred(1000, 1)))), Gate::Open);
        assert_eq!(access.gate(&Peer::Tcp(None)), Gate::AuthRequired);
        access.tcp_anonymous = true;
        assert_eq!(access.gate(&Peer::Tcp(None)), Gate::Open);
    }

    #[test]
    fn token_files_hold_one_secret_or_named_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |text: &str| {
            let path = dir.path().join("t");
            std::fs::write(&path, text).expect("write");
            read_tokens(&path)
        };
        let one = file("  s3cret-s3cret-s3cret \n").expect("one");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, OWNER_TOKEN);
        assert!(one[0].token.matches(b"s3cret-s3cret-s3cret"));
        let named = file("# agents\nbuild-agent:aaaa\n\nci:bbbb\n").expect("named");
        assert_eq!(named.len(), 2);
        assert_eq!(
            (named[0].name.as_str(), named[1].name.as_str()),
            ("build-agent", "ci")
        );
        let access = Access {
            tokens: named,
            ..Access::default()
        };
        assert_eq!(access.match_token(b"bbbb"), Some("ci"));
        assert_eq!(access.match_token(b"cccc"), None);
        assert!(matches!(
            file("a:1\nno colon here\n"),
            Err(TokenError::Line { line: 2, .. })
        ));
        assert!(matches!(
            file("a:1\na:2\n"),
            Err(TokenError::Line { line: 2, .. })
        ));
        assert!(matches!(
            file("a:1\nb:\n"),
            Err(TokenError::Line { line: 2, .. })
        ));
        assert!(matches!(file("# nothing\n\n"), Err(TokenError::Empty(_))));
        assert_eq!(client_secret("ci:bbbb\n"), "bbbb");
        assert_eq!(client_secret("plain\n"), "plain");
    }

    #[test]
    fn a_generated_token_replaces_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").expect("write");
        let path = dir.path().join("junction.sock.token");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        let token = generate_token_file(&path).expect("generate");
        assert_eq!(token.len(), 2 * GENERATED_TOKEN_BYTES);
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "untouched");
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let read = read_tokens(&path).expect("read back");
        assert_eq!(read, vec![NamedToken::owner(token)]);
    }

    #[test]
    fn tokens_are_offered_by_name_position_or_raw_body() {
        let json = |text: &str| {
            let raw: Box<RawValue> = serde_json::from_str(text).expect("json");
            offered_token(Params::Json(&raw))
        };
        assert_eq!(json(r#"{"token":"abc"}"#), Some(b"abc".to_vec()));
        assert_eq!(json(r#"["a\u0062c"]"#), Some(b"abc".to_vec()));
        assert_eq!(json(r#"{"token":5}"#), None);
        assert_eq!(json("[]"), None);
        assert_eq!(offered_token(Params::Raw(b"xyz")), Some(b"xyz".to_vec()));
        assert_eq!(offered_token(Params::None), None);
    }
}
