//! Who may do what: identities, the policy rules and the decisions they give.
//!
//! Every connection has an [`Identity`]: a Unix peer's uid, gid, user name
//! and groups (read once when it is accepted), the name of the token a TCP
//! peer authenticated with, or `anonymous`. The policy grants or denies an
//! identity five things on name and topic patterns: `call` a method,
//! `provide` one on the bus, `publish` and `subscribe` to topics, and
//! `admin` (see other peers' details). Deny wins; the rule for the actual
//! name decides. The daemon's own user and root may do everything unless a
//! rule denies it; any other identity may call `rpc.*` and nothing else.
//!
//! Rules are compiled into [`Grants`] once per connection (at accept, or at
//! `rpc.auth`); a connection's [`Rights`] answer the per-message question
//! from a fast path (the owner) or a small cache, so the hot path neither
//! walks rules nor allocates.

mod guard;
mod identity;
mod rules;

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::access::Peer;
use crate::bus::pattern::Pattern;

pub use guard::{Guard, Rejudged, Throttled};
pub use identity::{Identity, IdentityKind, OWNER_TOKEN};
pub use rules::{OneOrMany, Policy, Rule, RuleTable, ScopeTable, Subject, valid_token_name};

/// Something the policy grants or denies on a name or topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Call a method (the daemon's, an embedder's, or one a client provides).
    Call,
    /// Provide a method on the bus (`bus.register`, and receiving its calls).
    Provide,
    /// Publish an event to a topic.
    Publish,
    /// Subscribe to a topic (and receive its events).
    Subscribe,
}

