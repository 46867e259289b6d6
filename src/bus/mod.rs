//! The service bus: connections provide methods to each other through the
//! daemon, and publish events to subscribers (proto/bus.md).
//!
//! The bus (`Bus`) lives on the event loop and is touched by nothing else: the
//! dispatcher routes calls and runs the `bus.*` methods through it, and the
//! loop delivers what it produces (a `Delivery`: forwarded requests, answers,
//! cancels) to the connections it is for, since a connection's dispatcher
//! can only write to its own output. Events wait in a bounded queue per
//! subscriber and move into its output while that output is small; an
//! event is encoded once per protocol and shared by every subscriber.
//!
//! Per-connection limits: at most `bus-max-names` names and
//! `bus-max-subscriptions` subscriptions (-32025 past them), each kept in a
//! hash set, so registering or subscribing costs O(1) per name; the
//! directory `rpc.methods` reads is updated name by name.

internal!(methods, monitor, pattern);
mod calls;
mod events;
mod groups;
pub mod policy;
mod remote;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::access::Peer;
use crate::proto::Protocol;
use crate::stats::Stats;
use crate::workers::{Completion, ConnRef};
use crate::write_queue::Outgoing;
use calls::Calls;
use events::EventQueue;
use groups::Providers;
use pattern::{Pattern, PatternMap};
use policy::Policy;
use std::ops::Range;

internal_item! {
    pub use calls::Outcome;
}
pub use methods::{METHODS, PREFIX};

/// A member holding this many names and topics together gives its memory
/// back to the system when it leaves (see [`give_back_freed_memory`]).
const BIG_MEMBER: usize = 1024;

/// Returns freed heap memory to the system. glibc keeps freed small chunks
/// resident; after a peer with thousands of names leaves, that is tens of
/// MB the daemon no longer needs.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only releases free heap
    // pages; glibc makes it safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

internal_item! {
    /// A subscriber's pending output under which events move into it at once.
    pub const EVENT_ROOM: usize = 64 << 10;
}

/// What happens to a subscriber whose event queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SlowSubscriber {
    /// Drop its oldest queued events; the next event it gets says how many.
    #[default]
    DropOldest,
    /// Send it an error and close its connection.
    Disconnect,
}

impl SlowSubscriber {
    /// The name used in flags and `--print-config`.
    pub fn name(self) -> &'static str {
        match self {
            SlowSubscriber::DropOldest => "drop-oldest",
            SlowSubscriber::Disconnect => "disconnect",
        }
    }
}

/// The bus settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// How long a routed call may wait for its provider (zero: forever).
    pub call_timeout: Duration,
    /// Most events queued per subscriber.
    pub queue_events: usize,
    /// Most event bytes queued per subscriber.
    pub queue_bytes: usize,
    /// What a full queue does.
    pub slow_subscriber: SlowSubscriber,
    /// Who may register which names.
    pub policy: Policy,
    /// Most names and patterns one connection may provide.
    pub max_names: usize,
    /// Most topics and patterns one connection may subscribe to.
    pub max_subscriptions: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            queue_events: 1024,
            queue_bytes: 1 << 20,
            slow_subscriber: SlowSubscriber::DropOldest,
            policy: Policy::default(),
            max_names: 1024,
            max_subscriptions: 1024,
        }
    }
}

/// The registered names (name or pattern to who provides it), shared with
/// `rpc.methods` (which may run anywhere). Sorted by name, and updated name
/// by name as they come and go, never rebuilt.
pub type Directory = Arc<RwLock<BTreeMap<String, String>>>;

internal_item! {
/// Who is making a bus call.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The connection.
    pub id: ConnRef,
    /// Who is at its other end.
    pub peer: &'a Peer,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// Its identity and what the policy lets it do.
    pub rights: &'a crate::policy::Rights,
}
}

