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

use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::net::Transport;

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

/// Tokens shorter than this are accepted with a warning.
pub const SHORT_TOKEN: usize = 16;

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
    /// The file holds nothing but whitespace.
    #[error("the auth token file {0} is empty")]
    Empty(String),
}

impl AuthToken {
    /// A token from its bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into().into_boxed_slice())
    }

    /// Reads the token from a file: its content without surrounding whitespace.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        let trimmed = text.trim_ascii();
        if trimmed.is_empty() {
            return Err(TokenError::Empty(shown));
        }
        Ok(Self::new(trimmed))
    }

    /// Length in bytes (for the "short token" warning; never the bytes).
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

/// The access policy every connection is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Who may use the Unix socket.
    pub allow: AllowList,
    /// The token TCP connections must present first; None: no authentication.
    pub token: Option<AuthToken>,
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
    /// could not be read is denied unless anyone is allowed.
    pub fn gate(&self, peer: &Peer) -> Gate {
        match peer {
            Peer::Unix(_) if self.allow.any => Gate::Open,
            Peer::Unix(Some(cred)) if self.allow.permits(cred) => Gate::Open,
            Peer::Unix(_) => Gate::Denied,
            Peer::Tcp(_) if self.token.is_some() => Gate::AuthRequired,
            Peer::Tcp(_) => Gate::Open,
        }
    }
}

/// How often a failed authentication is logged at most.
const AUTH_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Logs a failed authentication (never the token), at most once per
/// [`AUTH_WARNING_EVERY`] with the number since the last line, so that a
/// peer guessing tokens cannot flood the log.
pub fn warn_auth_failure(conn: usize, peer: &Peer) {
    static LAST: std::sync::Mutex<(Option<std::time::Instant>, u64)> =
        std::sync::Mutex::new((None, 0));
    let Ok(mut last) = LAST.lock() else { return };
    let now = std::time::Instant::now();
    last.1 += 1;
    if last
        .0
        .is_none_or(|at| now.duration_since(at) >= AUTH_WARNING_EVERY)
    {
        tracing::warn!(conn, peer = %peer, failures = last.1, "authentication failed; closing");
        *last = (Some(now), 0);
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
        let access = Access {
            allow: list,
            token: None,
        };
        assert_eq!(access.gate(&Peer::Unix(None)), Gate::Denied);
        assert_eq!(access.gate(&Peer::Unix(Some(cred(1000, 1)))), Gate::Open);
        assert_eq!(access.gate(&Peer::Tcp(None)), Gate::Open);
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
