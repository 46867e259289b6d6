//! The `bus.*` methods: register, unregister, subscribe, unsubscribe,
//! publish, list. They run on the loop, where the bus lives.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::groups::{Conflict, Providers};
use super::pattern::Pattern;
use super::{Bus, Caller};
use crate::access::Peer;
use crate::error::{ErrorCode, RpcError};
use crate::policy::{Action, Target};
use crate::proto::Protocol;
use crate::router::{Context, Params, RESERVED_PREFIX};
use crate::stats::Stats;
use crate::workers::ConnRef;

/// Names under this prefix are the bus's own methods.
pub const PREFIX: &str = "bus.";

/// Most entries in one register, unregister, subscribe or unsubscribe.
const MAX_ENTRIES: usize = 1024;

/// The bus methods and what `rpc.methods` says of them.
pub const METHODS: [(&str, &str); 6] = [
    (
        "bus.register",
        "provides methods to other clients: {\"names\": [\"editor.open\", \"editor.*\"]}",
    ),
    (
        "bus.unregister",
        "stops providing names: {\"names\": [...]}",
    ),
    (
        "bus.subscribe",
        "receives bus.event notifications for topics: {\"topics\": [\"build.*\"]}",
    ),
    (
        "bus.unsubscribe",
        "stops receiving topics: {\"topics\": [...]}",
    ),
    (
        "bus.publish",
        "sends an event to every subscriber of a topic: {\"topic\": \"build.done\", \"data\": ...}",
    ),
    (
        "bus.list",
        "registered names with their providers, topics with their subscriber counts",
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Names {
    names: Vec<String>,
}

/// `bus.register`'s params: `group` joins (or forms) a provider group.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    names: Vec<String>,
    #[serde(default)]
    group: bool,
    /// Schemas per name, for `rpc.discover`.
    #[serde(default)]
    schemas: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Topics {
    topics: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    topic: String,
    data: Option<Box<RawValue>>,
}

/// Runs a `bus.*` method for `caller`; the result is JSON.
pub fn call(
    bus: &mut Bus,
    caller: &Caller<'_>,
    method: &str,
    params: Params<'_>,
    context: &Context,
) -> Result<serde_json::Value, RpcError> {
    let listed = |names: Vec<Pattern>| names.iter().map(ToString::to_string).collect::<Vec<_>>();
    match method {
        "bus.register" => {
            let register = params.parse::<Register>()?;
            let schemas = provided_schemas(&register)?;
            check_schema_room(bus, &schemas)?;
            let names = patterns(register.names)?;
            bus.register(caller, &names, register.group, context)?;
            for (name, schema) in schemas {
                bus.observe.describe_provided(name, schema);
            }
            Ok(serde_json::json!({ "names": listed(names) }))
        }
        "bus.unregister" => {
            let names = patterns(params.parse::<Names>()?.names)?;
            let released = bus.unregister(caller.id, &names);
            Ok(serde_json::json!({ "names": listed(released) }))
        }
        "bus.subscribe" => {
            let topics = patterns(params.parse::<Topics>()?.topics)?;
            bus.check(caller, Action::Subscribe, &topics)?;
            bus.subscribe(caller, &topics)?;
            bus.filter_if_needed(caller, &topics);
            Ok(serde_json::json!({ "topics": listed(topics) }))
        }
        "bus.unsubscribe" => {
            let topics = patterns(params.parse::<Topics>()?.topics)?;
            let removed = bus.unsubscribe(caller.id, &topics);
            Ok(serde_json::json!({ "topics": listed(removed) }))
        }
        "bus.publish" => {
            let publish = params.parse::<Publish>()?;
            match Pattern::parse(&publish.topic).map_err(RpcError::invalid_params)? {
                Pattern::Exact(_) => {}
                Pattern::Prefix(_) => {
                    return Err(RpcError::invalid_params(
                        "events are published to one topic, not a pattern",
                    ));
                }
            }
            bus.check_name(caller, Action::Publish, &publish.topic)?;
            let data = publish.data.unwrap_or_else(|| RawValue::NULL.to_owned());
            if bus.federated() {
                bus.publish_remote(caller, &publish.topic, &data);
            }
            let reached = bus.publish(&publish.topic, data)?;
            Ok(serde_json::json!({ "subscribers": reached }))
        }
        "bus.list" => {
            params.parse::<serde::de::IgnoredAny>()?; // A raw body is -32602; JSON is ignored.
            serde_json::to_value(bus.list(caller)).map_err(RpcError::internal)
        }
        _ => Err(RpcError::method_not_found(method)),
    }
}

/// Checks the schemas a `bus.register` attaches: each for one of its names.
fn provided_schemas(
    names: &Register,
) -> Result<Vec<(String, crate::observe::ProvidedSchema)>, RpcError> {
    let Some(schemas) = &names.schemas else {
        return Ok(Vec::new());
    };
    schemas
        .iter()
        .map(|(name, value)| {
            if !names.names.contains(name) {
                return Err(RpcError::invalid_params(format_args!(
                    "schemas names {name:?}, which this call does not register"
                )));
            }
            let schema = crate::discover::MethodSchema::from_provided(value)
                .map_err(|e| RpcError::invalid_params(format_args!("schema of {name}: {e}")))?;
            Ok((name.clone(), schema))
        })
        .collect()
}

/// Refuses schemas that would take the provided schemas past their budget.
fn check_schema_room(
    bus: &Bus,
    schemas: &[(String, crate::observe::ProvidedSchema)],
) -> Result<(), RpcError> {
    use crate::observe::{MAX_PROVIDED_SCHEMA_BYTES, schema_size};
    let adding: usize = schemas.iter().map(|(_, s)| schema_size(s)).sum();
    let held = bus.observe.schema_bytes();
    if adding > 0 && held + adding > MAX_PROVIDED_SCHEMA_BYTES {
        return Err(RpcError::with(
            ErrorCode::LimitReached,
            format_args!(
                "the schemas providers attached hold {held} bytes; these {adding} would pass the daemon's {MAX_PROVIDED_SCHEMA_BYTES}; register without schemas"
            ),
        ));
    }
    Ok(())
}

/// Parses 1 to [`MAX_ENTRIES`] names or patterns.
fn patterns(texts: Vec<String>) -> Result<Vec<Pattern>, RpcError> {
    if texts.is_empty() || texts.len() > MAX_ENTRIES {
        return Err(RpcError::invalid_params(format_args!(
            "give 1 to {MAX_ENTRIES} names"
        )));
    }
    texts
        .iter()
        .map(|t| Pattern::parse(t).map_err(RpcError::invalid_params))
        .collect()
}

impl Bus {
    /// Registers `names` for the caller, all or nothing.
    fn register(
        &mut self,
        caller: &Caller<'_>,
        names: &[Pattern],
        group: bool,
        context: &Context,
    ) -> Result<(), RpcError> {
        for name in names {
            self.check_registration(caller, name, group, context)?;
        }
        self.check_name_cap(caller, names)?;
        let member = self.member(caller);
        for name in names {
            member.names.insert(name.clone());
        }
        for name in names {
            self.claim(name, caller.id, group);
        }
        self.list_names(caller, names.iter());
        Stats::add(&self.stats.bus.registrations, names.len() as u64);
        tracing::info!(
            peer = %caller.peer,
            conn = caller.id.token,
            count = names.len(),
            first = %names[0],
            group,
            "bus: names registered"
        );
        Ok(())
    }

    /// Refuses a registration that would take the caller past `bus-max-names`.
    fn check_name_cap(&mut self, caller: &Caller<'_>, names: &[Pattern]) -> Result<(), RpcError> {
        let max = self.config.max_names;
        let held = self.members.get(&caller.id).map_or(0, |m| m.names.len());
        let fresh = match self.members.get(&caller.id) {
            Some(member) => names.iter().filter(|n| !member.names.contains(*n)).count(),
            None => names.len(),
        };
        if held + fresh <= max {
            return Ok(());
        }
        Stats::bump(&self.stats.bus.limit_refused);
        tracing::warn!(peer = %caller.peer, conn = caller.id.token, held, fresh, max, "bus: registration refused: bus-max-names");
        Err(RpcError::with(
            ErrorCode::LimitReached,
            format_args!(
                "a connection may provide at most {max} names (bus-max-names); it has {held}, and this call adds {fresh}"
            ),
        )
        .data(serde_json::json!({"limit": "bus-max-names", "max": max, "held": held})))
    }

    /// Why the caller may not register `name`, if it may not.
    fn check_registration(
        &self,
        caller: &Caller<'_>,
        name: &Pattern,
        group: bool,
        context: &Context,
    ) -> Result<(), RpcError> {
        // A method the daemon has is taken, by "daemon", even under rpc. or bus.
        if matches!(name, Pattern::Exact(n) if context.router().get(n).is_some() || METHODS.iter().any(|(m, _)| m == n))
        {
            return Err(self.taken(name, Owner::Daemon));
        }
        if name.is_under(RESERVED_PREFIX) || name.is_under(PREFIX) {
            return Err(RpcError::invalid_params(format_args!(
                "{:?} is reserved: names under \"rpc.\" and \"bus.\" belong to the daemon",
                name.to_string()
            )));
        }
        if !caller
            .rights
            .grants()
            .permits(Action::Provide, Target::of(name))
        {
            Stats::bump(&self.stats.bus.refused);
            Stats::bump(&self.stats.forbidden);
            crate::policy::warn_refused(caller.rights.identity(), Action::Provide, name.text());
            return Err(RpcError::with(
                ErrorCode::NotPermitted,
                format_args!(
                    "{:?} may not be registered by {} (see the policy's provide rules and bus-allow)",
                    name.to_string(),
                    caller.rights.identity()
                ),
            ));
        }
        match self.conflict(caller, name, group) {
            None => Ok(()),
            Some(Conflict::Exclusive(owner)) if group => {
                let owner = self.describe(owner, caller.rights.admin());
                Err(self.taken_as(name, owner, "alone; a group cannot share it"))
            }
            Some(Conflict::Exclusive(owner)) => {
                Err(self.taken(name, self.describe(owner, caller.rights.admin())))
            }
            Some(Conflict::Group(members)) => Err(self.taken_as(
                name,
                Owner::Group { members },
                "; register with \"group\": true to join it",
            )),
        }
    }

    /// -32020 for `name`, owned by `owner`.
    fn taken(&self, name: &Pattern, owner: Owner) -> RpcError {
        self.taken_as(name, owner, "")
    }

    /// -32020 for `name`, owned by `owner`, the message ending with `how`
    /// (how it is held, for a group or a name held alone).
    fn taken_as(&self, name: &Pattern, owner: Owner, how: &str) -> RpcError {
        Stats::bump(&self.stats.bus.refused);
        let sep = if how.is_empty() || how.starts_with(';') {
            ""
        } else {
            " "
        };
        let mut data = serde_json::json!({ "name": name.to_string(), "owner": owner });
        if let Owner::Group { members } = owner {
            data["members"] = members.into();
        }
        RpcError::with(
            ErrorCode::NameTaken,
            format_args!(
                "{:?} is provided by {}{sep}{how}",
                name.to_string(),
                owner.describe()
            ),
        )
        .data(data)
    }

    /// Releases those of `names` the connection owns and returns them; a
    /// name it does not own is left alone, like `bus.unsubscribe` of a
    /// topic it has not subscribed (proto/bus.md section 1: both are
    /// idempotent, so a retry after a lost answer is harmless).
    fn unregister(&mut self, id: ConnRef, names: &[Pattern]) -> Vec<Pattern> {
        let mut released = Vec::new();
        if let Some(member) = self.members.get_mut(&id) {
            for name in names {
                if member.names.remove(name) {
                    released.push(name.clone());
                }
            }
        }
        self.release_all(id, released.iter());
        self.prune(id);
        self.shrink();
        released
    }

    /// Who owns a name; its peer's details only when `detailed` (admins,
    /// and a connection asking about itself).
    fn describe(&self, id: ConnRef, detailed: bool) -> Owner {
        match self.members.get(&id) {
            Some(m) if detailed => Owner::Connection(ProviderInfo::new(id, m.peer, m.protocol)),
            Some(m) => Owner::Connection(ProviderInfo::redacted(id, m.peer, m.protocol)),
            None => Owner::Daemon,
        }
    }

    /// Refuses, all or nothing, names or topics the caller may not use for `action`.
    fn check(
        &self,
        caller: &Caller<'_>,
        action: Action,
        names: &[Pattern],
    ) -> Result<(), RpcError> {
        let grants = caller.rights.grants();
        match names
            .iter()
            .find(|n| !grants.permits(action, Target::of(n)))
        {
            None => Ok(()),
            Some(name) => Err(self.refuse(caller, action, &name.to_string())),
        }
    }

    /// Refuses one concrete name or topic the caller may not use for `action`.
    fn check_name(&self, caller: &Caller<'_>, action: Action, name: &str) -> Result<(), RpcError> {
        if caller.rights.grants().permits(action, Target::Name(name)) {
            return Ok(());
        }
        Err(self.refuse(caller, action, name))
    }

    /// The -32008 answer to a refused action, counted and logged.
    fn refuse(&self, caller: &Caller<'_>, action: Action, name: &str) -> RpcError {
        Stats::bump(&self.stats.forbidden);
        crate::policy::warn_refused(caller.rights.identity(), action, name);
        RpcError::with(
            ErrorCode::Forbidden,
            format_args!(
                "{} may not {} {name:?} (see the policy in docs/security.md)",
                caller.rights.identity(),
                action.name()
            ),
        )
    }

    /// What `bus.list` answers: other peers' details only for admins.
    fn list(&self, caller: &Caller<'_>) -> List {
        let admin = caller.rights.admin();
        let mut names: Vec<NameInfo> = self
            .names
            .iter()
            .map(|(name, providers)| match providers {
                Providers::Exclusive(owner) => NameInfo {
                    name: name.to_string(),
                    provider: self.describe(*owner, admin || *owner == caller.id),
                    pending: self.pending_on(*owner),
                    group: None,
                },
                Providers::Group(g) => {
                    let group: Vec<GroupMember> = g
                        .members
                        .iter()
                        .map(|m| GroupMember {
                            provider: self.describe(*m, admin || *m == caller.id),
                            pending: self.pending_on(*m),
                        })
                        .collect();
                    NameInfo {
                        name: name.to_string(),
                        provider: Owner::Group {
                            members: group.len(),
                        },
                        pending: group.iter().map(|m| m.pending).sum(),
                        group: Some(group),
                    }
                }
            })
            .collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        let mut topics: Vec<TopicInfo> = self
            .topics
            .iter()
            .map(|(topic, subscribers)| TopicInfo {
                topic: topic.to_string(),
                subscribers: subscribers.len(),
            })
            .collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        List { names, topics }
    }
}

/// Who owns a name.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Owner {
    Connection(ProviderInfo),
    #[serde(serialize_with = "daemon")]
    Daemon,
    /// A provider group of this many members (shown as `"group"`).
    #[serde(serialize_with = "group")]
    Group {
        members: usize,
    },
}

fn daemon<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("daemon")
}