internal_item! {
/// Something the bus produced for a connection other than the one whose
/// frame the dispatcher was handling. Frames are bytes of the bus's arena
/// (see [`Bus::take_outbox`]): encoding them allocates nothing.
#[derive(Debug)]
pub enum Delivery {
    /// A frame to append to its output: a forwarded request or a cancel.
    Frame {
        /// The connection.
        to: ConnRef,
        /// The encoded frame, in the arena.
        frame: Range<usize>,
    },
    /// The answer to a routed call, for its caller, taken like a pool
    /// completion (an empty frame only ends the call).
    Answer {
        /// The caller.
        to: ConnRef,
        /// The caller's protocol.
        protocol: Protocol,
        /// The JSON-RPC batch it belongs to.
        batch: Option<usize>,
        /// True for an error answer.
        is_error: bool,
        /// The encoded answer, in the arena.
        frame: Range<usize>,
        /// When the call started and whose counters it goes to.
        timing: Option<crate::observe::Timing>,
    },
    /// A subscriber too slow to keep: the error frame, then close it.
    Evict {
        /// The connection.
        to: ConnRef,
        /// The encoded error, in the arena.
        frame: Range<usize>,
    },
}
}

/// What the bus knows of one connection that uses it.
#[derive(Debug)]
struct Member {
    peer: Peer,
    protocol: Protocol,
    /// Names and patterns it provides.
    names: HashSet<Pattern>,
    /// Topics and patterns it subscribes to.
    topics: HashSet<Pattern>,
    /// Calls forwarded to it and not answered.
    providing: usize,
    /// Calls it made that wait on a provider.
    calling: usize,
    events: EventQueue,
    /// Evicted as a slow subscriber: it gets nothing more.
    evicted: bool,
    /// What the policy lets it provide and receive.
    grants: Arc<crate::policy::Grants>,
    /// A pattern subscription reaches topics it may not receive: each
    /// event's topic is checked (and the verdict remembered).
    filter_events: bool,
    /// Remembered verdicts: names routed to it, topics delivered to it.
    verdicts: crate::policy::Verdicts,
    /// It monitors the traffic (`rpc.monitor`): kept while it is open,
    /// never evicted for being slow.
    monitor: bool,
}

impl Member {
    fn new(caller: &Caller<'_>) -> Self {
        Self {
            peer: *caller.peer,
            protocol: caller.protocol,
            names: HashSet::default(),
            topics: HashSet::default(),
            providing: 0,
            calling: 0,
            events: EventQueue::default(),
            evicted: false,
            grants: Arc::clone(caller.rights.grants()),
            filter_events: false,
            verdicts: crate::policy::Verdicts::default(),
            monitor: false,
        }
    }

    /// Whether the policy lets it receive an event on `topic`.
    fn may_receive(&mut self, topic: &str) -> bool {
        use crate::policy::{Action, Target};
        let grants = &self.grants;
        !self.filter_events
            || self.verdicts.get(topic, || {
                grants.permits(Action::Subscribe, Target::Name(topic))
            })
    }

    fn is_unused(&self) -> bool {
        self.names.is_empty()
            && self.topics.is_empty()
            && self.providing == 0
            && self.calling == 0
            && self.events.is_empty()
            && !self.monitor
    }
}

internal_item! {
/// The bus: names, pending calls, subscriptions.
pub struct Bus {
    config: BusConfig,
    stats: Arc<Stats>,
    members: HashMap<ConnRef, Member>,
    names: PatternMap<Providers>,
    topics: PatternMap<HashSet<ConnRef>>,
    /// Connections whose pending output is at max-output: no call is
    /// forwarded to them until it drains to half (they get -32000).
    congested: HashSet<ConnRef>,
    calls: Calls,
    outbox: Vec<Delivery>,
    /// The bytes of every frame in the outbox.
    arena: Vec<u8>,
    /// Subscribers with queued events to move into their output.
    ready: Vec<ConnRef>,
    /// Subscribers whose queue holds events (checked when output drains).
    backlogged: usize,
    directory: Directory,
    /// The time of the loop's turn (deadlines count from it).
    now: Instant,
    /// Each provided name's counters, found like its owner (see
    /// `crate::observe`); shared with `rpc.stats` through `observe`.
    name_stats: PatternMap<Arc<crate::observe::MethodStats>>,
    observe: Arc<crate::observe::Observe>,
    /// Connections monitoring the traffic (see monitor.rs).
    monitors: Vec<monitor::Monitor>,
    /// The link to the cluster (`--nats`); None: the bus is local only.
    uplink: Option<crate::federation::Uplink>,
}
}

impl Bus {
    /// An empty bus with these settings, publishing its names to `directory`.
    pub fn new(config: BusConfig, stats: Arc<Stats>, directory: Directory) -> Self {
        Self {
            config,
            stats,
            members: HashMap::default(),
            names: PatternMap::default(),
            topics: PatternMap::default(),
            congested: HashSet::default(),
            calls: Calls::default(),
            outbox: Vec::new(),
            arena: Vec::new(),
            ready: Vec::new(),
            backlogged: 0,
            directory,
            now: Instant::now(),
            name_stats: PatternMap::default(),
            observe: Arc::default(),
            monitors: Vec::new(),
            uplink: None,
        }
    }

