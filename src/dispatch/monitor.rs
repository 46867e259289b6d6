//! The dispatcher's side of `rpc.monitor`: making a connection a monitor,
//! and the line for each call it reads while one is attached.

use super::{Answer, Dispatcher};
use crate::bus::Caller;
use crate::bus::pattern::Pattern;
use crate::error::RpcError;
use crate::router::Params;

/// `rpc.monitor`'s params: the methods and topics to watch (all when absent).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorParams {
    #[serde(default)]
    patterns: Vec<String>,
}

impl Dispatcher<'_, '_, '_> {
    /// `rpc.monitor` (the policy let an admin through): from now on the
    /// connection gets a line for each call, answer and event that matches.
    pub(super) fn start_monitor(&mut self, answer: Answer<'_>, params: Params<'_>) {
        let parsed = match params {
            Params::None => Ok(MonitorParams::default()),
            params => params
                .parse::<Option<MonitorParams>>()
                .map(Option::unwrap_or_default),
        };
        let patterns = parsed.and_then(|p| {
            p.patterns
                .iter()
                .map(|text| Pattern::parse(text).map_err(RpcError::invalid_params))
                .collect::<Result<Vec<_>, _>>()
        });
        let patterns = match patterns {
            Ok(patterns) => patterns,
            Err(error) => return self.send_error(answer, &error),
        };
        let shown: Vec<String> = patterns.iter().map(ToString::to_string).collect();
        let caller = Caller {
            id: self.conn,
            peer: self.peer,
            protocol: answer.protocol(),
            rights: &*self.rights,
        };
        self.shared.bus.monitor(&caller, patterns);
        let topic = crate::bus::monitor::MONITOR_TOPIC;
        self.send_result(answer, |reply| {
            reply.json(&serde_json::json!({"monitoring": shown, "topic": topic}))
        });
    }

    /// Queues the line of a call as it arrives for the monitors watching it.
    /// The id is rendered inside the closure (the identity straight into
    /// the line): a monitor whose queue is full (or that does not watch
    /// `method`) costs no allocation per call.
    pub(super) fn tap_call(&mut self, answer: Answer<'_>, method: &str, params: Params<'_>) {
        let (conn, protocol) = (self.conn.token, answer.protocol());
        let rights = &self.rights;
        self.shared.bus.tap(method, || {
            let id = match answer {
                Answer::JsonRpc { id, .. } => id.map(|raw| raw.get().to_string()),
                Answer::Mcp1 { id } => id.map(|n| n.to_string()),
            };
            let identity = rights.identity();
            crate::monitor::call_line(conn, identity, protocol, method, id.as_deref(), params)
        });
    }
}
