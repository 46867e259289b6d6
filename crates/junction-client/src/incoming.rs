//! What the daemon can send a connection besides answers to its own calls:
//! forwarded requests and notifications (when it provides methods),
//! cancels, and events (when it subscribes), as `proto/bus.md` defines them.

use serde_json::Value;

use super::wire::Inbound;
use super::{Body, ClientError, Response};

/// The JSON-RPC notification by which the daemon cancels a forwarded call.
pub const CANCEL_METHOD: &str = "bus.cancel";
/// The notification that carries a published event.
pub const EVENT_METHOD: &str = "bus.event";

/// One message from the daemon, as [`Client::next_message`](super::Client::next_message)
/// returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A call of a method this connection provides, forwarded by the daemon.
    /// Answer it with [`Client::respond`](super::Client::respond) (or a
    /// [`Responder`](super::Responder)) and the same `id`.
    Request(ForwardedCall),
    /// A notification: a forwarded notification of a provided method (no
    /// answer is expected), or one this client does not otherwise know.
    Notification {
        /// The method.
        method: String,
        /// The params, if any.
        params: Option<Body>,
    },
    /// The daemon gave up on forwarded call `id` (its caller left, or it
    /// timed out): any answer to it is dropped, so the work can stop.
    Cancel {
        /// The id of the forwarded call.
        id: u64,
        /// Why: `"caller gone"` or `"timeout"` (empty if the daemon gave none).
        reason: String,
    },
    /// An event published on a topic this connection subscribes to.
    Event(Event),
    /// A response to one of this client's own calls that nobody was
    /// waiting for (sent with [`Client::send`](super::Client::send)), or an
    /// error about the connection itself (id null or 0).
    Response(Response),
}

/// A call forwarded to this connection because it provides the method.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardedCall {
    /// The id the daemon assigned (1 to 4294967295); answer with it.
    pub id: u64,
    /// The method called.
    pub method: String,
    /// The caller's params: JSON, raw bytes (an MCP1 caller's raw body), or
    /// none.
    pub params: Option<Body>,
}

/// A `bus.event` notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The topic it was published on.
    pub topic: String,
    /// The published data (`null` when the publisher gave none).
    pub data: Value,
    /// Events dropped for this subscriber since the last one it received
    /// (a slow subscriber under the drop-oldest policy); None when none were.
    pub dropped: Option<u64>,
}

impl Event {
    /// The event as one JSON object: `{"topic":..,"data":..}`, plus
    /// `"dropped"` when events were dropped.
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::json!({"topic": self.topic, "data": self.data});
        if let Some(dropped) = self.dropped {
            object["dropped"] = Value::from(dropped);
        }
        object
    }

    /// The same object as one line of compact JSON, members in the order
    /// of proto/bus.md (topic, data, dropped).
    pub fn to_line(&self) -> String {
        let topic = Value::from(self.topic.as_str());
        match self.dropped {
            Some(dropped) => {
                format!(
                    r#"{{"topic":{topic},"data":{},"dropped":{dropped}}}"#,
                    self.data
                )
            }
            None => format!(r#"{{"topic":{topic},"data":{}}}"#, self.data),
        }
    }
}

/// Gives a daemon-originated message its bus meaning. Batches and PONGs are
/// not daemon-originated and are left to the caller (None).
pub(crate) fn classify(inbound: Inbound) -> Result<Option<Incoming>, ClientError> {
    Ok(Some(match inbound {
        Inbound::Response(response) => Incoming::Response(response),
        Inbound::Request { id, method, params } => {
            let id = id.as_u64().ok_or_else(|| {
                ClientError::Protocol(format!("a forwarded request with a non-numeric id {id}"))
            })?;
            Incoming::Request(ForwardedCall { id, method, params })
        }
        Inbound::Cancel { id, reason } => Incoming::Cancel {
            id: u64::from(id),
            reason,
        },
        Inbound::Notification { method, params } => notification(method, params),
        Inbound::Batch(_) | Inbound::Pong { .. } => return Ok(None),
    }))
}

/// `bus.event` and `bus.cancel` become events and cancels when their params
/// have the spec's shape; anything else stays a plain notification.
fn notification(method: String, params: Option<Body>) -> Incoming {
    let json = match &params {
        Some(Body::Json(value)) => Some(value),
        _ => None,
    };
    match (method.as_str(), json) {
        (EVENT_METHOD, Some(value)) => {
            if let Some(event) = event(value) {
                return Incoming::Event(event);
            }
        }
        (CANCEL_METHOD, Some(value)) => {
            if let Some(id) = value.get("id").and_then(Value::as_u64) {
                let reason = value.get("reason").and_then(Value::as_str).unwrap_or("");
                return Incoming::Cancel {
                    id,
                    reason: reason.to_string(),
                };
            }
        }
        _ => {}
    }
    Incoming::Notification { method, params }
}

fn event(params: &Value) -> Option<Event> {
    Some(Event {
        topic: params.get("topic")?.as_str()?.to_string(),
        data: params.get("data").cloned().unwrap_or(Value::Null),
        dropped: params.get("dropped").and_then(Value::as_u64),
    })
}