    /// The same bus, counting provided names' calls into `observe`.
    pub fn with_observe(mut self, observe: Arc<crate::observe::Observe>) -> Self {
        self.observe = observe;
        self
    }

    /// Sets the time of the loop's current turn.
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
    }

    /// The connection that provides `method`, if any, and may: a pattern's
    /// owner whom the policy does not let provide this very name gets none
    /// of its calls (the caller hears there is no such method).
    pub fn provider_of(&mut self, method: &str) -> Option<ConnRef> {
        use crate::policy::{Action, Target};
        let provider = match self.names.lookup(method)? {
            Providers::Exclusive(id) => *id,
            Providers::Group(_) => return self.pick_member(method),
        };
        let member = self.members.get_mut(&provider)?;
        if member.grants.is_everything() {
            return Some(provider);
        }
        let grants = &member.grants;
        let allowed = member.verdicts.get(method, || {
            grants.permits(Action::Provide, Target::Name(method))
        });
        if !allowed {
            Stats::bump(&self.stats.forbidden);
            tracing::debug!(
                method,
                provider = provider.token,
                "bus: provider may not provide this name; not routed"
            );
        }
        allowed.then_some(provider)
    }

    /// A connection took another identity (an anonymous TCP peer that sent
    /// `rpc.auth`): its routing and delivery checks follow the new grants.
    pub fn regrant(&mut self, id: ConnRef, grants: &Arc<crate::policy::Grants>) {
        if let Some(member) = self.members.get_mut(&id) {
            member.grants = Arc::clone(grants);
            member.verdicts = crate::policy::Verdicts::default();
            // Its pattern subscriptions were judged under the old grants.
            member.filter_events = true;
        }
    }

    /// After a subscription: events on its patterns are checked per topic
    /// when the policy denies some topic under one of them.
    pub(crate) fn filter_if_needed(&mut self, caller: &Caller<'_>, topics: &[Pattern]) {
        use crate::policy::Action;
        let grants = caller.rights.grants();
        let reaches_denied = topics.iter().any(|t| match t {
            Pattern::Prefix(prefix) => grants.denies_under(Action::Subscribe, prefix),
            Pattern::Exact(_) => false,
        });
        if reaches_denied {
            if let Some(member) = self.members.get_mut(&caller.id) {
                member.filter_events = true;
            }
        }
    }

    /// True when the connection provides names or subscribes to topics
    /// (such a connection is never closed for being idle).
    pub fn is_member(&self, id: ConnRef) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| !m.names.is_empty() || !m.topics.is_empty())
    }

    /// True when something waits for the loop: deliveries or events.
    pub fn has_work(&self) -> bool {
        !self.outbox.is_empty() || !self.ready.is_empty()
    }

    /// True when some subscriber has events waiting for room in its output.
    pub fn has_backlog(&self) -> bool {
        self.backlogged > 0
    }

    /// Takes what the loop must deliver, and the arena its frames are in
    /// (give both back with [`Bus::return_outbox`]).
    pub fn take_outbox(&mut self) -> (Vec<Delivery>, Vec<u8>) {
        (
            std::mem::take(&mut self.outbox),
            std::mem::take(&mut self.arena),
        )
    }

    /// Gives back the emptied list and arena from [`Bus::take_outbox`].
    pub fn return_outbox(&mut self, mut list: Vec<Delivery>, mut arena: Vec<u8>) {
        if self.outbox.is_empty() {
            list.clear();
            self.outbox = list;
        }
        if self.arena.is_empty() {
            arena.clear();
            self.arena = arena;
        }
    }

    /// Queues the answer `done` encoded into the arena (from `start`).
    fn push_answer(&mut self, done: Completion, start: usize) {
        self.arena = done.frame;
        self.outbox.push(Delivery::Answer {
            to: done.conn,
            protocol: done.protocol,
            batch: done.batch,
            is_error: done.is_error,
            frame: start..self.arena.len(),
            timing: done.timing,
        });
    }

    /// Encodes a frame into the arena with `write` and queues it for `to`.
    fn push_frame(&mut self, to: ConnRef, evict: bool, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.arena.len();
        write(&mut self.arena);
        let frame = start..self.arena.len();
        self.outbox.push(if evict {
            Delivery::Evict { to, frame }
        } else {
            Delivery::Frame { to, frame }
        });
    }

    /// Subscribers with events to move into their output (give the list
    /// back with [`Bus::return_ready`]).
    pub fn take_ready(&mut self) -> Vec<ConnRef> {
        std::mem::take(&mut self.ready)
    }

    /// Gives back the list from [`Bus::take_ready`], keeping its allocation.
    pub fn return_ready(&mut self, mut list: Vec<ConnRef>) {
        if self.ready.is_empty() {
            list.clear();
            self.ready = list;
        }
    }

    /// A subscriber's output drained: its queued events may move.
    pub fn wake(&mut self, id: ConnRef) {
        if self.members.get(&id).is_some_and(|m| !m.events.is_empty()) {
            self.ready.push(id);
        }
    }

    /// The subscriber's next queued event, encoded in its protocol: shared
    /// with the other subscribers, or its own when it carries a count of
    /// dropped events. None when its queue is empty.
    pub fn pop_event(&mut self, id: ConnRef) -> Option<Outgoing> {
        let member = self.members.get_mut(&id)?;
        let Some(frame) = member.events.pop(member.protocol) else {
            self.prune(id);
            return None;
        };
        Stats::bump(&self.stats.bus.events_delivered);
        if member.events.is_empty() {
            self.backlogged -= 1;
            self.prune(id);
        }
        Some(frame)
    }

    /// A connection's pending output reached max-output (`full`), or
    /// drained to half of it: calls are not forwarded to it meanwhile.
    pub fn set_congested(&mut self, id: ConnRef, full: bool) {
        if full {
            self.congested.insert(id);
        } else {
            self.congested.remove(&id);
        }
    }

    /// When the loop should wake to expire calls.
    pub fn deadline_hint(&self) -> Option<Instant> {
        self.calls.next_sweep()
    }

    /// Everything of a connection that closed: its names are released, calls
    /// pending on it fail, calls it made are cancelled at their providers.
    pub fn disconnected(&mut self, id: ConnRef) {
        self.congested.remove(&id);
        if !self.monitors.is_empty() {
            self.forget_monitor(id);
        }
        let Some(member) = self.members.remove(&id) else {
            return;
        };
        if !member.events.is_empty() {
            self.backlogged -= 1;
        }
        if !member.names.is_empty() {
            tracing::info!(peer = %member.peer, names = member.names.len(), "bus: provider left; its names are released");
            self.release_all(id, member.names.iter());
        }
        for topic in &member.topics {
            self.unsubscribe_one(id, topic);
        }
        if member.providing > 0 {
            self.fail_calls_on(id);
        }
        if member.calling > 0 {
            self.cancel_calls_of(id);
        }
        self.shrink();
        if member.names.len() + member.topics.len() >= BIG_MEMBER {
            drop(member);
            give_back_freed_memory();
        }
    }

    /// Gives memory back once tables are mostly empty (after a peer with
    /// many names or subscriptions left).
    fn shrink(&mut self) {
        self.names.shrink();
        self.topics.shrink();
        if self.members.capacity() > 4 * self.members.len() + 64 {
            self.members.shrink_to_fit();
        }
        self.calls.shrink();
    }

    /// Removes a member that no longer provides, subscribes or waits.
    fn prune(&mut self, id: ConnRef) {
        if self.members.get(&id).is_some_and(Member::is_unused) {
            self.members.remove(&id);
        }
    }

    fn member(&mut self, caller: &Caller<'_>) -> &mut Member {
        self.members
            .entry(caller.id)
            .or_insert_with(|| Member::new(caller))
    }

    /// Adds names the caller now provides to the directory `rpc.methods` reads.
    fn list_names<'n>(&mut self, caller: &Caller<'_>, names: impl Iterator<Item = &'n Pattern>) {
        let mut directory = match self.directory.write() {
            Ok(directory) => directory,
            Err(poisoned) => poisoned.into_inner(),
        };
        for name in names {
            let stats = self.observe.provided(name.to_string());
            let slot = self.name_stats.entry(name, || Arc::clone(&stats));
            *slot = stats;
            directory.insert(name.to_string(), self.directory_text(name, caller));
        }
    }
}
