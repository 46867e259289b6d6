//! Routed calls: forwarding a call to its provider under an id the daemon
//! assigns, taking the provider's answer back to the caller in the caller's
//! protocol, and the ways a call ends without one (timeout, either side
//! leaving, shutdown).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;
use serde_json::value::RawValue;

use super::{Bus, Caller, Delivery};
use crate::error::{ErrorCode, RpcError};
use crate::proto::mcp1::{Header, Kind};
use crate::proto::{Protocol, jsonrpc, mcp1};
use crate::router::Params;
use crate::stats::Stats;
use crate::workers::{ConnRef, ReplyTo, encode_into};

/// What a provider answered.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A result: JSON text, or raw bytes (MCP1).
    Result(Params<'a>),
    /// An error, passed on as it came.
    Error(RpcError),
}

impl<'a> Outcome<'a> {
    /// A JSON-RPC provider's `result` (Ok) or `error` (Err) member.
    pub fn from_jsonrpc(member: Result<&'a RawValue, &'a RawValue>) -> Self {
        #[derive(serde::Deserialize)]
        struct Wire {
            code: i32,
            message: String,
            data: Option<serde_json::Value>,
        }
        let error = match member {
            Ok(result) => return Outcome::Result(Params::Json(result)),
            Err(error) => error,
        };
        Outcome::Error(match serde_json::from_str::<Wire>(error.get()) {
            Ok(wire) => {
                let mut rpc = RpcError::new(wire.code, wire.message);
                rpc.data = wire.data;
                rpc
            }
            Err(e) => RpcError::internal(format_args!(
                "the provider sent a malformed error object: {e}"
            )),
        })
    }

    /// An MCP1 provider's RESPONSE or ERROR frame.
    pub fn from_mcp1(header: &Header, payload: &'a [u8]) -> Self {
        if header.kind == Kind::Error {
            return Outcome::Error(match mcp1::parse_error_payload(payload) {
                Some(error) => error.to_rpc(),
                None => RpcError::internal("the provider sent a malformed ERROR frame"),
            });
        }
        if header.is_raw() {
            return Outcome::Result(Params::Raw(payload));
        }
        match mcp1::parse_json_body(payload) {
            Ok(raw) => Outcome::Result(Params::Json(raw)),
            Err(e) => Outcome::Error(RpcError::internal(format_args!(
                "the provider's result is not JSON: {}",
                e.message
                    .strip_prefix("Parse error: ")
                    .unwrap_or(&e.message)
            ))),
        }
    }
}

/// A call forwarded to a provider and not yet answered.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) caller: ConnRef,
    pub(super) reply: ReplyTo,
    pub(super) provider: ConnRef,
    pub(super) method: Box<str>,
    /// When it times out (None: no timeout).
    pub(super) deadline: Option<Instant>,
    /// When it started and the provided name's counters.
    pub(super) timing: Option<crate::observe::Timing>,
}

/// The pending calls, by the id the daemon gave them.
#[derive(Debug, Default)]
pub(super) struct Calls {
    pub(super) pending: HashMap<u32, Pending>,
    /// When pending calls are next checked for their deadline: a sweep
    /// every eighth of the timeout costs nothing per call, where a queue of
    /// deadlines would hold one entry per call for the whole timeout.
    pub(super) next_sweep: Option<Instant>,
    last_id: u32,
}

impl Calls {
    /// A fresh id: 1 to u32::MAX, never one still pending.
    pub(super) fn next_id(&mut self) -> u32 {
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            if self.last_id != 0 && !self.pending.contains_key(&self.last_id) {
                return self.last_id;
            }
        }
    }

    /// When the loop should next look for calls past their deadline.
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Gives memory back when the table is mostly empty.
    pub(super) fn shrink(&mut self) {
        if self.pending.capacity() > 4 * self.pending.len() + 64 {
            self.pending.shrink_to_fit();
        }
    }

    pub(super) fn ids_where(&self, keep: impl Fn(&Pending) -> bool) -> Vec<u32> {
        self.pending
            .iter()
            .filter(|(_, p)| keep(p))
            .map(|(id, _)| *id)
            .collect()
    }
}

