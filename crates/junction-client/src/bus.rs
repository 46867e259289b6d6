//! The bus methods of `proto/bus.md` as typed calls: provide methods
//! (`register`), subscribe to topics, publish events, list the bus.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Client, ClientError};

/// One registered name or pattern in [`BusList`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProvidedName {
    /// The name or pattern (`editor.open`, `editor.*`).
    pub name: String,
    /// Who provides it.
    pub provider: Provider,
    /// Calls forwarded to that provider (all of a group's members) and not
    /// yet answered.
    #[serde(default)]
    pub pending: u64,
    /// A provider group's members, each with its pending calls.
    #[serde(default)]
    pub group: Option<Vec<GroupMember>>,
}

/// Who provides a name, as `bus.list` shows it (proto/bus.md section 6).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Provider {
    /// One connection.
    Connection(Peer),
    /// `"daemon"` (the daemon's own methods) or `"group"` (a provider
    /// group, whose members are in [`ProvidedName::group`]).
    Named(String),
}

/// A connection as the bus shows it. Others' pid, uid, gid and address are
/// shown to admins only; everyone sees their own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Peer {
    /// The connection number (as `rpc.clients` shows it).
    pub id: u64,
    /// `unix` or `tcp`.
    pub transport: String,
    /// `jsonrpc` or `mcp1`.
    pub protocol: String,
    /// A Unix peer's process id.
    #[serde(default)]
    pub pid: Option<i32>,
    /// A Unix peer's user id.
    #[serde(default)]
    pub uid: Option<u32>,
    /// A Unix peer's group id.
    #[serde(default)]
    pub gid: Option<u32>,
    /// A TCP peer's address.
    #[serde(default)]
    pub address: Option<String>,
}

/// One member of a provider group in [`ProvidedName::group`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GroupMember {
    /// The member.
    pub provider: Provider,
    /// Calls forwarded to it and not yet answered.
    #[serde(default)]
    pub pending: u64,
}

/// One topic or pattern in [`BusList`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TopicEntry {
    /// The topic or pattern.
    pub topic: String,
    /// How many connections subscribe to it.
    pub subscribers: u64,
}

/// The answer of `bus.list`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BusList {
    /// Every registered name and pattern, sorted.
    pub names: Vec<ProvidedName>,
    /// Every subscribed topic and pattern, sorted.
    pub topics: Vec<TopicEntry>,
}

impl Client {
    /// Provides methods: `bus.register` of names and patterns (`editor.*`).
    /// All or nothing; returns the names now provided. A name owned by
    /// another connection is error -32020, one the policy refuses -32021.
    pub fn register<S: AsRef<str>>(&mut self, names: &[S]) -> Result<Vec<String>, ClientError> {
        self.name_list("bus.register", "names", names)
    }

    /// Stops providing names (`bus.unregister`); returns the names released.
    pub fn unregister<S: AsRef<str>>(&mut self, names: &[S]) -> Result<Vec<String>, ClientError> {
        self.name_list("bus.unregister", "names", names)
    }

    /// Subscribes to topics and patterns (`bus.subscribe`); events then
    /// arrive as [`Incoming::Event`](super::Incoming::Event) from
    /// [`Client::next_message`].
    pub fn subscribe<S: AsRef<str>>(&mut self, topics: &[S]) -> Result<Vec<String>, ClientError> {
        self.name_list("bus.subscribe", "topics", topics)
    }

    /// Unsubscribes (`bus.unsubscribe`); returns the topics unsubscribed.
    pub fn unsubscribe<S: AsRef<str>>(&mut self, topics: &[S]) -> Result<Vec<String>, ClientError> {
        self.name_list("bus.unsubscribe", "topics", topics)
    }

    /// Publishes `data` on `topic` (`bus.publish`); returns how many
    /// subscribers it was queued for.
    pub fn publish(&mut self, topic: &str, data: Value) -> Result<u64, ClientError> {
        let result = self.call("bus.publish", Some(json!({"topic": topic, "data": data})))?;
        result
            .get("subscribers")
            .and_then(Value::as_u64)
            .ok_or_else(|| unexpected("bus.publish", &result))
    }

    /// Lists the bus: names with their providers, topics with their
    /// subscriber counts (`bus.list`).
    pub fn bus_list(&mut self) -> Result<BusList, ClientError> {
        let result = self.call("bus.list", None)?;
        serde_json::from_value(result.clone()).map_err(|_| unexpected("bus.list", &result))
    }

    /// Calls a bus method taking `{key: [..]}` and answering `{key: [..]}`.
    fn name_list<S: AsRef<str>>(
        &mut self,
        method: &str,
        key: &str,
        items: &[S],
    ) -> Result<Vec<String>, ClientError> {
        let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
        let result = self.call(method, Some(json!({ key: items })))?;
        let list = result
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| unexpected(method, &result))?;
        list.iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| unexpected(method, &result))
    }
}

fn unexpected(method: &str, result: &Value) -> ClientError {
    ClientError::Protocol(format!(
        "{method} answered {result}, not what proto/bus.md says"
    ))
}
