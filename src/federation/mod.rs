//! Federation: several daemons acting as one bus over NATS (`--nats`,
//! docs/federation.md, issue 20).
//!
//! The seam is narrow on purpose. The NATS client (async-nats) runs on a
//! thread of its own with a small current-thread tokio runtime
//! (`nats`); the event loop never touches it. The loop hands it
//! `Command`s through a bounded channel (`try_send`: never blocking) and
//! takes `Inbound` messages from a bounded crossbeam channel after the
//! thread wakes it with the loop's one `Waker` (coalesced like the
//! worker pool's completions). Without `--nats` none of it exists: no
//! thread, no channel, and the bus's hot path only ever tests one `Option`.
//!
//! What crosses the cluster:
//! - a call to a name no local connection provides goes out as a request
//!   on the name's subject; the daemon that serves it answers with the MCP1
//!   frame its bus produced for the caller (so results, raw bodies and
//!   errors cross unchanged), after a short acknowledgement that names it;
//! - names provided here are served in a queue group per name;
//! - events published here go out on the topic's subject with this
//!   daemon's id in a header, and events from other daemons are delivered
//!   to local subscribers (the origin header, and NATS's `no_echo`, keep a
//!   daemon from hearing its own);
//! - the caller's identity travels in a header, but a daemon judges
//!   everything from the cluster as one configured identity
//!   (`token:NAME`, `--nats-identity`).

// Built without the client, the messages and the link are never made.
#![cfg_attr(not(feature = "federation"), allow(dead_code))]

mod config;
#[cfg(feature = "federation")]
mod inbound;
#[cfg(feature = "federation")]
mod nats;
mod serve;
pub(crate) mod subject;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;
use serde_json::value::RawValue;

use crate::error::RpcError;
use crate::policy::Rights;
use crate::reactor::Waker;
use crate::router::Context;
use crate::stats::Stats;
use crate::workers::ConnRef;

pub use config::{FederationConfig, FederationSettings};
pub(crate) use serve::drain;

/// -32040: no daemon of the cluster provides the name (NATS reported no
/// responder on its subject).
pub const NO_HOST: i32 = -32040;
/// -32041: the call could not go to the cluster, or was lost there: this
/// daemon is not connected to NATS (or lost the connection with the call
/// pending), or its link to NATS is saturated.
pub const UNREACHABLE: i32 = -32041;

/// Most commands waiting for the NATS thread, and most messages from it
/// waiting for the loop: past them calls fail with -32041 and events are
/// dropped (counted), so memory stays bounded whatever the cluster does.
pub const QUEUE: usize = 4096;

/// The stand-in connection for the cluster in the bus: the "provider" of
/// calls routed out, and the "caller" of calls served for other daemons.
/// No slab key ever reaches it.
pub(crate) const CLUSTER: ConnRef = ConnRef {
    token: usize::MAX,
    generation: u32::MAX,
};

/// Headers carried on NATS messages.
pub(crate) mod header {
    /// The id of the daemon that sent it (events: to drop its own).
    pub const ORIGIN: &str = "Junction-Origin";
    /// The caller's or publisher's identity on its daemon (informative:
    /// the receiver judges the cluster's configured identity).
    pub const IDENTITY: &str = "Junction-Identity";
    /// The method of a call.
    pub const METHOD: &str = "Junction-Method";
    /// Present on a call whose params are raw MCP1 bytes.
    pub const RAW: &str = "Junction-Raw";
    /// On an acknowledgement: the id of the daemon serving the call.
    pub const ACK: &str = "Junction-Ack";
    /// On an acknowledgement: the serving daemon's connection epoch.
    pub const EPOCH: &str = "Junction-Epoch";
    /// On a cancel: the call (`ORIGIN.ID`) and the reason.
    pub const CALL: &str = "Junction-Call";
    /// On a cancel: why (`caller gone` or `timeout`).
    pub const REASON: &str = "Junction-Reason";
    /// On an event: its topic.
    pub const TOPIC: &str = "Junction-Topic";
    /// Present on a call sent as a notification (nothing comes back).
    pub const NOTIFY: &str = "Junction-Notify";
}

/// What the loop asks of the NATS thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// Serve a name or pattern (its text, `editor.*` for a pattern).
    Export(String),
    /// Stop serving it.
    Unexport(String),
    /// A call (id Some) or notification for the cluster.
    Call {
        id: Option<u32>,
        method: Box<str>,
        payload: Vec<u8>,
        raw: bool,
        identity: Box<str>,
    },
    /// A call routed out will not be answered to anyone.
    Cancel { id: u32, reason: &'static str },
    /// An event published here.
    Publish {
        topic: Box<str>,
        data: Box<RawValue>,
        identity: Box<str>,
    },
    /// The answer (an MCP1 frame) to a call served for another daemon.
    Reply { token: u32, frame: Vec<u8> },
}

