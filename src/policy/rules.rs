//! The policy as written: `[[policy]]` tables in the TOML file and
//! `--allow` / `--deny` flags (`WHO:ACTION:PATTERN`), parsed and checked.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ACTIONS, Action, Identity, IdentityKind, Scope, Scopes};
use crate::config::{group_id, user_id};

/// Whom a rule is about.
#[derive(Debug, Clone)]
pub struct Subject {
    kind: SubjectKind,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SubjectKind {
    Uid(u32),
    Gid(u32),
    Token(String),
    Cert(String),
    Anonymous,
    Any,
}

impl PartialEq for Subject {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for Subject {}

impl Subject {
    /// Parses `uid:N`, `user:NAME`, `gid:N`, `group:NAME`, `token:NAME`,
    /// `cert:NAME`, `anonymous` or `*`; users and groups must exist.
    pub fn parse(text: &str) -> Result<Subject, String> {
        let text = text.trim();
        let kind = match text.split_once(':') {
            None if text == "*" => SubjectKind::Any,
            None if text == "anonymous" => SubjectKind::Anonymous,
            Some(("uid", id)) => SubjectKind::Uid(
                id.trim()
                    .parse()
                    .map_err(|_| format!("{id:?} is not a uid"))?,
            ),
            Some(("gid", id)) => SubjectKind::Gid(
                id.trim()
                    .parse()
                    .map_err(|_| format!("{id:?} is not a gid"))?,
            ),
            Some(("user", name)) => SubjectKind::Uid(user_id(name)?),
            Some(("group", name)) => SubjectKind::Gid(group_id(name)?),
            Some(("token", name)) if valid_token_name(name) => SubjectKind::Token(name.into()),
            Some(("token", name)) => {
                return Err(format!(
                    "{name:?} is not a token name (letters, digits, '-', '_' and '.')"
                ));
            }
            // A client certificate's SAN DNS name, SAN URI or CN; a URI may
            // hold colons, so the name is everything after `cert:`.
            Some(("cert", _)) => match text["cert:".len()..].trim() {
                "" => return Err("cert: needs the certificate's name".into()),
                name => SubjectKind::Cert(name.into()),
            },
            _ => {
                return Err(format!(
                    "{text:?} names no one: use uid:N, user:NAME, gid:N, group:NAME, \
                     token:NAME, cert:NAME, anonymous or *"
                ));
            }
        };
        Ok(Subject {
            kind,
            text: text.into(),
        })
    }

    /// True when the rule is about this identity.
    pub fn matches(&self, identity: &Identity) -> bool {
        match &self.kind {
            SubjectKind::Uid(uid) => identity.uid == Some(*uid),
            SubjectKind::Gid(gid) => identity.in_group(*gid),
            SubjectKind::Token(name) => identity.token.as_deref() == Some(name.as_str()),
            SubjectKind::Cert(name) => {
                identity.kind == IdentityKind::Certificate
                    && identity.cert.as_deref() == Some(name.as_str())
            }
            SubjectKind::Anonymous => identity.kind == IdentityKind::Anonymous,
            SubjectKind::Any => identity.kind != IdentityKind::Unknown,
        }
    }

