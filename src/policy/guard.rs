//! The policy at run time: identities made at accept and at `rpc.auth`,
//! their compiled grants, and the throttle on failed authentications.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;

use super::identity::UserCache;
use super::{Grants, Identity, IdentityKind, OWNER_TOKEN, Policy, Rights};
use crate::access::{Access, Gate, Peer};

/// What the server consults to identify connections and judge them.
#[derive(Debug)]
pub struct Guard {
    policy: Policy,
    /// The `bus-allow` rules, when there are any.
    legacy: Option<Arc<crate::bus::policy::Policy>>,
    daemon_uid: u32,
    /// Who the owner token stands for: the daemon's user.
    owner_token: Identity,
    groups: bool,
    tcp_anonymous: bool,
    everything: Arc<Grants>,
    users: Mutex<UserCache>,
    /// One identity per Unix (uid, gid), shared by all its connections: an
    /// idle connection then holds a pointer, not its own copy (emptied at
    /// [`UNIX_IDENTITIES_CAP`] entries; a reload starts a new guard).
    unix_identities: Mutex<std::collections::HashMap<(u32, u32), Arc<Identity>>>,
    throttle: Mutex<Throttle>,
}

/// Most Unix identities a guard remembers.
const UNIX_IDENTITIES_CAP: usize = 1024;

impl Default for Guard {
    fn default() -> Self {
        Self::new(&Access::default(), &crate::bus::policy::Policy::default())
    }
}

impl Guard {
    /// The guard for this access configuration and these `bus-allow` rules.
    pub fn new(access: &Access, legacy: &crate::bus::policy::Policy) -> Self {
        let daemon_uid = nix::unistd::geteuid().as_raw();
        let daemon_gid = nix::unistd::getegid().as_raw();
        let groups = access.policy.names_groups();
        let mut users = UserCache::default();
        let me = users.lookup(daemon_uid, daemon_gid, groups);
        Self {
            policy: access.policy.clone(),
            legacy: (!legacy.rules().is_empty()).then(|| Arc::new(legacy.clone())),
            daemon_uid,
            owner_token: Identity {
                kind: IdentityKind::Token,
                uid: Some(daemon_uid),
                gid: Some(daemon_gid),
                user: me.name,
                groups: me.groups,
                token: Some(OWNER_TOKEN.into()),
                cert: None,
            },
            groups,
            tcp_anonymous: access.tcp_anonymous,
            everything: Arc::new(Grants::everything()),
            users: Mutex::new(users),
            unix_identities: Mutex::default(),
            throttle: Mutex::new(Throttle::default()),
        }
    }

    /// The rights of a connection just accepted: a Unix peer by its
    /// credentials, an anonymous TCP peer when that is allowed; others
    /// have none until they authenticate.
    pub fn admit(&self, peer: &Peer, gate: Gate) -> Rights {
        match (peer, gate) {
            (_, Gate::Denied | Gate::AuthRequired) => Rights::default(),
            (Peer::Unix(Some(cred)), Gate::Open) => {
                let entry = match self.users.lock() {
                    Ok(mut users) => users.lookup(cred.uid, cred.gid, self.groups),
                    Err(poisoned) => poisoned
                        .into_inner()
                        .lookup(cred.uid, cred.gid, self.groups),
                };
                let mut known = match self.unix_identities.lock() {
                    Ok(known) => known,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if known.len() >= UNIX_IDENTITIES_CAP {
                    known.clear();
                }
                let identity = known.entry((cred.uid, cred.gid)).or_insert_with(|| {
                    Arc::new(Identity {
                        kind: IdentityKind::Unix,
                        uid: Some(cred.uid),
                        gid: Some(cred.gid),
                        user: entry.name,
                        groups: entry.groups,
                        token: None,
                        cert: None,
                    })
                });
                let identity = Arc::clone(identity);
                drop(known);
                self.rights_of(identity, peer)
            }
            (Peer::Unix(None), Gate::Open) => Rights::default(),
            (Peer::Tcp(_), Gate::Open) if self.tcp_anonymous => {
                self.rights(Identity::anonymous(), peer)
            }
            (Peer::Tcp(_), Gate::Open) => Rights::default(),
        }
    }

    /// The rights of a TCP peer that authenticated with the token `name`.
    pub fn token(&self, name: &str, peer: &Peer) -> Rights {
        let identity = if name == OWNER_TOKEN {
            self.owner_token.clone()
        } else {
            Identity {
                kind: IdentityKind::Token,
                token: Some(name.into()),
                ..Identity::unauthenticated()
            }
        };
        self.rights(identity, peer)
    }

    /// The rights of a TLS peer whose verified client certificate is `name`.
    pub fn certificate(&self, name: &str, peer: &Peer) -> Rights {
        self.rights(Identity::certificate(name), peer)
    }

    /// Compiles the grants of `identity` from the rules that name it.
    fn rights(&self, identity: Identity, peer: &Peer) -> Rights {
        self.rights_of(Arc::new(identity), peer)
    }

    /// The same for an identity already shared.
    fn rights_of(&self, identity: Arc<Identity>, peer: &Peer) -> Rights {
        let owner = matches!(identity.kind, IdentityKind::Unix | IdentityKind::Token)
            && identity
                .uid
                .is_some_and(|uid| uid == 0 || uid == self.daemon_uid);
        let (allow, deny) = self.policy.gather(&identity);
        let grants = if owner && deny.is_empty() && self.legacy.is_none() {
            Arc::clone(&self.everything)
        } else {
            Arc::new(Grants {
                all: false,
                all_calls: (owner || allow.call.contains(&super::Scope::All))
                    && deny.call.is_empty(),
                owner,
                allow,
                deny,
                legacy: self.legacy.as_ref().map(|l| (Arc::clone(l), *peer)),
            })
        };
        Rights::new(identity, grants)
    }

    /// Judges an open connection again after a reload: the rights the
    /// policy now gives `identity`, or [`Rejudged::Close`] when it is no
    /// longer let in at all (a Unix peer off the allow-list, a token removed,
    /// anonymous TCP turned off). Not yet identified connections are kept.
    pub fn rejudge(&self, access: &Access, identity: &Identity, peer: &Peer) -> Rejudged {
        match identity.kind {
            IdentityKind::Unix => match access.gate(peer) {
                Gate::Open => Rejudged::Rights(self.admit(peer, Gate::Open)),
                _ => Rejudged::Close,
            },
            IdentityKind::Token => match &identity.token {
                Some(name) if access.tokens.iter().any(|t| *t.name == **name) => {
                    Rejudged::Rights(self.token(name, peer))
                }
                _ => Rejudged::Close,
            },
            IdentityKind::Anonymous if access.tcp_anonymous => {
                Rejudged::Rights(self.rights(Identity::anonymous(), peer))
            }
            IdentityKind::Anonymous => Rejudged::Close,
            // The certificate was verified at the handshake; only its grants change.
            IdentityKind::Certificate => match &identity.cert {
                Some(name) => Rejudged::Rights(self.certificate(name, peer)),
                None => Rejudged::Close,
            },
            IdentityKind::Unknown => Rejudged::Keep,
        }
    }

    /// Takes over `old`'s record of failed authentications, so that a
    /// reload does not let a guesser start afresh.
    pub fn carry_over(&self, old: &Guard) {
        if let (Ok(mut mine), Ok(mut theirs)) = (self.throttle.lock(), old.throttle.lock()) {
            mine.entries = std::mem::take(&mut theirs.entries);
        }
    }

    /// Err while `peer`'s address is throttled for failed authentications.
    pub fn auth_allowed(&self, peer: &Peer, now: Instant) -> Result<(), Throttled> {
        match (peer, self.throttle.lock()) {
            (Peer::Tcp(Some(addr)), Ok(mut throttle)) => throttle.check(addr.ip(), now),
            _ => Ok(()),
        }
    }

    /// Records a failed authentication from `peer`'s address.
    pub fn auth_failed(&self, peer: &Peer, now: Instant) {
        if let (Peer::Tcp(Some(addr)), Ok(mut throttle)) = (peer, self.throttle.lock()) {
            throttle.failed(addr.ip(), now);
        }
    }

    /// Forgets the failures of `peer`'s address after a success.
    pub fn auth_passed(&self, peer: &Peer) {
        if let (Peer::Tcp(Some(addr)), Ok(mut throttle)) = (peer, self.throttle.lock()) {
            throttle.entries.remove(&key(addr.ip()));
        }
    }
}

/// A connection judged again after a reload.
#[derive(Debug)]
pub enum Rejudged {
    /// Not identified yet: nothing to change.
    Keep,
    /// Its identity's rights under the new policy.
    Rights(Rights),
    /// No longer let in: close it.
    Close,
}

/// An address refused for now after too many failed authentications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// How long until it may try again.
    pub retry_after: Duration,
}

