//! Routed calls: forwarding a call to its provider under an id the daemon
//! assigns, taking the provider's answer back to the caller in the caller's
//! protocol, and the ways a call ends without one (timeout, either side
//! leaving, shutdown).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde_json::value::RawValue;

use super::{Bus, Caller, Delivery};
use crate::error::{ErrorCode, RpcError};
use crate::proto::{Protocol, jsonrpc, mcp1};
use crate::router::Params;
use crate::stats::Stats;
use crate::workers::{Completion, ConnRef, ReplyTo, encode_into};
use crate::write_queue::ChunkPool;

/// What a provider answered.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A result: JSON text, or raw bytes (MCP1).
    Result(Params<'a>),
    /// An error, passed on as it came.
    Error(RpcError),
}

/// A call forwarded to a provider and not yet answered.
#[derive(Debug)]
struct Pending {
    caller: ConnRef,
    reply: ReplyTo,
    provider: ConnRef,
    method: Box<str>,
}

/// The pending calls, by the id the daemon gave them.
#[derive(Debug, Default)]
pub(super) struct Calls {
    pending: HashMap<u32, Pending>,
    /// Deadlines in the order they were set (one timeout for all, so also
    /// in time order); entries of calls already ended are skipped.
    deadlines: VecDeque<(Instant, u32)>,
    last_id: u32,
}

impl Calls {
    /// A fresh id: 1 to u32::MAX, never one still pending.
    fn next_id(&mut self) -> u32 {
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            if self.last_id != 0 && !self.pending.contains_key(&self.last_id) {
                return self.last_id;
            }
        }
    }

    /// The earliest deadline still pending.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&(at, id)) = self.deadlines.front() {
            if self.pending.contains_key(&id) {
                return Some(at);
            }
            self.deadlines.pop_front();
        }
        None
    }

    pub(super) fn deadline_hint(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _)| *at)
    }

    fn ids_where(&self, keep: impl Fn(&Pending) -> bool) -> Vec<u32> {
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
        chunks: &mut ChunkPool,
    ) -> Result<(), RpcError> {
        let Some(to) = self.members.get(&provider).map(|m| m.protocol) else {
            return Err(RpcError::internal("the provider is gone"));
        };
        let id = reply.is_some().then(|| self.calls.next_id());
        let mut frame = chunks.take();
        if let Err(e) = write_call(&mut frame, to, id, method, params) {
            chunks.give(frame);
            return Err(e);
        }
        self.outbox.push(Delivery::Frame {
            to: provider,
            frame,
        });
        Stats::bump(&self.stats.bus.routed_calls);
        let (Some(id), Some(reply)) = (id, reply) else {
            return Ok(());
        };
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
            },
        );
        if !self.config.call_timeout.is_zero() {
            let deadline = Instant::now() + self.config.call_timeout;
            self.calls.deadlines.push_back((deadline, id));
        }
        Ok(())
    }

    /// Takes a provider's answer to call `id` back to its caller. An id not
    /// pending on this provider (late, cancelled, never sent) is dropped.
    pub fn answer(&mut self, provider: ConnRef, id: Option<u32>, outcome: Outcome<'_>) {
        let pending = id.and_then(|id| match self.calls.pending.get(&id) {
            Some(p) if p.provider == provider => self.calls.pending.remove(&id),
            _ => None,
        });
        let Some(pending) = pending else {
            Stats::bump(&self.stats.bus.late_answers);
            tracing::debug!(id, "bus: an answer to no pending call dropped");
            return;
        };
        self.settle(&pending);
        let done = encode_into(pending.caller, &pending.reply, Vec::new(), |reply| {
            match outcome {
                Outcome::Result(Params::Json(raw)) => reply.json_text(raw),
                Outcome::Result(Params::Raw(bytes)) => reply.bytes(bytes),
                Outcome::Result(Params::None) => {}
                Outcome::Error(error) => return Err(error),
            }
            Ok(())
        });
        self.outbox.push(Delivery::Answer(done));
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

    /// A caller that is still open but will read nothing more (its peer
    /// hung up): its calls are cancelled at their providers, and each is
    /// answered with nothing, so that the connection can finish.
    pub fn caller_gone(&mut self, caller: ConnRef) {
        if self.members.get(&caller).is_none_or(|m| m.calling == 0) {
            return;
        }
        for id in self.calls.ids_where(|p| p.caller == caller) {
            if let Some(pending) = self.calls.pending.remove(&id) {
                self.settle(&pending);
                self.cancel(id, pending.provider, "caller gone");
                let (protocol, batch) = match &pending.reply {
                    ReplyTo::JsonRpc { batch, .. } => (Protocol::JsonRpc, *batch),
                    ReplyTo::Mcp1 { .. } => (Protocol::Mcp1, None),
                };
                self.outbox.push(Delivery::Answer(Completion {
                    conn: caller,
                    protocol,
                    batch,
                    frame: Vec::new(),
                    is_error: false,
                }));
            }
        }
    }

    /// Ends the calls whose deadline has passed: the caller gets -32023,
    /// the provider a cancel.
    pub fn expire(&mut self, now: Instant) {
        while let Some(at) = self.calls.next_deadline() {
            if at > now {
                break;
            }
            let Some((_, id)) = self.calls.deadlines.pop_front() else {
                break;
            };
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
    fn fail(&mut self, pending: Pending, error: RpcError) {
        self.settle(&pending);
        let done = encode_into(pending.caller, &pending.reply, Vec::new(), |_| Err(error));
        self.outbox.push(Delivery::Answer(done));
    }

    /// Tells a provider that call `id` will not be answered to anyone.
    fn cancel(&mut self, id: u32, provider: ConnRef, reason: &str) {
        let Some(protocol) = self.members.get(&provider).map(|m| m.protocol) else {
            return;
        };
        let mut frame = Vec::with_capacity(96);
        match protocol {
            Protocol::JsonRpc => {
                let params = format!(r#"{{"id":{id},"reason":"{reason}"}}"#);
                jsonrpc::write_request(&mut frame, None, "bus.cancel", Some(&params));
                frame.push(b'\n');
            }
            Protocol::Mcp1 => {
                let body = format!(r#"{{"reason":"{reason}"}}"#);
                mcp1::write_cancel(&mut frame, id, body.as_bytes());
            }
        }
        self.outbox.push(Delivery::Frame {
            to: provider,
            frame,
        });
    }

    /// Takes an ended call off both sides' counts.
    fn settle(&mut self, pending: &Pending) {
        if let Some(m) = self.members.get_mut(&pending.caller) {
            m.calling = m.calling.saturating_sub(1);
        }
        if let Some(m) = self.members.get_mut(&pending.provider) {
            m.providing = m.providing.saturating_sub(1);
        }
        self.prune(pending.caller);
        self.prune(pending.provider);
    }

    /// Calls pending on `provider`.
    pub(super) fn pending_on(&self, provider: ConnRef) -> usize {
        self.members.get(&provider).map_or(0, |m| m.providing)
    }
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
