//! The method table: names to handlers, shared by both protocols.
//!
//! A handler gets a [`Call`] (method name, params, the server's [`Context`])
//! and writes its result into a [`Reply`], which encodes it straight into the
//! connection's output: the protocol envelope goes around it, so a handler
//! never builds an intermediate value unless it wants to.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::access::Access;
use crate::bus::{BusConfig, Directory};
use crate::error::RpcError;
use crate::stats::{ClientInfo, Stats};
pub use junction_proto::{Params, Reply};

mod index;

/// The signature every handler has.
pub type Handler = dyn Fn(&Call<'_>, &mut Reply<'_>) -> Result<(), RpcError> + Send + Sync;

/// Names under this prefix belong to the daemon.
pub const RESERVED_PREFIX: &str = "rpc.";

/// Where a method runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// On the event loop thread, without a hand-off: only for cheap,
    /// non-blocking handlers.
    Inline,
    /// On the worker pool: anything that may block or take time.
    Pooled,
    /// On the event loop once the current read is parsed, with a view of
    /// every connection ([`Call::clients`]): for introspection.
    Loop,
}

/// One call as a handler sees it.
pub struct Call<'a> {
    /// The method name the caller used.
    pub method: &'a str,
    /// The params, borrowed.
    pub params: Params<'a>,
    /// The server's shared state.
    pub context: &'a Context,
    /// Every open connection: Some only for [`Mode::Loop`] methods.
    pub clients: Option<&'a [ClientInfo]>,
}

/// A registered method.
pub struct Method {
    name: String,
    description: String,
    mode: Mode,
    handler: Box<Handler>,
    /// Its calls, errors and latency (`rpc.stats`).
    stats: Arc<crate::observe::MethodStats>,
    /// Its params and result schemas (`rpc.discover`).
    schema: crate::discover::MethodSchema,
    /// Its counters' slot for timing per parse pass (inline methods of a
    /// running server; see `crate::observe::TimedCall`).
    slot: Option<u32>,
}

impl Method {
    /// Its calls, errors and latency histogram.
    pub fn stats(&self) -> &Arc<crate::observe::MethodStats> {
        &self.stats
    }

    /// Where its counters are for timing per parse pass (inline methods
    /// of a running server).
    pub(crate) fn slot(&self) -> Option<u32> {
        self.slot
    }

    /// The JSON Schemas of its params and result, as `rpc.discover` shows them.
    pub fn schema(&self) -> &crate::discover::MethodSchema {
        &self.schema
    }

    /// The name calls use.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The one-line description `rpc.methods` shows.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Where the method runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Runs the handler; a panic becomes an internal error, never a crash.
    ///
    /// The handler's `Result` (an `RpcError` is eight words) is not carried
    /// out of `catch_unwind`: a success leaves it as one flag, an error is
    /// kept aside, so the common path moves no error-sized value.
    #[inline]
    pub fn invoke(&self, call: &Call<'_>, reply: &mut Reply<'_>) -> Result<(), RpcError> {
        let mut failure = None;
        let ran = catch_unwind(AssertUnwindSafe(|| match (self.handler)(call, reply) {
            Ok(()) => true,
            Err(error) => {
                failure = Some(error);
                false
            }
        }));
        match ran {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.failed(reply, failure)),
            Err(panic) => Err(self.panicked(reply, panic)),
        }
    }

    /// The error of a handler that returned one; what it wrote is discarded.
    #[cold]
    #[inline(never)]
    fn failed(&self, reply: &mut Reply<'_>, failure: Option<RpcError>) -> RpcError {
        reply.discard();
        failure.unwrap_or_else(|| {
            RpcError::internal(format_args!("the handler of {} failed", self.name))
        })
    }

    /// The internal error that stands for a handler's panic.
    #[cold]
    #[inline(never)]
    fn panicked(&self, reply: &mut Reply<'_>, panic: Box<dyn std::any::Any + Send>) -> RpcError {
        reply.discard();
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(method = %self.name, panic = %what, "handler panicked");
        RpcError::internal(format_args!("the handler of {} panicked", self.name))
    }
}

