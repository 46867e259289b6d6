//! The daemon's built-in `rpc.*` methods.

use serde::Serialize;

use crate::access::{AUTH_METHOD, offered_token};
use crate::error::{ErrorCode, RpcError};
use crate::router::{Mode, Params, Router, RouterError};

/// One entry of `rpc.methods`.
#[derive(Debug, Serialize)]
struct MethodInfo<'a> {
    name: &'a str,
    description: &'a str,
    /// "inline", "pooled", "loop", or "routed" (provided by a client).
    mode: &'a str,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Inline => "inline",
            Mode::Pooled => "pooled",
            Mode::Loop => "loop",
        }
    }
}

/// The admin-only method that reloads the configuration (see `crate::reload`).
pub const RELOAD_METHOD: &str = "rpc.reload";

/// The method that answers the OpenRPC document.
pub const DISCOVER_METHOD: &str = "rpc.discover";

/// The admin-only method that lists the slow log.
pub const SLOWLOG_METHOD: &str = "rpc.slowlog";
/// The admin-only method that empties the slow log.
pub const SLOWLOG_RESET_METHOD: &str = "rpc.slowlog.reset";
/// The admin-only method that turns a connection into a monitor.
pub const MONITOR_METHOD: &str = "rpc.monitor";

/// True for the methods only admins may call whatever the call rules say:
/// they change the daemon or show other peers' identities and traffic.
pub fn admin_only(method: &str) -> bool {
    matches!(
        method,
        RELOAD_METHOD | SLOWLOG_METHOD | SLOWLOG_RESET_METHOD | MONITOR_METHOD
    )
}

/// `rpc.slowlog`'s params: `{"count": N}` for the newest N only.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowlogParams {
    count: Option<usize>,
}

/// Adds `rpc.ping`, `rpc.echo`, `rpc.stats`, `rpc.methods`, `rpc.clients`
/// and `rpc.auth` to `router`.
pub fn register_builtins(router: &mut Router) -> Result<(), RouterError> {
    router.insert(
        "rpc.ping",
        "answers \"pong\": a liveness check",
        Mode::Inline,
        Box::new(|_, reply| {
            reply.json_static("\"pong\"");
            Ok(())
        }),
    )?;
    router.insert(
        "rpc.echo",
        "returns its params unchanged (JSON or, over MCP1, raw bytes)",
        Mode::Inline,
        Box::new(|call, reply| {
            match call.params {
                Params::None => {}
                Params::Json(raw) => reply.json_text(raw),
                Params::Raw(bytes) => reply.bytes(bytes),
            }
            Ok(())
        }),
    )?;
    router.insert(
        "rpc.stats",
        "counters: connections per transport, frames and errors per protocol, bytes, uptime, workers",
        Mode::Inline,
        Box::new(|call, reply| reply.json(&crate::observe::full_stats(call.context))),
    )?;
    router.insert(
        "rpc.methods",
        "lists every method: the daemon's, the bus's, and the names clients provide",
        Mode::Inline,
        Box::new(|call, reply| {
            let routed = match call.context.directory().read() {
                Ok(names) => names.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let own = call
                .context
                .router()
                .methods()
                .into_iter()
                .map(|m| MethodInfo {
                    name: m.name(),
                    description: m.description(),
                    mode: m.mode().name(),
                });
            let bus = crate::bus::METHODS
                .iter()
                .map(|(name, description)| MethodInfo {
                    name,
                    description,
                    mode: "inline",
                });
            let provided = routed.iter().map(|(name, provider)| MethodInfo {
                name,
                description: provider,
                mode: "routed",
            });
            let mut list: Vec<MethodInfo<'_>> = own.chain(bus).chain(provided).collect();
            list.sort_by(|a, b| a.name.cmp(b.name));
            reply.json(&list)
        }),
    )?;
    router.insert(
        "rpc.clients",
        "lists open connections: transport, protocol, identity, peer pid/uid/gid or address, age, in-flight work (others' only for admins)",
        Mode::Loop,
        Box::new(|call, reply| reply.json(&call.clients.unwrap_or_default())),
    )?;
    router.insert(
        RELOAD_METHOD,
        "admins only: re-reads the configuration file's reloadable part (policy, tokens, log filter; see docs/operations.md); answers what was applied and what needs a restart",
        Mode::Pooled,
        Box::new(|call, reply| match crate::reload::reload(call.context) {
            Ok(report) => reply.json(&report),
            Err(e) => Err(RpcError::with(ErrorCode::InternalError, e.to_string())),
        }),
    )?;
    router.insert(
        SLOWLOG_METHOD,
        "admins only: the last calls slower than slowlog-threshold, newest first ({\"count\": N} for the newest N): method, identity, conn, protocol, duration_us, time",
        Mode::Inline,
        Box::new(|call, reply| {
            let params = match call.params {
                Params::None => SlowlogParams::default(),
                params => params.parse::<Option<SlowlogParams>>()?.unwrap_or_default(),
            };
            let slowlog = &call.context.observe().slowlog;
            let (threshold, max_len) = slowlog.settings();
            reply.json(&serde_json::json!({
                "threshold_us": u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX),
                "max_len": max_len,
                "entries": slowlog.entries(params.count),
            }))
        }),
    )?;
    router.insert(
        SLOWLOG_RESET_METHOD,
        "admins only: empties the slow log; answers how many entries it held",
        Mode::Inline,
        Box::new(|call, reply| reply.json(&call.context.observe().slowlog.reset())),
    )?;
    router.insert(
        MONITOR_METHOD,
        "admins only: turns this connection into a monitor ({\"patterns\": [\"editor.*\"]}, all when absent): a bus.event on topic rpc.monitor for each call, answer and event, lines lost when it reads too slowly (counted in \"dropped\")",
        Mode::Loop,
        // The dispatcher answers it on the connection; this runs only
        // without one (Context::call_json).
        Box::new(|_, _| {
            Err(RpcError::with(
                ErrorCode::InvalidRequest,
                "rpc.monitor works only on a connection to the daemon",
            ))
        }),
    )?;
    router.insert(
        DISCOVER_METHOD,
        "an OpenRPC 1.3 document of every method served now, with JSON Schemas of params and results",
        Mode::Pooled,
        Box::new(|call, reply| reply.json(&crate::discover::document(call.context))),
    )?;
    router.insert(
        AUTH_METHOD,
        "authenticates a TCP connection: {\"token\": \"...\"}; must be its first request when a token is set",
        Mode::Inline,
        Box::new(|call, reply| {
            // The first request of a connection that must authenticate never
            // gets here (the connection judges it); this answers later calls.
            let access = call.context.access();
            if access.tokens.is_empty() {
                return Err(RpcError::with(
                    ErrorCode::Unauthorized,
                    "authentication is not enabled on this daemon (no token)",
                ));
            }
            match offered_token(call.params) {
                Some(offered) if access.match_token(&offered).is_some() => reply.json(&true),
                _ => Err(RpcError::with(ErrorCode::Unauthorized, "wrong or missing token")),
            }
        }),
    )?;
    let own: Vec<String> = router
        .methods()
        .iter()
        .map(|m| m.name().to_string())
        .filter(|n| n.starts_with(crate::router::RESERVED_PREFIX))
        .collect();
    for name in own {
        let schema = crate::discover::builtin_schema(&name);
        router.schema(&name, schema.params, schema.result)?;
    }
    Ok(())
}
