//! What an operator sees of the traffic: per-method call counts and
//! latency histograms (`rpc.stats`'s `methods`), and the slow log
//! (`rpc.slowlog`).
//!
//! Every call is timed on the loop, from the start of the turn that read
//! its frame to the moment its answer is queued on the caller's
//! connection: inline ones at the end of their parse pass, all with one
//! clock read ([`TimedCall`]), pooled and loop-mode ones through their
//! [`Timing`] carried by the job and its completion, routed calls through
//! the bus's pending call. Recording is a few relaxed stores into counters
//! made in advance, so a request allocates nothing. A routed name's
//! counters live while its registration does (a connection holds at most
//! `bus-max-names`), so their number stays bounded.

pub mod histogram;
pub mod slowlog;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

pub use histogram::{MethodSnapshot, MethodStats};
pub use slowlog::SlowLog;

/// When a call started and whose counters it goes to: carried by pooled
/// jobs, their completions and routed calls (an `Arc` clone, no allocation).
#[derive(Debug, Clone)]
pub struct Timing {
    /// The counters of the method (or bus name) called.
    pub stats: Arc<MethodStats>,
    /// When its frame was decoded.
    pub started: Instant,
}

/// Inline calls of one method answered one after the other in the current
/// parse pass, waiting for the pass's one clock read (see
/// [`Observe::slot`]): the clock costs as much as a pipelined inline call
/// itself, so it is read once per pass, and a run of calls of the same
/// method is recorded at once.
#[derive(Debug, Clone, Copy)]
pub struct TimedCall {
    /// The method's counters' slot.
    pub slot: u32,
    /// The caller's protocol.
    pub protocol: crate::proto::Protocol,
    /// Calls in the run.
    pub calls: u32,
    /// Of which answered with an error.
    pub errors: u32,
}

/// The daemon-wide counters that are not a router method's own: the
/// `bus.*` methods, the names clients provide, and the slow log.
#[derive(Debug)]
pub struct Observe {
    bus: Box<[Arc<MethodStats>]>,
    routed: Mutex<BTreeMap<String, Arc<MethodStats>>>,
    /// Schemas providers attached to their names (`bus.register`), and
    /// descriptions, for `rpc.discover`.
    schemas: Mutex<BTreeMap<String, ProvidedSchema>>,
    /// Bytes of JSON the provided schemas hold, all names together.
    schema_bytes: std::sync::atomic::AtomicUsize,
    /// The slow log.
    pub slowlog: SlowLog,
    /// The counters of the methods timed per parse pass (the router's
    /// inline ones and the `bus.*` ones), by slot.
    slots: Vec<Arc<MethodStats>>,
}

/// A provided name's schemas and description.
pub type ProvidedSchema = (crate::discover::MethodSchema, Option<String>);

/// The most bytes of JSON the schemas providers attach may hold, all names
/// of all connections together: past it `bus.register` with schemas gets
/// -32025 (a name's own schema is at most
/// [`crate::discover::MAX_SCHEMA_BYTES`]).
pub const MAX_PROVIDED_SCHEMA_BYTES: usize = 8 << 20;

/// The bytes a provided schema counts for.
pub fn schema_size((schema, description): &ProvidedSchema) -> usize {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map_or(0, |v| v.to_string().len());
    json(&schema.params) + json(&schema.result) + description.as_ref().map_or(0, String::len) + 64
}

impl Default for Observe {
    fn default() -> Self {
        Self {
            bus: crate::bus::METHODS
                .iter()
                .map(|(name, _)| Arc::new(MethodStats::new(name)))
                .collect(),
            routed: Mutex::new(BTreeMap::new()),
            schemas: Mutex::new(BTreeMap::new()),
            schema_bytes: std::sync::atomic::AtomicUsize::new(0),
            slowlog: SlowLog::default(),
            slots: Vec::new(),
        }
    }
}

impl Observe {
    /// The counters for a server with `router`: its methods get their slots.
    pub(crate) fn for_router(router: &mut crate::router::Router) -> Self {
        let mut observe = Self::default();
        router.assign_slots(&mut observe.slots);
        let bus: Vec<Arc<MethodStats>> = observe.bus.to_vec();
        observe.slots.extend(bus);
        observe
    }

    /// The counters in `slot` (see [`TimedCall`]).
    pub fn slot(&self, slot: u32) -> Option<&Arc<MethodStats>> {
        self.slots.get(slot as usize)
    }