/// Why a method could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouterError {
    /// The name is already taken.
    #[error("method {0:?} is already registered")]
    Duplicate(String),
    /// The name is under a prefix the daemon reserves.
    #[error("method {0:?} is reserved: names under \"rpc.\" belong to the daemon")]
    Reserved(String),
    /// The name is empty or has whitespace or control characters.
    #[error("method name {0:?} is not valid: use non-empty printable names without spaces")]
    InvalidName(String),
    /// A schema was attached to a name no method is registered under.
    #[error("no method {0:?} is registered to attach a schema to")]
    Unknown(String),
}

/// The table of methods, keyed by name. FxHash, not SipHash: a peer cannot
/// flood it (only the server registers names, a peer's name is only looked
/// up). A running server looks names up in an index built once the table
/// is complete ([`Context::new`]; see `router/index.rs`), which neither
/// hashes the name's bytes nor compares them through the heap: the lookup
/// is on every request's path.
#[derive(Default)]
pub struct Router {
    methods: FxHashMap<String, Arc<Method>>,
    /// Built by [`Router::build_index`]; dropped by any change to the table.
    index: Option<index::Index>,
}

impl Router {
    /// An empty router (the server adds the built-in `rpc.*` methods).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a handler under `name`.
    pub fn method<F>(
        &mut self,
        name: &str,
        description: &str,
        mode: Mode,
        handler: F,
    ) -> Result<&mut Self, RouterError>
    where
        F: Fn(&Call<'_>, &mut Reply<'_>) -> Result<(), RpcError> + Send + Sync + 'static,
    {
        if name.starts_with(RESERVED_PREFIX) {
            return Err(RouterError::Reserved(name.into()));
        }
        self.insert(name, description, mode, Box::new(handler))?;
        Ok(self)
    }

    /// Registers a typed handler: params are deserialized into `P` (a
    /// mismatch answers Invalid params) and the `R` it returns is serialized.
    pub fn typed<P, R, F>(
        &mut self,
        name: &str,
        description: &str,
        mode: Mode,
        handler: F,
    ) -> Result<&mut Self, RouterError>
    where
        P: DeserializeOwned,
        R: Serialize,
        F: Fn(P) -> Result<R, RpcError> + Send + Sync + 'static,
    {
        self.method(name, description, mode, move |call, reply| {
            let params = call.params.parse::<P>()?;
            reply.json(&handler(params)?)
        })
    }

    /// Attaches JSON Schemas of the params value and of the result to the
    /// method registered under `name`, for `rpc.discover` (OpenRPC) and
    /// `junction describe`. An object schema with `properties` is shown as
    /// named params, an array schema with `prefixItems` as positional ones.
    /// The daemon does not validate calls against them.
    pub fn schema(
        &mut self,
        name: &str,
        params: Option<serde_json::Value>,
        result: Option<serde_json::Value>,
    ) -> Result<&mut Self, RouterError> {
        self.index = None;
        let method = self
            .methods
            .get_mut(name)
            .and_then(Arc::get_mut)
            .ok_or_else(|| RouterError::Unknown(name.into()))?;
        method.schema = crate::discover::MethodSchema { params, result };
        Ok(self)
    }

    /// Moves every method of `other` into this router: all or nothing.
    pub fn merge(&mut self, other: Router) -> Result<(), RouterError> {
        if let Some(name) = other.methods.keys().find(|n| self.methods.contains_key(*n)) {
            return Err(RouterError::Duplicate(name.clone()));
        }
        self.index = None;
        self.methods.extend(other.methods);
        Ok(())
    }