impl Action {
    /// The word used in rules and messages.
    pub fn name(self) -> &'static str {
        match self {
            Action::Call => "call",
            Action::Provide => "provide",
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

/// What a rule covers: every name, one name, or a prefix pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `*`: every name.
    All,
    /// Exactly this name.
    Exact(String),
    /// Every name under this prefix (kept with its dot: `editor.`).
    Prefix(String),
}

/// A name or pattern a decision is asked about, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A concrete name or topic.
    Name(&'a str),
    /// A prefix pattern (with its dot), e.g. a `bus.register` of `editor.*`.
    Prefix(&'a str),
}

impl<'a> Target<'a> {
    /// The target a bus pattern stands for.
    pub fn of(pattern: &'a Pattern) -> Self {
        match pattern {
            Pattern::Exact(name) => Target::Name(name),
            Pattern::Prefix(prefix) => Target::Prefix(prefix),
        }
    }
}

impl Scope {
    /// Parses `*`, a name, or a pattern such as `editor.*`.
    pub fn parse(text: &str) -> Result<Scope, String> {
        match text.trim() {
            "*" => Ok(Scope::All),
            text => Ok(match Pattern::parse(text)? {
                Pattern::Exact(name) => Scope::Exact(name),
                Pattern::Prefix(prefix) => Scope::Prefix(prefix),
            }),
        }
    }

    /// True when every name `target` stands for is in this scope.
    pub fn covers(&self, target: Target<'_>) -> bool {
        match (self, target) {
            (Scope::All, _) => true,
            (Scope::Exact(a), Target::Name(b)) => a == b,
            (Scope::Exact(_), Target::Prefix(_)) => false,
            (Scope::Prefix(p), Target::Name(n)) => n.len() > p.len() && n.starts_with(p.as_str()),
            (Scope::Prefix(p), Target::Prefix(q)) => q.starts_with(p.as_str()),
        }
    }

    /// True when some name under `prefix` is in this scope.
    fn meets(&self, prefix: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Exact(name) => name.len() > prefix.len() && name.starts_with(prefix),
            Scope::Prefix(p) => p.starts_with(prefix) || prefix.starts_with(p.as_str()),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::Exact(name) => f.write_str(name),
            Scope::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// Scopes per action, and admin: one side (allow or deny) of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    /// Methods that may (or may not) be called.
    pub call: Vec<Scope>,
    /// Names that may (or may not) be provided.
    pub provide: Vec<Scope>,
    /// Topics that may (or may not) be published to.
    pub publish: Vec<Scope>,
    /// Topics that may (or may not) be subscribed to.
    pub subscribe: Vec<Scope>,
    /// Other peers' details in `rpc.clients` and `bus.list`.
    pub admin: bool,
}

impl Scopes {
    /// The scopes of one action.
    pub fn of(&self, action: Action) -> &[Scope] {
        match action {
            Action::Call => &self.call,
            Action::Provide => &self.provide,
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
        }
    }

    fn of_mut(&mut self, action: Action) -> &mut Vec<Scope> {
        match action {
            Action::Call => &mut self.call,
            Action::Provide => &mut self.provide,
            Action::Publish => &mut self.publish,
            Action::Subscribe => &mut self.subscribe,
        }
    }

    fn is_empty(&self) -> bool {
        !self.admin
            && self.call.is_empty()
            && self.provide.is_empty()
            && self.publish.is_empty()
            && self.subscribe.is_empty()
    }

    fn extend(&mut self, other: &Scopes) {
        for action in ACTIONS {
            self.of_mut(action).extend(other.of(action).iter().cloned());
        }
        self.admin |= other.admin;
    }
}

/// Every action, in rule order.
pub const ACTIONS: [Action; 4] = [
    Action::Call,
    Action::Provide,
    Action::Publish,
    Action::Subscribe,
];

/// Methods whose use is decided by the action they carry (the names or
/// topics in their params), not by `call`.
const SELF_CHECKED: [&str; 5] = [
    "bus.register",
    "bus.unregister",
    "bus.subscribe",
    "bus.unsubscribe",
    "bus.publish",
];

/// What the policy lets one identity do, compiled from the rules that name it.
#[derive(Debug)]
pub struct Grants {
    /// The owner with no rule denying it anything: every check passes.
    all: bool,
    /// The owner with no rule denying it a call: every call passes.
    all_calls: bool,
    /// The daemon's user or root: allowed what no rule denies.
    owner: bool,
    allow: Scopes,
    deny: Scopes,
    /// The legacy `bus-allow` rules and the peer they judge, for `provide`.
    legacy: Option<(Arc<crate::bus::policy::Policy>, Peer)>,
}

impl Grants {
    /// Nothing but `rpc.*` (a connection not yet authenticated never gets
    /// that far either).
    pub fn none() -> Self {
        Self {
            all: false,
            all_calls: false,
            owner: false,
            allow: Scopes::default(),
            deny: Scopes::default(),
            legacy: None,
        }
    }

    /// Everything.
    pub fn everything() -> Self {
        Self {
            all: true,
            all_calls: true,
            owner: true,
            ..Self::none()
        }
    }

    /// True when every check passes without looking.
    pub fn is_everything(&self) -> bool {
        self.all
    }

    /// Whether `action` on `target` is allowed: a deny that covers it
    /// refuses; an allow that covers it grants; then the `bus-allow` rules
    /// (for `provide`); then the defaults (owner: yes; others: `call rpc.*`).
    pub fn permits(&self, action: Action, target: Target<'_>) -> bool {
        if self.all {
            return true;
        }
        if action == Action::Call
            && matches!(target, Target::Name(n) if crate::methods::admin_only(n))
        {
            // Admin-only whatever the call rules say.
            return self.admin();
        }
        if self.deny.of(action).iter().any(|s| s.covers(target)) {
            return false;
        }
        if self.allow.of(action).iter().any(|s| s.covers(target)) {
            return true;
        }
        if action == Action::Provide {
            if let Some((legacy, peer)) = &self.legacy {
                if let Some(verdict) = legacy.decides(peer, target) {
                    return verdict;
                }
            }
        }
        self.owner
            || (action == Action::Call
                && matches!(target, Target::Name(n) if n.starts_with(crate::router::RESERVED_PREFIX)))
    }

    /// True when some deny rule reaches under `prefix` (a pattern
    /// subscription must then be checked per topic as events arrive).
    pub fn denies_under(&self, action: Action, prefix: &str) -> bool {
        !self.all && self.deny.of(action).iter().any(|s| s.meets(prefix))
    }

    /// Whether other peers' details may be shown.
    pub fn admin(&self) -> bool {
        self.all || (!self.deny.admin && (self.allow.admin || self.owner))
    }
}

/// Decisions remembered per name, so that a repeated call is one lookup.
/// Bounded: past [`Verdicts::CAP`] names, decisions are made afresh.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Boxed, and made at the first decision: every connection holds a
    /// `Verdicts`, and an idle one then pays 8 bytes for it, not 32.
    known: Option<Box<HashMap<Box<str>, bool>>>,
}

impl Verdicts {
    /// Most names remembered.
    pub const CAP: usize = 256;

    /// The decision for `name`, made with `decide` the first time.
    pub fn get(&mut self, name: &str, decide: impl FnOnce() -> bool) -> bool {
        if let Some(known) = self.known.as_ref().and_then(|k| k.get(name)) {
            return *known;
        }
        let verdict = decide();
        let known = self.known.get_or_insert_default();
        if known.len() < Self::CAP {
            known.insert(name.into(), verdict);
        }
        verdict
    }
}

/// One connection's identity and what it may do.
#[derive(Debug)]
pub struct Rights {
    identity: Arc<Identity>,
    grants: Arc<Grants>,
    calls: Verdicts,
}

/// The identity and grants of every connection not yet identified, shared:
/// each connection starts with them, and a flood of unauthenticated
/// sockets allocates nothing for its rights.
static UNIDENTIFIED: std::sync::LazyLock<(Arc<Identity>, Arc<Grants>)> =
    std::sync::LazyLock::new(|| {
        (
            Arc::new(Identity::unauthenticated()),
            Arc::new(Grants::none()),
        )
    });

impl Default for Rights {
    /// Not yet identified: may call `rpc.*` only.
    fn default() -> Self {
        let (identity, grants) = &*UNIDENTIFIED;
        Self::new(Arc::clone(identity), Arc::clone(grants))
    }
}

impl Rights {
    /// An identity with its compiled grants.
    pub fn new(identity: Arc<Identity>, grants: Arc<Grants>) -> Self {
        Self {
            identity,
            grants,
            calls: Verdicts::default(),
        }
    }

    /// Who this is.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// What it may do.
    pub fn grants(&self) -> &Arc<Grants> {
        &self.grants
    }

    /// Whether it may call `method` (the `bus.*` methods that carry their
    /// own action pass here and are checked on their params).
    #[inline]
    pub fn may_call(&mut self, method: &str) -> bool {
        // `all_calls` (a `call *` rule) still leaves the admin-only methods to `permits`.
        (self.grants.all_calls && (self.grants.all || !crate::methods::admin_only(method)))
            || self.may_call_checked(method)
    }

    fn may_call_checked(&mut self, method: &str) -> bool {
        if SELF_CHECKED.contains(&method) {
            return true;
        }
        let grants = &self.grants;
        self.calls.get(method, || {
            grants.permits(Action::Call, Target::Name(method))
        })
    }

    /// Whether it may see other peers' details.
    pub fn admin(&self) -> bool {
        self.grants.admin()
    }
}

/// How often a refusal is logged at most.
const REFUSAL_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Logs a refusal by the policy, at most once per five seconds with the
/// number since the last line, so a peer cannot flood the log.
pub fn warn_refused(identity: &Identity, action: Action, name: &str) {
    static WARNING: crate::access::LogThrottle = crate::access::LogThrottle::new();
    if let Some(refusals) = WARNING.due(REFUSAL_WARNING_EVERY) {
        tracing::warn!(
            identity = %identity,
            action = action.name(),
            name,
            refusals,
            "policy: refused"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(owner: bool, allow: Scopes, deny: Scopes) -> Grants {
        Grants {
            all: false,
            all_calls: false,
            owner,
            allow,
            deny,
            legacy: None,
        }
    }

    fn scopes(action: Action, list: &[&str]) -> Scopes {
        let mut s = Scopes::default();
        *s.of_mut(action) = list
            .iter()
            .map(|t| Scope::parse(t).expect("scope"))
            .collect();
        s
    }

    #[test]
    fn scopes_cover_names_and_patterns() {
        let p = Scope::parse("editor.*").expect("p");
        assert!(p.covers(Target::Name("editor.open")));
        assert!(!p.covers(Target::Name("editor.")));
        assert!(p.covers(Target::Prefix("editor.tab.")));
        assert!(!p.covers(Target::Prefix("edit.")));
        assert!(Scope::All.covers(Target::Prefix("x.")));
        assert!(!Scope::parse("a.b").expect("e").covers(Target::Prefix("a.")));
        assert!(Scope::parse("a.b").expect("e").meets("a."));
        assert!(Scope::parse("a.*").expect("p").meets("a.b."));
        assert!(!Scope::parse("b.*").expect("p").meets("a."));
    }

    #[test]
    fn deny_wins_and_defaults_apply() {
        let other = grants(
            false,
            scopes(Action::Call, &["editor.*"]),
            scopes(Action::Call, &["editor.secret"]),
        );
        assert!(other.permits(Action::Call, Target::Name("editor.open")));
        assert!(!other.permits(Action::Call, Target::Name("editor.secret")));
        assert!(other.permits(Action::Call, Target::Name("rpc.ping")));
        assert!(!other.permits(Action::Call, Target::Name("build.run")));
        assert!(!other.permits(Action::Publish, Target::Name("build.done")));
        assert!(!other.admin());
        let owner = grants(true, Scopes::default(), scopes(Action::Publish, &["x.*"]));
        assert!(owner.permits(Action::Call, Target::Name("anything")));
        assert!(!owner.permits(Action::Publish, Target::Name("x.y")));
        assert!(owner.denies_under(Action::Publish, "x."));
        assert!(!owner.denies_under(Action::Publish, "y."));
        assert!(owner.admin());
    }

    #[test]
    fn calls_are_cached_and_bus_methods_check_themselves() {
        let mut rights = Rights::default();
        assert!(rights.may_call("rpc.ping"));
        assert!(rights.may_call("rpc.ping"));
        assert!(!rights.may_call("test.add"));
        assert!(rights.may_call("bus.publish"));
        assert!(!rights.may_call("bus.list"));
        assert_eq!(rights.calls.known.as_ref().map_or(0, |k| k.len()), 3);
    }
}
