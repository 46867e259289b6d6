//! The daemon's built-in `rpc.*` methods.

use serde::Serialize;

use crate::router::{Mode, Params, Router, RouterError};

/// One entry of `rpc.methods`.
#[derive(Debug, Serialize)]
struct MethodInfo<'a> {
    name: &'a str,
    description: &'a str,
    mode: Mode,
}

/// Adds `rpc.ping`, `rpc.echo`, `rpc.stats` and `rpc.methods` to `router`.
pub fn register_builtins(router: &mut Router) -> Result<(), RouterError> {
    router.insert(
        "rpc.ping",
        "answers \"pong\": a liveness check",
        Mode::Inline,
        Box::new(|_, reply| reply.json("pong")),
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
        Box::new(|call, reply| reply.json(&call.context.stats().snapshot())),
    )?;
    router.insert(
        "rpc.methods",
        "lists every registered method with a one-line description",
        Mode::Inline,
        Box::new(|call, reply| {
            let list: Vec<MethodInfo<'_>> = call
                .context
                .router()
                .methods()
                .into_iter()
                .map(|m| MethodInfo {
                    name: m.name(),
                    description: m.description(),
                    mode: m.mode(),
                })
                .collect();
            reply.json(&list)
        }),
    )?;
    Ok(())
}