    pub(crate) fn insert(
        &mut self,
        name: &str,
        description: &str,
        mode: Mode,
        handler: Box<Handler>,
    ) -> Result<(), RouterError> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RouterError::InvalidName(name.into()));
        }
        if self.methods.contains_key(name) {
            return Err(RouterError::Duplicate(name.into()));
        }
        self.index = None;
        let method = Method {
            name: name.into(),
            description: description.into(),
            mode,
            handler,
            stats: Arc::new(crate::observe::MethodStats::new(name)),
            schema: crate::discover::MethodSchema::default(),
            slot: None,
        };
        self.methods.insert(name.into(), Arc::new(method));
        Ok(())
    }

    /// Gives each inline method a slot in `slots` (its counters); a method
    /// whose `Arc` is shared keeps none and is timed call by call.
    pub(crate) fn assign_slots(&mut self, slots: &mut Vec<Arc<crate::observe::MethodStats>>) {
        self.index = None;
        for method in self.methods.values_mut() {
            let Some(method) = Arc::get_mut(method) else {
                continue;
            };
            if method.mode != Mode::Inline {
                continue;
            }
            let Ok(slot) = u32::try_from(slots.len()) else {
                continue;
            };
            method.slot = Some(slot);
            slots.push(Arc::clone(&method.stats));
        }
    }

    /// The method registered under `name`.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&Arc<Method>> {
        match &self.index {
            Some(index) => index.get(name),
            None => self.methods.get(name),
        }
    }

    /// Builds the lookup index [`Router::get`] uses from now on: once the
    /// table is complete, after anything that needs `Arc::get_mut` on its
    /// methods (the index holds a second reference to each).
    pub(crate) fn build_index(&mut self) {
        self.index = Some(index::Index::new(self.methods.values()));
    }

    /// Every method, sorted by name.
    pub fn methods(&self) -> Vec<&Method> {
        let mut all: Vec<&Method> = self.methods.values().map(Arc::as_ref).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Number of registered methods.
    pub fn len(&self) -> usize {
        self.methods.len()
    }

    /// True when no method is registered.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }
}

/// What every handler can see of the server: its methods, its counters and
/// its access policy.
pub struct Context {
    router: Router,
    stats: Arc<Stats>,
    bus: BusConfig,
    directory: Directory,
    /// The access policy and its guard, swapped whole by a reload.
    policy: crate::reload::Swappable,
    /// The link to the service manager (sd_notify).
    notifier: crate::notify::Notifier,
    /// Per-method counters beyond the router's, and the slow log.
    observe: Arc<crate::observe::Observe>,
    /// TLS and PROXY settings of the TCP listener (None: plain TCP).
    remote: Option<Arc<crate::net::tls::Remote>>,
}

impl Context {
    /// Builds the context from a complete router (default access policy).
    pub fn new(mut router: Router, stats: Arc<Stats>) -> Self {
        let observe = Arc::new(crate::observe::Observe::for_router(&mut router));
        router.build_index();
        Self {
            router,
            stats,
            bus: BusConfig::default(),
            directory: Directory::default(),
            policy: crate::reload::Swappable::default(),
            notifier: crate::notify::Notifier::default(),
            observe,
            remote: None,
        }
    }

    /// The bus's and routed names' counters, and the slow log.
    pub fn observe(&self) -> &Arc<crate::observe::Observe> {
        &self.observe
    }

    /// The same context with the TCP listener's TLS and PROXY settings.
    pub fn with_remote(mut self, remote: Option<Arc<crate::net::tls::Remote>>) -> Self {
        self.remote = remote;
        self
    }

    /// The TCP listener's TLS and PROXY settings, if any.
    pub fn remote(&self) -> Option<&Arc<crate::net::tls::Remote>> {
        self.remote.as_ref()
    }

    /// The same context with these bus settings.
    pub fn with_bus(mut self, bus: BusConfig) -> Self {
        self.bus = bus;
        let access = (*self.access()).clone();
        self.policy.set(access, &self.bus.policy);
        self
    }

    /// The policy at run time: identities, grants, the auth throttle
    /// (the one in force now: a reload swaps it).
    pub fn guard(&self) -> Arc<crate::policy::Guard> {
        self.policy.guard()
    }

    /// The same context telling the service manager through `notifier`.
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// The link to the service manager.
    pub fn notifier(&self) -> &crate::notify::Notifier {
        &self.notifier
    }

    /// The reloadable policy: swapped by a reload, its generation watched by the loop.
    pub fn policy(&self) -> &crate::reload::Swappable {
        &self.policy
    }

    /// The bus settings.
    pub fn bus_config(&self) -> &BusConfig {
        &self.bus
    }