fn group<S: serde::Serializer>(_members: &usize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("group")
}

impl Owner {
    fn describe(&self) -> String {
        match self {
            Owner::Daemon => "the daemon itself".into(),
            Owner::Group { members } => format!("a group of {members} connections"),
            Owner::Connection(p) => match (&p.pid, &p.uid, &p.address) {
                (Some(pid), Some(uid), _) => {
                    format!("connection {} (unix pid {pid} uid {uid})", p.id)
                }
                (None, Some(uid), _) => format!("connection {} (unix uid {uid})", p.id),
                (_, _, Some(address)) => format!("connection {} (tcp {address})", p.id),
                _ => format!("connection {} ({})", p.id, p.transport),
            },
        }
    }
}

/// A provider as `bus.list` and the name-taken error show it.
#[derive(Debug, Serialize)]
struct ProviderInfo {
    id: usize,
    transport: &'static str,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
}

impl ProviderInfo {
    /// Without pid, uid, gid or address: what non-admins see of others.
    fn redacted(id: ConnRef, peer: Peer, protocol: Protocol) -> Self {
        Self {
            pid: None,
            uid: None,
            gid: None,
            address: None,
            ..Self::new(id, peer, protocol)
        }
    }

    fn new(id: ConnRef, peer: Peer, protocol: Protocol) -> Self {
        let (cred, address) = match peer {
            Peer::Unix(cred) => (cred, None),
            Peer::Tcp(addr) => (None, addr.map(|a| a.to_string())),
        };
        Self {
            id: id.token,
            transport: peer.transport().name(),
            protocol: protocol.name(),
            pid: cred.and_then(|c| c.pid),
            uid: cred.map(|c| c.uid),
            gid: cred.map(|c| c.gid),
            address,
        }
    }
}

#[derive(Debug, Serialize)]
struct NameInfo {
    name: String,
    provider: Owner,
    pending: usize,
    /// A group's members, each with its pending calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<Vec<GroupMember>>,
}

/// One member of a provider group in `bus.list`.
#[derive(Debug, Serialize)]
struct GroupMember {
    provider: Owner,
    pending: usize,
}

#[derive(Debug, Serialize)]
struct TopicInfo {
    topic: String,
    subscribers: usize,
}

#[derive(Debug, Serialize)]
struct List {
    names: Vec<NameInfo>,
    topics: Vec<TopicInfo>,
}