impl Bus {
    /// Forwards a call (`reply` Some) or notification to `provider`.
    /// Err: the call cannot go there (the caller gets the error).
    pub fn forward(
        &mut self,
        caller: &Caller<'_>,
        reply: Option<ReplyTo>,
        provider: ConnRef,
        method: &str,
        params: Params<'_>,
        started: Instant,
    ) -> Result<(), RpcError> {
        let Some(to) = self.members.get(&provider).map(|m| m.protocol) else {
            return Err(RpcError::internal("the provider is gone"));
        };
        if self.congested.contains(&provider) {
            // It does not read what it is sent: more would only pile up.
            Stats::bump(&self.stats.bus.provider_busy);
            return Err(RpcError::with(
                ErrorCode::ServerBusy,
                format_args!(
                    "the provider of {method} is not reading the calls sent to it (its pending output is at max-output); retry later"
                ),
            ));
        }
        let id = reply.is_some().then(|| self.calls.next_id());
        let start = self.arena.len();
        if let Err(e) = write_call(&mut self.arena, to, id, method, params) {
            self.arena.truncate(start);
            return Err(e);
        }
        let frame = start..self.arena.len();
        self.outbox.push(Delivery::Frame {
            to: provider,
            frame,
        });
        Stats::bump(&self.stats.bus.routed_calls);
        let (Some(id), Some(reply)) = (id, reply) else {
            return Ok(());
        };
        let timeout = self.config.call_timeout;
        self.member(caller).calling += 1;
        if let Some(m) = self.members.get_mut(&provider) {
            m.providing += 1;
        }
        self.calls.pending.insert(
            id,
            Pending {
                caller: caller.id,
                reply,
                provider,
                method: method.into(),
                deadline: (!timeout.is_zero()).then(|| self.now + timeout),
                timing: self
                    .name_stats
                    .lookup(method)
                    .map(|stats| crate::observe::Timing {
                        stats: Arc::clone(stats),
                        started,
                    }),
            },
        );
        if !timeout.is_zero() && self.calls.next_sweep.is_none() {
            self.calls.next_sweep = Some(self.now + sweep_interval(timeout));
        }
        Ok(())
    }

    /// Takes a provider's answer to call `id` back to its caller. An id not
    /// pending on this provider (late, cancelled, never sent) is dropped.
    pub fn answer(&mut self, provider: ConnRef, id: Option<u32>, outcome: Outcome<'_>) {
        let pending = id.and_then(|id| {
            let pending = self.calls.pending.remove(&id)?;
            if pending.provider == provider {
                return Some(pending);
            }
            // Another provider's call: not this one's to answer.
            self.calls.pending.insert(id, pending);
            None
        });
        let Some(pending) = pending else {
            Stats::bump(&self.stats.bus.late_answers);
            tracing::debug!(id, "bus: an answer to no pending call dropped");
            return;
        };
        self.settle(&pending);
        let start = self.arena.len();
        let arena = std::mem::take(&mut self.arena);
        let mut done = encode_into(pending.caller, &pending.reply, arena, |reply| {
            match outcome {
                Outcome::Result(Params::Json(raw)) => reply.json_text(raw),
                Outcome::Result(Params::Raw(bytes)) => reply.bytes(bytes),
                Outcome::Result(Params::None) => {}
                Outcome::Error(error) => return Err(error),
            }
            Ok(())
        });
        done.timing = pending.timing;
        self.push_answer(done, start);
    }

    /// Fails every call waiting on a provider that left.
    pub(super) fn fail_calls_on(&mut self, provider: ConnRef) {
        for id in self.calls.ids_where(|p| p.provider == provider) {
            if let Some(pending) = self.calls.pending.remove(&id) {
                Stats::bump(&self.stats.bus.provider_gone);
                let error = RpcError::with(
                    ErrorCode::ProviderGone,
                    format_args!("the provider of {} disconnected", pending.method),
                );
                self.fail(pending, error);
            }
        }
    }

    /// Cancels at their providers the calls of a caller that left.
    pub(super) fn cancel_calls_of(&mut self, caller: ConnRef) {
        for id in self.calls.ids_where(|p| p.caller == caller) {
            if let Some(pending) = self.calls.pending.remove(&id) {
                self.settle(&pending);
                self.cancel(id, pending.provider, "caller gone");
            }
        }
    }

    /// Ends the calls whose deadline has passed: the caller gets -32023,
    /// the provider a cancel.
    pub fn expire(&mut self, now: Instant) {
        if self.calls.next_sweep.is_none_or(|at| at > now) {
            return;
        }
        let expired = self
            .calls
            .ids_where(|p| p.deadline.is_some_and(|at| at <= now));
        for id in expired {
            let Some(pending) = self.calls.pending.remove(&id) else {
                continue;
            };
            Stats::bump(&self.stats.bus.call_timeouts);
            let error = RpcError::with(
                ErrorCode::CallTimeout,
                format_args!(
                    "no answer from the provider of {} within {:?}",
                    pending.method, self.config.call_timeout
                ),
            );
            tracing::debug!(id, method = %pending.method, "bus: routed call timed out");
            let provider = pending.provider;
            self.fail(pending, error);
            self.cancel(id, provider, "timeout");
        }
        let timeout = self.config.call_timeout;
        self.calls.next_sweep =
            (!self.calls.pending.is_empty()).then(|| now + sweep_interval(timeout));
    }