    fn names_groups(&self) -> bool {
        matches!(self.kind, SubjectKind::Gid(_))
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

pub use junction_client::path::valid_token_name;

/// One side of a `[[policy]]` table: patterns per action, and admin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeTable {
    /// Methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub call: Vec<String>,
    /// Names provided on the bus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provide: Vec<String>,
    /// Topics published to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Topics subscribed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    /// Other peers' details.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

impl ScopeTable {
    fn is_empty(&self) -> bool {
        *self == ScopeTable::default()
    }

    fn list(&self, action: Action) -> &[String] {
        match action {
            Action::Call => &self.call,
            Action::Provide => &self.provide,
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
        }
    }

    fn list_mut(&mut self, action: Action) -> &mut Vec<String> {
        match action {
            Action::Call => &mut self.call,
            Action::Provide => &mut self.provide,
            Action::Publish => &mut self.publish,
            Action::Subscribe => &mut self.subscribe,
        }
    }

    fn compile(&self) -> Result<Scopes, String> {
        let mut scopes = Scopes {
            admin: self.admin,
            ..Scopes::default()
        };
        for action in ACTIONS {
            for text in self.list(action) {
                let scope = Scope::parse(text).map_err(|e| format!("{}: {e}", action.name()))?;
                scopes.of_mut(action).push(scope);
            }
        }
        Ok(scopes)
    }
}

/// `who` as a string or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One subject.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

/// A `[[policy]]` table as written in the TOML file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTable {
    /// Whom it is about: `uid:N`, `user:NAME`, `gid:N`, `group:NAME`,
    /// `token:NAME`, `anonymous` or `*` (or a list of them).
    pub who: OneOrMany,
    /// What they may do.
    #[serde(default, skip_serializing_if = "ScopeTable::is_empty")]
    pub allow: ScopeTable,
    /// What they may not do (deny wins).
    #[serde(default, skip_serializing_if = "ScopeTable::is_empty")]
    pub deny: ScopeTable,
}

/// One rule, checked.
#[derive(Debug, Clone)]
pub struct Rule {
    who: Vec<Subject>,
    allow: Scopes,
    deny: Scopes,
    allow_text: ScopeTable,
    deny_text: ScopeTable,
    /// Where it came from, for messages.
    source: String,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.who == other.who && self.allow == other.allow && self.deny == other.deny
    }
}

impl Eq for Rule {}

impl Rule {
    /// Checks a table; `source` names it in messages (e.g. `[[policy]] #2`).
    pub fn from_table(table: &RuleTable, source: String) -> Result<Rule, String> {
        let fail = |e: String| format!("{source} (who = {:?}): {e}", table.who.items().join(","));
        if table.who.items().is_empty() {
            return Err(fail("who names no one".into()));
        }
        let who = table
            .who
            .items()
            .iter()
            .map(|w| Subject::parse(w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let allow = table.allow.compile().map_err(fail)?;
        let deny = table.deny.compile().map_err(fail)?;
        if allow.is_empty() && deny.is_empty() {
            return Err(fail("allows and denies nothing".into()));
        }
        Ok(Rule {
            who,
            allow,
            deny,
            allow_text: table.allow.clone(),
            deny_text: table.deny.clone(),
            source,
        })
    }

    /// Parses a flag: `WHO:ACTION:PATTERN[,PATTERN...]`, or `WHO:admin`;
    /// `deny` makes it a deny rule.
    pub fn from_flag(text: &str, deny: bool) -> Result<Rule, String> {
        let flag = if deny { "--deny" } else { "--allow" };
        let fail = |e: String| format!("{flag} {text:?}: {e}");
        let usage = || fail("expected WHO:ACTION:PATTERN (e.g. user:alice:call:editor.*)".into());
        let (who, rest) = match text.trim().split_once(':') {
            Some((kind, tail))
                if ["uid", "user", "gid", "group", "token", "cert"].contains(&kind) =>
            {
                let (id, rest) = tail.split_once(':').ok_or_else(usage)?;
                (format!("{kind}:{id}"), rest)
            }
            Some((who, rest)) => (who.to_string(), rest),
            None => return Err(usage()),
        };
        let (action, patterns) = match rest.split_once(':') {
            Some((action, patterns)) => (action.trim(), patterns),
            None => (rest.trim(), ""),
        };
        let mut side = ScopeTable::default();
        match action {
            "admin" if patterns.trim().is_empty() => side.admin = true,
            "admin" => return Err(fail("admin takes no pattern".into())),
            _ => {
                let action = ACTIONS
                    .into_iter()
                    .find(|a| a.name() == action)
                    .ok_or_else(|| {
                        fail(format!(
                            "{action:?} is not an action: use call, provide, publish, subscribe or admin"
                        ))
                    })?;
                let list: Vec<String> = patterns
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect();
                if list.is_empty() {
                    return Err(fail(format!("{} needs a pattern", action.name())));
                }
                *side.list_mut(action) = list;
            }
        }
        let table = RuleTable {
            who: OneOrMany::One(who),
            allow: if deny {
                ScopeTable::default()
            } else {
                side.clone()
            },
            deny: if deny { side } else { ScopeTable::default() },
        };
        Rule::from_table(&table, format!("{flag} {text:?}"))
    }

    /// The rule as a `[[policy]]` table (for `--print-config`).
    pub fn to_table(&self) -> RuleTable {
        let who: Vec<String> = self.who.iter().map(ToString::to_string).collect();
        RuleTable {
            who: match who.as_slice() {
                [one] => OneOrMany::One(one.clone()),
                _ => OneOrMany::Many(who),
            },
            allow: self.allow_text.clone(),
            deny: self.deny_text.clone(),
        }
    }

    /// Where the rule came from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Every rule, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// A policy of these rules.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True when some rule names a group (identities then need their groups).
    pub fn names_groups(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.who.iter().any(Subject::names_groups))
    }

    /// What the rules naming `identity` allow and deny, together.
    pub(super) fn gather(&self, identity: &Identity) -> (Scopes, Scopes) {
        let mut allow = Scopes::default();
        let mut deny = Scopes::default();
        for rule in &self.rules {
            if rule.who.iter().any(|w| w.matches(identity)) {
                allow.extend(&rule.allow);
                deny.extend(&rule.deny);
            }
        }
        (allow, deny)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_into_rules() {
        let rule = Rule::from_flag("uid:1000:call:editor.*,build.run", false).expect("rule");
        assert_eq!(rule.allow.call.len(), 2);
        assert_eq!(rule.who[0].to_string(), "uid:1000");
        let rule = Rule::from_flag("anonymous:publish:build.*", true).expect("rule");
        assert_eq!(rule.deny.publish, vec![Scope::Prefix("build.".into())]);
        let rule = Rule::from_flag("token:ci:admin", false).expect("rule");
        assert!(rule.allow.admin);
        let rule = Rule::from_flag("*:subscribe:*", false).expect("rule");
        assert_eq!(rule.allow.subscribe, vec![Scope::All]);
        for bad in [
            "alice:call:x",
            "uid:x:call:y",
            "uid:1:shout:y",
            "uid:1:call",
            "uid:1:call:a b",
            "user:no-such-user-here-x:call:x",
            "token:a b:call:x",
            "uid:1:admin:x",
            "",
        ] {
            assert!(Rule::from_flag(bad, false).is_err(), "{bad:?}");
        }
        let err = Rule::from_flag("uid:1:shout:y", false).unwrap_err();
        assert!(err.contains("--allow") && err.contains("shout"), "{err}");
    }

    #[test]
    fn tables_read_and_print_back() {
        let text = r#"
            who = ["group:0", "token:build-agent"]
            allow = { publish = ["build.*"], admin = true }
            deny = { publish = ["build.secret"] }
        "#;
        let table: RuleTable = toml::from_str(text).expect("toml");
        let rule = Rule::from_table(&table, "[[policy]] #1".into()).expect("rule");
        assert_eq!(rule.to_table(), table);
        assert!(toml::from_str::<RuleTable>("who = \"*\"\nallow = { shout = [\"x\"] }").is_err());
        let empty: RuleTable = toml::from_str("who = \"*\"").expect("toml");
        let err = Rule::from_table(&empty, "[[policy]] #3".into()).unwrap_err();
        assert!(err.contains("[[policy]] #3"), "{err}");
    }
}
