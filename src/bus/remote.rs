//! The bus's side of federation (src/federation/, docs/federation.md):
//! calls no local connection provides go to the cluster, calls and events
//! from the cluster reach local providers and subscribers, and names
//! provided here are served to the cluster. The cluster stands in the bus
//! as one connection ([`CLUSTER`]): the provider of calls routed out, the
//! caller of calls served here, so timeouts, cancels and "provider gone"
//! work as for local calls. Without `--nats` the bus has no uplink and
//! nothing here runs.

use serde_json::value::RawValue;

use super::calls::{Outcome, Pending};
use super::pattern::Pattern;
use super::{Bus, Caller};
use crate::access::Peer;
use crate::error::{ErrorCode, RpcError};
use crate::federation::{CLUSTER, Command, NO_HOST, UNREACHABLE, Uplink};
use crate::policy::{Action, Rights, Target};
use crate::proto::{Protocol, mcp1};
use crate::router::Params;
use crate::stats::Stats;
use crate::workers::ReplyTo;

impl Bus {
    /// Connects the bus to the NATS thread (`--nats`).
    pub(crate) fn attach_uplink(&mut self, uplink: Uplink) {
        self.uplink = Some(uplink);
    }

    /// True when calls without a local provider go to the cluster.
    pub fn federated(&self) -> bool {
        self.uplink.is_some()
    }

    /// Sends a call (`reply` Some) or notification no local connection
    /// provides to the cluster. Err: it cannot go (-32041, or -32601
    /// without federation).
    pub fn forward_remote(
        &mut self,
        caller: &Caller<'_>,
        reply: Option<ReplyTo>,
        method: &str,
        params: Params<'_>,
    ) -> Result<(), RpcError> {
        let Some(uplink) = &self.uplink else {
            return Err(RpcError::method_not_found(method));
        };
        if !uplink.is_connected() {
            Stats::bump(&self.stats.federation.unreachable);
            return Err(unreachable(method, "this daemon is not connected to NATS"));
        }
        let (payload, raw) = match params {
            Params::None => (Vec::new(), false),
            Params::Json(json) => (json.get().as_bytes().to_vec(), false),
            Params::Raw(bytes) => (bytes.to_vec(), true),
        };
        let id = reply.is_some().then(|| self.calls.next_id());
        let command = Command::Call {
            id,
            method: method.into(),
            payload,
            raw,
            identity: caller.rights.identity().to_string().into(),
        };
        if !uplink.send(command) {
            Stats::bump(&self.stats.federation.unreachable);
            return Err(unreachable(method, "the link to NATS is saturated"));
        }
        Stats::bump(&self.stats.bus.routed_calls);
        let (Some(id), Some(reply)) = (id, reply) else {
            return Ok(());
        };
        self.member(caller).calling += 1;
        self.track(id, caller.id, reply, CLUSTER, method);
        Ok(())
    }

    /// The cluster's answer (an MCP1 frame) to call `id`.
    pub(crate) fn remote_answer(&mut self, id: u32, frame: &[u8]) {
        let outcome = match mcp1::check_from_daemon(frame, frame.len(), usize::MAX) {
            mcp1::Next::Frame(header)
                if matches!(header.kind, mcp1::Kind::Response | mcp1::Kind::Error)
                    && frame.len() >= header.frame_len() =>
            {
                Outcome::from_mcp1(&header, &frame[mcp1::HEADER_LEN..header.frame_len()])
            }
            _ => Outcome::Error(RpcError::internal("the cluster sent a malformed answer")),
        };
        self.answer(CLUSTER, Some(id), outcome);
    }

    /// Call `id`, routed out, ended without an answer.
    pub(crate) fn remote_fail(&mut self, id: u32, error: RpcError) {
        if self
            .calls
            .pending
            .get(&id)
            .is_some_and(|p| p.provider == CLUSTER)
        {
            if let Some(pending) = self.calls.pending.remove(&id) {
                self.fail(pending, error);
            }
        }
    }

    /// The connection to NATS was lost: every call routed out fails (-32041).
    pub(crate) fn remote_lost(&mut self) {
        for id in self.calls.ids_where(|p| p.provider == CLUSTER) {
            if let Some(pending) = self.calls.pending.remove(&id) {
                let error = unreachable(
                    &pending.method,
                    "the connection to NATS was lost with the call pending",
                );
                self.fail(pending, error);
            }
        }
    }

