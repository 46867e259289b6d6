//! The loop's side of the link: what came from NATS is handed to the bus
//! (answers, calls and events from the cluster), on the loop, after the
//! NATS thread woke it.

use std::sync::atomic::Ordering;

use super::{Inbound, Link, cluster_rights};
use crate::bus::Bus;
use crate::router::Context;

/// Most messages taken from NATS per turn, so that a flood from the
/// cluster cannot starve local connections (the rest wait for the next turn).
const PER_TURN: usize = 1024;

/// Takes what the NATS thread sent since the last turn into the bus.
pub(crate) fn drain(link: &mut Link, bus: &mut Bus, context: &Context) {
    if !link.pending.swap(false, Ordering::AcqRel) && link.inbound.is_empty() {
        return;
    }
    let generation = context.policy().generation();
    if generation != link.generation {
        // A reload changed the policy: the cluster is judged afresh.
        (link.rights, link.generation) = cluster_rights(context, &link.identity);
    }
    let Link {
        inbound, rights, ..
    } = link;
    for message in inbound.try_iter().take(PER_TURN) {
        match message {
            Inbound::Answer { id, frame } => bus.remote_answer(id, &frame),
            Inbound::Fail { id, error } => bus.remote_fail(id, error),
            Inbound::Lost => bus.remote_lost(),
            Inbound::Call {
                token,
                method,
                payload,
                raw,
                identity,
            } => bus.serve_remote(rights, token, &method, &payload, raw, &identity),
            Inbound::Cancel { token } => bus.cancel_remote(token),
            Inbound::Event {
                topic,
                data,
                identity,
            } => bus.remote_event(rights, &topic, data, &identity),
        }
    }
    if !inbound.is_empty() {
        // More than a turn's worth: look again next turn.
        link.pending.store(true, Ordering::Release);
    }
}

impl Link {
    /// True when messages from NATS wait for the loop.
    pub(crate) fn has_work(&self) -> bool {
        !self.inbound.is_empty()
    }
}
