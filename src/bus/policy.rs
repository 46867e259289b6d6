//! The legacy registration rules: `bus-allow`, `PATTERN=WHO,...`.
//!
//! They are consulted for `provide` when no `[[policy]]` rule decides (see
//! [`crate::policy`]): the most specific rule covering the name decides,
//! and with rules present a name no rule covers is refused. With no rules,
//! the policy's defaults apply (only the daemon's user and root provide).

use std::fmt;

use super::pattern::Pattern;
use crate::access::Peer;
use crate::config::{group_id, user_id};
use crate::policy::Target;

/// One kind of peer a rule lets register.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Uid(u32),
    Gid(u32),
    AnyUnix,
    Tcp,
}

/// One `bus-allow` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The names it covers; None is `*`, every name.
    pattern: Option<Pattern>,
    who: Vec<Who>,
    /// The rule as written, for messages and `--print-config`.
    text: String,
}

impl Rule {
    /// Parses `PATTERN=WHO[,WHO...]`; WHO is a user or uid, `@group` or
    /// `@gid`, `any` (any Unix peer) or `tcp` (any TCP peer).
    pub fn parse(text: &str) -> Result<Rule, String> {
        let Some((pattern, who)) = text.split_once('=') else {
            return Err(format!(
                "{text:?} is not PATTERN=WHO (e.g. \"editor.*=alice,@staff\")"
            ));
        };
        let pattern = match pattern.trim() {
            "*" => None,
            p => Some(Pattern::parse(p)?),
        };
        let who = who
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|w| match w {
                "any" => Ok(Who::AnyUnix),
                "tcp" => Ok(Who::Tcp),
                _ => match w.strip_prefix('@') {
                    Some(group) => group_id(group).map(Who::Gid),
                    None => user_id(w).map(Who::Uid),
                },
            })
            .collect::<Result<Vec<_>, _>>()?;
        if who.is_empty() {
            return Err(format!("{text:?} names no one after the ="));
        }
        Ok(Rule {
            pattern,
            who,
            text: text.trim().into(),
        })
    }

    /// How specific the rule is for `name`, if it covers it at all: exact
    /// names first, then longer prefixes, then `*`.
    fn specificity(&self, name: Target<'_>) -> Option<usize> {
        let covers = |p: &Pattern| match (p, name) {
            (Pattern::Exact(a), Target::Name(b)) => a == b,
            (Pattern::Exact(_), Target::Prefix(_)) => false,
            (Pattern::Prefix(a), Target::Name(b)) => b.len() > a.len() && b.starts_with(a.as_str()),
            (Pattern::Prefix(a), Target::Prefix(b)) => b.starts_with(a.as_str()),
        };
        match &self.pattern {
            None => Some(0),
            Some(p) if covers(p) => Some(match p {
                Pattern::Exact(_) => usize::MAX,
                Pattern::Prefix(prefix) => prefix.len(),
            }),
            Some(_) => None,
        }
    }

    fn admits(&self, peer: &Peer) -> bool {
        self.who.iter().any(|who| match (who, peer) {
            (Who::Tcp, Peer::Tcp(_)) => true,
            (Who::AnyUnix, Peer::Unix(_)) => true,
            (Who::Uid(uid), Peer::Unix(Some(cred))) => cred.uid == *uid,
            (Who::Gid(gid), Peer::Unix(Some(cred))) => cred.gid == *gid,
            _ => false,
        })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The registration policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// A policy of these rules (none: the default policy).
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// The rules as written.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What the rules say of `peer` providing `name`: None when there are
    /// no rules; with rules, the most specific covering one decides, and a
    /// name none covers is refused.
    pub fn decides(&self, peer: &Peer, name: Target<'_>) -> Option<bool> {
        (!self.rules.is_empty()).then(|| self.permits(peer, name).is_ok())
    }

    /// Whether `peer` may register `name` by these rules; Err says why not.
    pub fn permits(&self, peer: &Peer, name: Target<'_>) -> Result<(), String> {
        if self.rules.is_empty() {
            return match peer {
                Peer::Unix(_) => Ok(()),
                Peer::Tcp(_) => Err(
                    "TCP peers may not register names unless a bus-allow rule says `tcp`".into(),
                ),
            };
        }
        let rule = self
            .rules
            .iter()
            .filter_map(|r| r.specificity(name).map(|s| (s, r)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, r)| r);
        match rule {
            Some(rule) if rule.admits(peer) => Ok(()),
            Some(rule) => Err(format!(
                "the rule {:?} does not include this peer",
                rule.text
            )),
            None => Err("no bus-allow rule covers it".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::PeerCred;

    fn unix(uid: u32, gid: u32) -> Peer {
        Peer::Unix(Some(PeerCred {
            pid: None,
            uid,
            gid,
        }))
    }

    fn name(text: &str) -> Target<'static> {
        let leaked: &'static Pattern = Box::leak(Box::new(Pattern::parse(text).expect("valid")));
        Target::of(leaked)
    }

    #[test]
    fn by_default_unix_peers_register_and_tcp_peers_do_not() {
        let policy = Policy::default();
        assert!(policy.permits(&unix(1000, 1000), name("a.b")).is_ok());
        assert!(policy.permits(&Peer::Tcp(None), name("a.b")).is_err());
    }

    #[test]
    fn the_most_specific_rule_decides() {
        let policy = Policy::new(vec![
            Rule::parse("editor.*=1000,@50").expect("rule"),
            Rule::parse("editor.secret=0").expect("rule"),
            Rule::parse("*=0,tcp").expect("rule"),
        ]);
        assert!(policy.permits(&unix(1000, 1), name("editor.open")).is_ok());
        assert!(policy.permits(&unix(7, 50), name("editor.open")).is_ok());
        assert!(policy.permits(&unix(1000, 1), name("editor.*")).is_ok());
        assert!(
            policy
                .permits(&unix(1000, 1), name("editor.secret"))
                .is_err()
        );
        assert!(policy.permits(&unix(1000, 1), name("other.x")).is_err());
        assert!(policy.permits(&unix(0, 0), name("other.x")).is_ok());
        assert!(policy.permits(&Peer::Tcp(None), name("other.x")).is_ok());
        assert!(
            policy
                .permits(&Peer::Tcp(None), name("editor.open"))
                .is_err()
        );
    }

    #[test]
    fn a_name_no_rule_covers_is_refused() {
        let policy = Policy::new(vec![Rule::parse("editor.*=any").expect("rule")]);
        let refused = policy.permits(&unix(1, 1), name("build.run"));
        assert_eq!(refused, Err("no bus-allow rule covers it".into()));
        assert!(policy.permits(&unix(1, 1), name("ed.*")).is_err());
    }

    #[test]
    fn bad_rules_say_why() {
        for bad in ["editor.*", "editor.*=", "a b=1", "x=no-such-user-here-x"] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
    }
}