    /// A call (`token` Some) or notification from another daemon: judged as
    /// the cluster's identity, then routed to a local provider like any
    /// call; its answer goes back through [`Bus::reply_remote`].
    pub(crate) fn serve_remote(
        &mut self,
        rights: &mut Rights,
        token: Option<u32>,
        method: &str,
        payload: &[u8],
        raw: bool,
        identity: &str,
    ) {
        let peer = Peer::Tcp(None);
        let result = (|| {
            if !rights.may_call(method) {
                Stats::bump(&self.stats.forbidden);
                Stats::bump(&self.stats.federation.calls_refused);
                crate::policy::warn_refused(rights.identity(), Action::Call, method);
                return Err(RpcError::with(
                    ErrorCode::Forbidden,
                    format_args!(
                        "{} (the cluster, for {identity}) may not call {method:?} on this daemon (see the policy in docs/security.md)",
                        rights.identity()
                    ),
                ));
            }
            let params = match (raw, payload.is_empty()) {
                (true, _) => Params::Raw(payload),
                (false, true) => Params::None,
                (false, false) => Params::Json(mcp1::parse_json_body(payload)?),
            };
            let Some(provider) = self.provider_of(method) else {
                return Err(RpcError::new(
                    NO_HOST,
                    format!(
                        "No host provides it: {method} is no longer provided on the daemon it was sent to"
                    ),
                ));
            };
            let caller = Caller {
                id: CLUSTER,
                peer: &peer,
                protocol: Protocol::Mcp1,
                rights,
            };
            let reply = token.map(|t| ReplyTo::Mcp1 { id: Some(t) });
            self.forward(&caller, reply, provider, method, params, self.now)
        })();
        let (Err(error), Some(token)) = (result, token) else {
            return;
        };
        let mut frame = Vec::new();
        mcp1::write_error(&mut frame, token, &error);
        self.reply_remote(&frame);
    }

    /// The answer to a call served for another daemon, encoded for the
    /// cluster (an MCP1 frame whose id is the NATS thread's token).
    pub(crate) fn reply_remote(&mut self, frame: &[u8]) {
        let Some(uplink) = &self.uplink else {
            return;
        };
        let Some((token, _)) = mcp1::peek_header(frame) else {
            return;
        };
        uplink.send(Command::Reply {
            token,
            frame: frame.to_vec(),
        });
    }

    /// The caller of a call served here (token) left or timed out: the
    /// local provider gets a cancel, and no answer goes back.
    pub(crate) fn cancel_remote(&mut self, token: u32) {
        let ids = self.calls.ids_where(|p| {
            p.caller == CLUSTER && matches!(p.reply, ReplyTo::Mcp1 { id: Some(t) } if t == token)
        });
        for id in ids {
            if let Some(pending) = self.calls.pending.remove(&id) {
                self.settle(&pending);
                self.cancel(id, pending.provider, "caller gone");
            }
        }
    }

    /// An event from another daemon: delivered to local subscribers when
    /// the cluster's identity may publish on the topic.
    pub(crate) fn remote_event(
        &mut self,
        rights: &Rights,
        topic: &str,
        data: Box<RawValue>,
        identity: &str,
    ) {
        let valid = matches!(Pattern::parse(topic), Ok(Pattern::Exact(_)));
        if !valid
            || !rights
                .grants()
                .permits(Action::Publish, Target::Name(topic))
        {
            Stats::bump(&self.stats.federation.events_refused);
            Stats::bump(&self.stats.forbidden);
            crate::policy::warn_refused(rights.identity(), Action::Publish, topic);
            tracing::debug!(
                topic,
                identity,
                "nats: an event from the cluster was refused"
            );
            return;
        }
        if let Err(error) = self.publish(topic, data) {
            Stats::bump(&self.stats.federation.events_dropped);
            tracing::debug!(topic, %error, "nats: an event from the cluster was dropped");
        }
    }

    /// A local publish: also to the cluster, when federated.
    pub(crate) fn publish_remote(&self, caller: &Caller<'_>, topic: &str, data: &RawValue) {
        if let Some(uplink) = &self.uplink {
            // Fire and forget, as locally: not queued while disconnected.
            let sent = uplink.is_connected()
                && uplink.send(Command::Publish {
                    topic: topic.into(),
                    data: data.to_owned(),
                    identity: caller.rights.identity().to_string().into(),
                });
            if !sent {
                Stats::bump(&uplink.stats().federation.events_dropped);
            }
        }
    }

    /// A name is now provided here (`on`), or no longer: served to the
    /// cluster, or not.
    pub(super) fn export(&self, name: &Pattern, on: bool) {
        if let Some(uplink) = &self.uplink {
            let text = name.to_string();
            let command = if on {
                Command::Export(text)
            } else {
                Command::Unexport(text)
            };
            if !uplink.send(command) {
                tracing::warn!(%name, on, "nats: the export change was dropped: the link is saturated");
            }
        }
    }

    /// A call routed out will not be answered to anyone (its caller left,
    /// or it timed out): the daemon serving it is told.
    pub(super) fn cancel_out(&mut self, id: u32, reason: &'static str) {
        if let Some(uplink) = &self.uplink {
            uplink.send(Command::Cancel { id, reason });
        }
    }

    /// Records call `id` as pending on `provider`.
    fn track(
        &mut self,
        id: u32,
        caller: crate::workers::ConnRef,
        reply: ReplyTo,
        provider: crate::workers::ConnRef,
        method: &str,
    ) {
        let timeout = self.config.call_timeout;
        self.calls.pending.insert(
            id,
            Pending {
                caller,
                reply,
                provider,
                method: method.into(),
                deadline: (!timeout.is_zero()).then(|| self.now + timeout),
                // Timed by the daemon that serves it, where the name is provided.
                timing: None,
            },
        );
        if !timeout.is_zero() && self.calls.next_sweep.is_none() {
            self.calls.next_sweep = Some(self.now + super::calls::sweep_interval(timeout));
        }
    }
}

/// -32041 for a call of `method`.
fn unreachable(method: &str, why: &str) -> RpcError {
    RpcError::new(
        UNREACHABLE,
        format!("Cluster unreachable: {method} has no provider on this daemon, and {why}"),
    )
}