    /// Fails every pending call: the daemon is shutting down and reads no
    /// more answers.
    pub fn shut_down(&mut self) {
        let ids: Vec<u32> = self.calls.pending.keys().copied().collect();
        for id in ids {
            if let Some(pending) = self.calls.pending.remove(&id) {
                let error = RpcError::with(ErrorCode::ServerBusy, "the daemon is shutting down");
                self.fail(pending, error);
            }
        }
    }

    /// Answers a pending call's caller with `error`.
    pub(super) fn fail(&mut self, pending: Pending, error: RpcError) {
        self.settle(&pending);
        let start = self.arena.len();
        let arena = std::mem::take(&mut self.arena);
        let mut done = encode_into(pending.caller, &pending.reply, arena, |_| Err(error));
        done.timing = pending.timing;
        self.push_answer(done, start);
    }

    /// Tells a provider that call `id` will not be answered to anyone.
    pub(super) fn cancel(&mut self, id: u32, provider: ConnRef, reason: &'static str) {
        if provider == crate::federation::CLUSTER {
            return self.cancel_out(id, reason);
        }
        let Some(protocol) = self.members.get(&provider).map(|m| m.protocol) else {
            return;
        };
        self.push_frame(provider, false, |frame| match protocol {
            Protocol::JsonRpc => {
                let params = format!(r#"{{"id":{id},"reason":"{reason}"}}"#);
                jsonrpc::write_request(frame, None, "bus.cancel", Some(&params));
                frame.push(b'\n');
            }
            Protocol::Mcp1 => {
                let body = format!(r#"{{"reason":"{reason}"}}"#);
                mcp1::write_cancel(frame, id, body.as_bytes());
            }
        });
    }

    /// Takes an ended call off both sides' counts. A caller stays known
    /// until it closes (its next call would only bring it back); a provider
    /// that has unregistered everything is forgotten with its last call.
    pub(super) fn settle(&mut self, pending: &Pending) {
        if let Some(m) = self.members.get_mut(&pending.caller) {
            m.calling = m.calling.saturating_sub(1);
        }
        if let Some(m) = self.members.get_mut(&pending.provider) {
            m.providing = m.providing.saturating_sub(1);
            if m.is_unused() {
                self.members.remove(&pending.provider);
            }
        }
    }

    /// Calls pending on `provider`.
    pub(super) fn pending_on(&self, provider: ConnRef) -> usize {
        self.members.get(&provider).map_or(0, |m| m.providing)
    }
}

/// How often pending calls are checked against a timeout: its timing is
/// kept within an eighth of it.
pub(super) fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Encodes a forwarded request (`id` Some) or notification for a provider
/// speaking `to`.
fn write_call(
    out: &mut Vec<u8>,
    to: Protocol,
    id: Option<u32>,
    method: &str,
    params: Params<'_>,
) -> Result<(), RpcError> {
    match (to, params) {
        (Protocol::JsonRpc, Params::Raw(_)) => Err(RpcError::with(
            ErrorCode::UnsupportedEncoding,
            format_args!(
                "the provider of {method} speaks JSON-RPC, which cannot carry raw MCP1 params"
            ),
        )),
        (Protocol::JsonRpc, Params::Json(raw)) if !is_structured(raw) => {
            Err(RpcError::invalid_params(format_args!(
                "the provider of {method} speaks JSON-RPC, whose params must be an array or an object"
            )))
        }
        (Protocol::JsonRpc, params) => {
            let text = match params {
                Params::Json(raw) => Some(raw.get()),
                _ => None,
            };
            jsonrpc::write_request(out, id, method, text);
            out.push(b'\n');
            Ok(())
        }
        (Protocol::Mcp1, Params::None) => {
            mcp1::write_call(out, id, method, b"", false);
            Ok(())
        }
        (Protocol::Mcp1, Params::Json(raw)) => {
            mcp1::write_call(out, id, method, raw.get().as_bytes(), false);
            Ok(())
        }
        (Protocol::Mcp1, Params::Raw(bytes)) => {
            mcp1::write_call(out, id, method, bytes, true);
            Ok(())
        }
    }
}

fn is_structured(raw: &RawValue) -> bool {
    matches!(raw.get().as_bytes().first(), Some(b'[' | b'{'))
}