/// Failed authentications allowed per address before it waits.
const FREE_FAILURES: u32 = 5;
/// The first wait; it doubles with each further failure.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait.
const LONGEST_WAIT: Duration = Duration::from_secs(300);
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Most addresses remembered: memory stays bounded whatever a peer does.
const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Recent failures per source address (IPv6 by /64), bounded.
#[derive(Debug, Default)]
struct Throttle {
    entries: HashMap<u128, Failures>,
}

/// IPv4 by address, IPv6 by its /64 (one host usually holds a whole /64).
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(v6) & !((1u128 << 64) - 1),
        },
    }
}

impl Throttle {
    fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Throttled> {
        match self.entries.get(&key(ip)).and_then(|f| f.blocked_until) {
            Some(until) if until > now => Err(Throttled {
                retry_after: until - now,
            }),
            _ => Ok(()),
        }
    }

    fn failed(&mut self, ip: IpAddr, now: Instant) {
        let key = key(ip);
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_ADDRESSES {
            self.make_room(now);
        }
        let entry = self.entries.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: None,
        });
        if now.duration_since(entry.last) > FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count >= FREE_FAILURES {
            let doublings = (entry.count - FREE_FAILURES).min(16);
            let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(LONGEST_WAIT);
            entry.blocked_until = Some(now + wait);
        }
    }

    /// Drops forgotten entries, or else the one idle longest.
    fn make_room(&mut self, now: Instant) {
        self.entries
            .retain(|_, f| now.duration_since(f.last) <= FORGET_AFTER);
        if self.entries.len() >= MAX_ADDRESSES {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_an_address_for_longer_each_time() {
        let mut throttle = Throttle::default();
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        let now = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed(ip, now);
            assert!(throttle.check(ip, now).is_ok());
        }
        throttle.failed(ip, now);
        assert_eq!(
            throttle.check(ip, now),
            Err(Throttled {
                retry_after: FIRST_WAIT
            })
        );
        assert!(throttle.check(other, now).is_ok());
        throttle.failed(ip, now);
        assert_eq!(
            throttle.check(ip, now).unwrap_err().retry_after,
            FIRST_WAIT * 2
        );
        assert!(throttle.check(ip, now + FIRST_WAIT * 3).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        for n in 0..(MAX_ADDRESSES as u32 + 100) {
            throttle.failed(IpAddr::V4(n.into()), now);
        }
        assert!(throttle.entries.len() <= MAX_ADDRESSES);
        let v6a: IpAddr = "2001:db8::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8::2".parse().expect("ip");
        assert_eq!(key(v6a), key(v6b), "one /64");
    }
}
