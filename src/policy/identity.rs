//! Identities: who is at the other end of a connection, as rules name it.

use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

/// The token name that stands for the daemon's own user: the token the
/// daemon generates, and a token file's single unnamed token.
pub const OWNER_TOKEN: &str = "owner";

/// How the identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// A Unix peer, by its kernel credentials.
    Unix,
    /// A TCP peer, by the named token it authenticated with.
    Token,
    /// A TCP peer let in without a token (`tcp-anonymous`).
    Anonymous,
    /// A TLS peer by the verified client certificate it showed (mutual TLS).
    Certificate,
    /// Not established yet (a TCP connection before `rpc.auth`), or a Unix
    /// peer whose credentials could not be read.
    Unknown,
}

/// Who a connection is, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// How it was established.
    pub kind: IdentityKind,
    /// The user id (Unix peers; the owner token stands for the daemon's).
    pub uid: Option<u32>,
    /// The primary group id.
    pub gid: Option<u32>,
    /// The user's name, when the user database knows it.
    pub user: Option<Arc<str>>,
    /// The user's groups from the group database (beside the primary one).
    pub groups: Arc<[u32]>,
    /// The token's name (TCP peers that authenticated).
    pub token: Option<Arc<str>>,
    /// The client certificate's name (mutual TLS; see `net::tls::certificate_name`).
    pub cert: Option<Arc<str>>,
}

impl Identity {
    /// Not established.
    pub fn unauthenticated() -> Self {
        Self {
            kind: IdentityKind::Unknown,
            uid: None,
            gid: None,
            user: None,
            groups: Arc::from([]),
            token: None,
            cert: None,
        }
    }

    /// A TLS peer known by its verified client certificate's name.
    pub fn certificate(name: &str) -> Self {
        Self {
            kind: IdentityKind::Certificate,
            cert: Some(name.into()),
            ..Self::unauthenticated()
        }
    }

    /// A TCP peer without a token.
    pub fn anonymous() -> Self {
        Self {
            kind: IdentityKind::Anonymous,
            ..Self::unauthenticated()
        }
    }

    /// True when some group of this identity (primary or other) is `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == Some(gid) || self.groups.contains(&gid)
    }

    /// The short form `rpc.clients` shows: `user:alice`, `uid:1000`,
    /// `token:build-agent`, `cert:agent.example`, `anonymous`, `unauthenticated`.
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.user, self.uid, &self.token) {
            (IdentityKind::Token, _, _, Some(token)) => write!(f, "token:{token}"),
            (IdentityKind::Anonymous, ..) => f.write_str("anonymous"),
            (IdentityKind::Certificate, ..) => {
                write!(f, "cert:{}", self.cert.as_deref().unwrap_or(""))
            }
            (IdentityKind::Unix, Some(user), _, _) => write!(f, "user:{user}"),
            (IdentityKind::Unix, None, Some(uid), _) => write!(f, "uid:{uid}"),
            _ => f.write_str("unauthenticated"),
        }
    }
}

/// A user's name and groups, looked up once per uid.
#[derive(Debug, Clone)]
pub(crate) struct UserEntry {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) groups: Arc<[u32]>,
}

/// The user database, asked once per uid (at accept) and remembered; the
/// table is emptied when it reaches [`UserCache::CAP`] uids.
#[derive(Debug, Default)]
pub(crate) struct UserCache {
    known: HashMap<u32, UserEntry>,
}

impl UserCache {
    const CAP: usize = 1024;

    /// The name and (when `groups` is asked for) the groups of `uid`.
    pub(crate) fn lookup(&mut self, uid: u32, gid: u32, groups: bool) -> UserEntry {
        if let Some(entry) = self.known.get(&uid) {
            return entry.clone();
        }
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let list: Arc<[u32]> = match (&user, groups) {
            (Some(user), true) => std::ffi::CString::new(user.name.as_str())
                .ok()
                .and_then(|name| {
                    nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)).ok()
                })
                .map(|gids| gids.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_else(|| Arc::from([])),
            _ => Arc::from([]),
        };
        let entry = UserEntry {
            name: user.map(|u| Arc::from(u.name.as_str())),
            groups: list,
        };
        if self.known.len() >= Self::CAP {
            self.known.clear();
        }
        self.known.insert(uid, entry.clone());
        entry
    }
}