    /// The names routed through the bus, as `rpc.methods` lists them.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The server's counters, shared.
    pub fn stats_handle(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// The same context with this access policy.
    pub fn with_access(self, access: Access) -> Self {
        self.policy.set(access, &self.bus.policy);
        self
    }

    /// Who may connect, and the TCP auth tokens (the ones in force now).
    pub fn access(&self) -> Arc<Access> {
        self.policy.access()
    }

    /// The method table.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Calls `method` with JSON `params` and returns the JSON result: the
    /// same path a request takes, without a socket (for tests and embedding).
    pub fn call_json(&self, method: &str, params: Option<&str>) -> Result<String, RpcError> {
        let raw = match params {
            Some(text) => {
                Some(serde_json::from_str::<&RawValue>(text).map_err(RpcError::parse_error)?)
            }
            None => None,
        };
        let method_entry = self
            .router
            .get(method)
            .ok_or_else(|| RpcError::method_not_found(method))?;
        let call = Call {
            method,
            params: raw.map_or(Params::None, Params::Json),
            context: self,
            clients: None,
        };
        let mut out = Vec::new();
        let mut reply = Reply::new(&mut out);
        method_entry.invoke(&call, &mut reply)?;
        if reply.is_empty() {
            return Ok("null".into());
        }
        String::from_utf8(out).map_err(|_| RpcError::internal("result is raw bytes, not JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(router: Router) -> Context {
        Context::new(router, Arc::new(Stats::new(1)))
    }

    #[test]
    fn typed_methods_parse_params_and_serialize_results() {
        let mut router = Router::new();
        router
            .typed(
                "math.add",
                "adds two numbers",
                Mode::Inline,
                |(a, b): (i64, i64)| Ok(a + b),
            )
            .expect("register");
        let ctx = context(router);
        assert_eq!(ctx.call_json("math.add", Some("[2,3]")).as_deref(), Ok("5"));
        let err = ctx.call_json("math.add", Some(r#"{"a":1}"#)).unwrap_err();
        assert_eq!(err.code, -32602);
        assert_eq!(ctx.call_json("nope", None).unwrap_err().code, -32601);
    }

    #[test]
    fn names_are_unique_and_rpc_is_reserved() {
        let mut router = Router::new();
        let ok = |_: &Call<'_>, _: &mut Reply<'_>| Ok(());
        router.method("a.b", "", Mode::Inline, ok).expect("first");
        assert_eq!(
            router.method("a.b", "", Mode::Inline, ok).err(),
            Some(RouterError::Duplicate("a.b".into()))
        );
        assert!(matches!(
            router.method("rpc.x", "", Mode::Inline, ok),
            Err(RouterError::Reserved(_))
        ));
        assert!(matches!(
            router.method("a b", "", Mode::Inline, ok),
            Err(RouterError::InvalidName(_))
        ));
        let mut other = Router::new();
        other.method("c", "", Mode::Inline, ok).expect("c");
        other.method("a.b", "", Mode::Inline, ok).expect("a.b");
        assert!(router.merge(other).is_err());
        assert!(router.get("c").is_none(), "a failed merge adds nothing");
    }

    #[test]
    fn lookups_agree_before_and_after_the_index_and_changes_drop_it() {
        let mut router = Router::new();
        let ok = |_: &Call<'_>, _: &mut Reply<'_>| Ok(());
        router.method("a.b", "", Mode::Inline, ok).expect("a.b");
        crate::methods::register_builtins(&mut router).expect("builtins");
        let names: Vec<String> = router.methods.keys().cloned().collect();
        for name in &names {
            assert_eq!(router.get(name).map(|m| m.name()), Some(name.as_str()));
        }
        router.build_index();
        assert!(router.index.is_some());
        for name in &names {
            assert_eq!(router.get(name).map(|m| m.name()), Some(name.as_str()));
        }
        assert!(router.get("a.c").is_none() && router.get("rpc.pinG").is_none());
        // A schema needs the method's only reference: the index goes.
        router
            .schema("a.b", Some(serde_json::json!({"type": "array"})), None)
            .expect("schema after the index was built");
        assert!(router.index.is_none());
        router.build_index();
        router.method("c.d", "", Mode::Inline, ok).expect("c.d");
        assert!(router.index.is_none());
        assert!(router.get("c.d").is_some());
        let ctx = context(router);
        assert!(ctx.router().index.is_some(), "built with the context");
        assert_eq!(ctx.call_json("rpc.ping", None).as_deref(), Ok("\"pong\""));
        assert_eq!(ctx.call_json("c.d", None).as_deref(), Ok("null"));
    }

    #[test]
    fn a_panicking_handler_is_an_internal_error() {
        let mut router = Router::new();
        router
            .method("boom", "", Mode::Inline, |_, _| panic!("kaboom"))
            .expect("register");
        let err = context(router).call_json("boom", None).unwrap_err();
        assert_eq!(err.code, -32603);
        assert!(err.message.contains("panicked"), "{}", err.message);
    }
}
