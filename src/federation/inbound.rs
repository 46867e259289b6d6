//! Calls and events from the cluster, on the NATS thread: calls on names
//! served here are acknowledged (the acknowledgements flushed before the
//! loop sees the calls), recorded under a token for their answer, and
//! handed to the loop; cancels and events are handed on too.

use async_nats::Message;
use tokio::sync::mpsc;

use super::nats::{ACK_FLUSH, MAX_SERVED, Served, State, get, headers};
use super::{Inbound, header};
use crate::error::{ErrorCode, RpcError};
use crate::stats::Stats;

impl State {
    /// Calls from other daemons on names served here: the first and those
    /// already waiting behind it (up to 256). Each is acknowledged, and the
    /// acknowledgements are flushed to NATS before the loop sees any of the
    /// calls: a caller whose call reached a provider here knows which
    /// daemon serves it, so it can tell when that daemon dies.
    pub(super) async fn serve_batch(
        &mut self,
        first: Message,
        calls: &mut mpsc::UnboundedReceiver<Message>,
    ) {
        let mut ready = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            if let Some(item) = self.accept(message).await {
                ready.push(item);
            }
            next = if ready.len() < 256 {
                calls.try_recv().ok()
            } else {
                None
            };
        }
        if ready
            .iter()
            .any(|(call, _)| matches!(call, Inbound::Call { token: Some(_), .. }))
        {
            let _ = tokio::time::timeout(ACK_FLUSH, self.client.flush()).await;
        }
        for (call, reply) in ready {
            let token = match &call {
                Inbound::Call { token, .. } => *token,
                _ => None,
            };
            if self.out.push(call) {
                continue;
            }
            if let (Some(token), Some(reply)) = (token, reply) {
                if let Some(served) = self.served.remove(&token) {
                    self.served_by_call.remove(&served.call);
                }
                self.refuse(reply, "the daemon's queue from NATS is full")
                    .await;
            }
        }
    }

    /// One call from another daemon: acknowledged and recorded; the call
    /// for the loop, and where to answer it.
    async fn accept(&mut self, message: Message) -> Option<(Inbound, Option<String>)> {
        let method = get(&message, header::METHOD)
            .unwrap_or_default()
            .to_string();
        let identity = get(&message, header::IDENTITY)
            .unwrap_or("unknown")
            .to_string();
        let raw = get(&message, header::RAW).is_some();
        let payload = message.payload.to_vec();
        Stats::bump(&self.out.stats.federation.calls_in);
        let reply = match (&message.reply, get(&message, header::NOTIFY)) {
            (Some(reply), None) => reply.to_string(),
            _ => {
                let call = Inbound::Call {
                    token: None,
                    method,
                    payload,
                    raw,
                    identity,
                };
                return Some((call, None));
            }
        };
        if self.served.len() >= MAX_SERVED {
            self.refuse(reply, "too many calls from the cluster are pending here")
                .await;
            return None;
        }
        let origin = get(&message, header::ORIGIN)
            .unwrap_or_default()
            .to_string();
        let call_id = reply
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .unwrap_or(0);
        self.next_token = self.next_token.wrapping_add(1).max(1);
        while self.served.contains_key(&self.next_token) {
            self.next_token = self.next_token.wrapping_add(1).max(1);
        }
        let token = self.next_token;
        let epoch = self.epoch.to_string();
        let ack = headers(&[(header::ACK, &self.me), (header::EPOCH, &epoch)]);
        let _ = self
            .client
            .publish_with_headers(reply.clone(), ack, Vec::new().into())
            .await;
        self.served_by_call.insert((origin.clone(), call_id), token);
        self.served.insert(
            token,
            Served {
                reply: reply.clone(),
                call: (origin, call_id),
            },
        );
        let call = Inbound::Call {
            token: Some(token),
            method,
            payload,
            raw,
            identity,
        };
        Some((call, Some(reply)))
    }

    /// Answers a call from the cluster with -32000 at once.
    async fn refuse(&mut self, reply: String, why: &str) {
        let mut frame = Vec::new();
        let error = RpcError::with(ErrorCode::ServerBusy, why);
        crate::proto::mcp1::write_error(&mut frame, 0, &error);
        let _ = self.client.publish(reply, frame.into()).await;
    }

    /// The caller of a call served here left, or its call timed out.
    pub(super) fn cancel(&mut self, message: &Message) {
        let Some((origin, id)) = get(message, header::CALL).and_then(|c| c.rsplit_once('.')) else {
            return;
        };
        let Ok(id) = id.parse::<u32>() else {
            return;
        };
        if let Some(token) = self.served_by_call.remove(&(origin.to_string(), id)) {
            self.served.remove(&token);
            self.out.push(Inbound::Cancel { token });
        }
    }

    pub(super) fn event(&mut self, message: Message) {
        if get(&message, header::ORIGIN) == Some(self.me.as_str()) {
            Stats::bump(&self.out.stats.federation.own_events_dropped);
            return;
        }
        let Some(topic) = get(&message, header::TOPIC).map(str::to_string) else {
            return;
        };
        let identity = get(&message, header::IDENTITY)
            .unwrap_or("unknown")
            .to_string();
        let data: Box<serde_json::value::RawValue> = match serde_json::from_slice(&message.payload)
        {
            Ok(data) => data,
            Err(e) => {
                tracing::debug!(topic, error = %e, "nats: an event whose data is not JSON was dropped");
                Stats::bump(&self.out.stats.federation.events_dropped);
                return;
            }
        };
        Stats::bump(&self.out.stats.federation.events_in);
        if !self.out.push(Inbound::Event {
            topic,
            data,
            identity,
        }) {
            Stats::bump(&self.out.stats.federation.events_dropped);
        }
    }
}