/// What the NATS thread hands the loop.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// The answer to a call routed out: an MCP1 RESPONSE or ERROR frame.
    Answer { id: u32, frame: Vec<u8> },
    /// A call routed out ended without an answer.
    Fail { id: u32, error: RpcError },
    /// Every call routed out ended: the connection to NATS was lost.
    Lost,
    /// A call (token Some) or notification from another daemon.
    Call {
        token: Option<u32>,
        method: String,
        payload: Vec<u8>,
        raw: bool,
        identity: String,
    },
    /// The caller of a call served here left, or it timed out there.
    Cancel { token: u32 },
    /// An event from another daemon.
    Event {
        topic: String,
        data: Box<RawValue>,
        identity: String,
    },
}

/// The loop's end of the link to NATS, kept by the bus: sends never block.
pub(crate) struct Uplink {
    #[cfg(feature = "federation")]
    commands: tokio::sync::mpsc::Sender<Command>,
    connected: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Uplink {
    /// True while the client is connected to a NATS server.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Queues a command for the NATS thread; false when its queue is full
    /// (or the thread is gone).
    pub(crate) fn send(&self, command: Command) -> bool {
        #[cfg(feature = "federation")]
        {
            let sent = self.commands.try_send(command).is_ok();
            if !sent {
                Stats::bump(&self.stats.federation.queue_full);
            }
            sent
        }
        #[cfg(not(feature = "federation"))]
        {
            let _ = command;
            false
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The loop's end of what comes from NATS, and the thread itself.
pub(crate) struct Link {
    inbound: Receiver<Inbound>,
    /// Set by the NATS thread when it wakes the loop; cleared before a drain.
    pending: Arc<AtomicBool>,
    /// What the policy lets the cluster do (`token:IDENTITY`).
    rights: Rights,
    /// The policy generation `rights` were compiled under.
    generation: u64,
    identity: String,
    #[cfg(feature = "federation")]
    thread: Option<nats::Thread>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("identity", &self.identity)
            .finish()
    }
}

/// Why federation could not start.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// Built without the `federation` feature.
    #[error("this build has no federation (cargo feature \"federation\"); --nats cannot be used")]
    NotBuilt,
    /// The NATS thread could not start.
    #[error("cannot start the NATS thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A credentials or TLS file could not be read.
    #[error("nats: {0}")]
    Options(String),
}

/// Starts the NATS thread when `--nats` is set: the bus's uplink and the
/// loop's link. None (and nothing started) without `--nats`.
pub(crate) fn start(
    config: &FederationConfig,
    context: &Arc<Context>,
    waker: Arc<Waker>,
) -> Result<Option<(Uplink, Link)>, FederationError> {
    if config.urls.is_empty() {
        return Ok(None);
    }
    #[cfg(not(feature = "federation"))]
    {
        let _ = (context, waker);
        Err(FederationError::NotBuilt)
    }
    #[cfg(feature = "federation")]
    {
        let stats = context.stats_handle();
        stats.federation.enabled.store(1, Ordering::Relaxed);
        let connected = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicBool::new(false));
        let (thread, commands, inbound) = nats::Thread::spawn(
            config.clone(),
            Arc::clone(&connected),
            Arc::clone(&pending),
            Arc::clone(&stats),
            waker,
        )?;
        let (rights, generation) = cluster_rights(context, &config.identity);
        let uplink = Uplink {
            commands,
            connected,
            stats,
        };
        let link = Link {
            inbound,
            pending,
            rights,
            generation,
            identity: config.identity.clone(),
            thread: Some(thread),
        };
        Ok(Some((uplink, link)))
    }
}

/// The rights of the cluster's identity under the current policy, and the
/// policy's generation.
fn cluster_rights(context: &Context, identity: &str) -> (Rights, u64) {
    let generation = context.policy().generation();
    let peer = crate::access::Peer::Tcp(None);
    (context.guard().token(identity, &peer), generation)
}

impl Link {
    /// Stops the NATS thread (at shutdown): its client closes and the
    /// thread is joined, within a bound.
    pub fn stop(&mut self) {
        #[cfg(feature = "federation")]
        if let Some(thread) = self.thread.take() {
            thread.stop(Duration::from_secs(2));
        }
        #[cfg(not(feature = "federation"))]
        let _ = Duration::ZERO;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop();
    }
}