    /// The slot of a `bus.*` method's counters.
    pub fn bus_slot(&self, name: &str) -> Option<u32> {
        let index = self.bus.iter().position(|s| s.name() == name)?;
        let first = self.slots.len().checked_sub(self.bus.len())?;
        u32::try_from(first + index).ok()
    }

    /// The counters of a `bus.*` method.
    pub fn bus_method(&self, name: &str) -> Option<&Arc<MethodStats>> {
        self.bus.iter().find(|s| s.name() == name)
    }

    fn routed(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<MethodStats>>> {
        match self.routed.lock() {
            Ok(routed) => routed,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Fresh counters for a name (or `prefix.*` pattern) a client now
    /// provides, listed under it in `rpc.stats`.
    pub fn provided(&self, name: String) -> Arc<MethodStats> {
        let stats = Arc::new(MethodStats::new(&name));
        self.routed().insert(name, Arc::clone(&stats));
        stats
    }

    /// A provided name went away: its counters and schema go with it.
    pub fn released(&self, name: &str) {
        self.routed().remove(name);
        if let Some(old) = self.schemas().remove(name) {
            self.schema_bytes.fetch_sub(schema_size(&old), Relaxed);
        }
    }

    /// Bytes of provided schemas held now, against [`MAX_PROVIDED_SCHEMA_BYTES`].
    pub fn schema_bytes(&self) -> usize {
        self.schema_bytes.load(Relaxed)
    }

    fn schemas(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ProvidedSchema>> {
        match self.schemas.lock() {
            Ok(schemas) => schemas,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Attaches a provider's schema to a name it provides.
    pub fn describe_provided(&self, name: String, schema: ProvidedSchema) {
        self.schema_bytes.fetch_add(schema_size(&schema), Relaxed);
        if let Some(old) = self.schemas().insert(name, schema) {
            self.schema_bytes.fetch_sub(schema_size(&old), Relaxed);
        }
    }

    /// The schemas providers attached, by name.
    pub fn provided_schemas(&self) -> BTreeMap<String, ProvidedSchema> {
        self.schemas().clone()
    }

    /// Every method's counters, by name: the router's, the bus's, and the
    /// names provided now.
    pub fn snapshot(&self, router: &crate::router::Router) -> BTreeMap<String, MethodSnapshot> {
        let mut all: BTreeMap<String, MethodSnapshot> = router
            .methods()
            .into_iter()
            .map(|m| (m.name().to_string(), m.stats().snapshot()))
            .collect();
        for stats in self.bus.iter() {
            all.insert(stats.name().to_string(), stats.snapshot());
        }
        for (name, stats) in self.routed().iter() {
            all.entry(name.clone()).or_insert_with(|| stats.snapshot());
        }
        all
    }
}

/// `rpc.stats` as sent: the counters of [`crate::stats::Stats`] and, under
/// `methods`, every method's calls, errors and latency histogram.
#[derive(Debug, Serialize)]
pub struct FullStats {
    /// The daemon's counters.
    #[serde(flatten)]
    pub stats: crate::stats::StatsSnapshot,
    /// Per method: calls, errors, latency.
    pub methods: BTreeMap<String, MethodSnapshot>,
}

/// The whole `rpc.stats` document of a running server (for `rpc.stats`
/// and anything else that exports it, e.g. over HTTP).
pub fn full_stats(context: &crate::router::Context) -> FullStats {
    FullStats {
        stats: context.stats().snapshot(),
        methods: context.observe().snapshot(context.router()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::MethodSchema;

    #[test]
    fn provided_names_and_schemas_are_counted_and_freed() {
        let observe = Observe::default();
        let stats = observe.provided("a.*".into());
        stats.record(std::time::Duration::from_micros(3), false);
        let schema = MethodSchema {
            params: Some(serde_json::json!({"type": "object"})),
            result: None,
        };
        observe.describe_provided("a.*".into(), (schema.clone(), Some("d".into())));
        let held = observe.schema_bytes();
        assert!(held > 0);
        observe.describe_provided("a.*".into(), (schema, None));
        assert_eq!(
            observe.schema_bytes(),
            held - 1,
            "a replaced schema is not counted twice"
        );
        let router = crate::router::Router::new();
        assert_eq!(observe.snapshot(&router)["a.*"].calls, 1);
        observe.released("a.*");
        assert_eq!(observe.schema_bytes(), 0);
        assert!(observe.provided_schemas().is_empty());
        assert!(!observe.snapshot(&router).contains_key("a.*"));
        assert!(observe.snapshot(&router).contains_key("bus.register"));
    }
}
