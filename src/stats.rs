//! The daemon's counters: updated with relaxed atomics (one writer, the loop,
//! for almost all of them) and read by `rpc.stats`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use serde::Serialize;

use crate::net::Transport;
use crate::proto::Protocol;

/// Counters of one transport.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Connections open now.
    pub current: AtomicU64,
    /// Connections accepted since start.
    pub total: AtomicU64,
}

/// Counters of one protocol.
#[derive(Debug, Default)]
pub struct ProtocolStats {
    /// Connections that chose this protocol.
    pub connections: AtomicU64,
    /// Frames decoded (requests, notifications, batches).
    pub frames: AtomicU64,
    /// Error responses sent and protocol errors seen.
    pub errors: AtomicU64,
}

/// Every counter of a running server.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    workers: usize,
    backend: &'static str,
    transports: [TransportStats; 2],
    protocols: [ProtocolStats; 2],
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Connections closed because their first bytes were no known protocol.
    pub sniff_rejected: AtomicU64,
    /// Connections closed for not showing their protocol within the sniff timeout.
    pub sniff_timeouts: AtomicU64,
    /// Connections turned away at the connection limit.
    pub refused_max_connections: AtomicU64,
    /// Pooled requests that found the worker queue full and waited on the
    /// loop (their connection stopped being read meanwhile).
    pub queue_full_waits: AtomicU64,
    /// Unix connections refused by the uid/gid allow-list.
    pub access_denied: AtomicU64,
    /// TCP connections closed for a missing or wrong auth token.
    pub auth_failures: AtomicU64,
    /// TCP connections that authenticated.
    pub auth_successes: AtomicU64,
    /// Authentications refused unjudged: their address failed too often.
    pub auth_throttled: AtomicU64,
    /// Requests, registrations, subscriptions and routed calls the policy refused.
    pub forbidden: AtomicU64,
    /// Bytes of ring-buffer storage held by connections.
    pub ring_bytes: AtomicU64,
    /// Bytes of free ring blocks the pool keeps resident (its warm pool).
    pub ring_pool_bytes: AtomicU64,
    /// Bytes of ring storage (in use or free) resident in memory, as the
    /// kernel reports it (mincore), as of the last sweep.
    pub ring_resident_bytes: AtomicU64,
    /// Times a connection waited to be read because buffer memory was at its limit.
    pub memory_waits: AtomicU64,
    /// The buffer-memory limit (rings plus output), in bytes.
    memory_limit: u64,
    /// Accept calls that failed (other than WouldBlock).
    pub accept_errors: AtomicU64,
    /// Connections turned away because the process ran out of descriptors.
    pub fd_exhausted: AtomicU64,
    /// Connections closed by the frame timeout (slowloris).
    pub frame_timeouts: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Connections closed by the write timeout (peer not reading).
    pub write_timeouts: AtomicU64,
    /// Output bytes waiting to be written, all connections together.
    pub output_buffered: AtomicU64,
    /// Times a connection stopped being read because its output reached max-output.
    pub backpressure_pauses: AtomicU64,
    /// Bytes shared by several outputs or queues (events), counted once.
    pub shared_bytes: AtomicU64,
    /// Connections closed because their pending output passed max-output-hard.
    pub output_limit_closes: AtomicU64,
    /// Socket options as the kernel reports them, by listener or transport.
    sockets: Mutex<serde_json::Map<String, serde_json::Value>>,
    /// Service bus and pub/sub counters.
    pub bus: BusStats,
    /// Connections waiting to authenticate, and peers that hung up.
    pub gate: GateStats,
    /// TLS and PROXY protocol counters.
    pub remote: RemoteStats,
    /// HTTP requests and WebSocket messages (src/http/).
    pub http: HttpStats,
    /// Set once the drain at shutdown begins: `GET /healthz` answers 503.
    pub draining: AtomicBool,
    /// Federation over NATS.
    pub federation: FederationStats,
}

/// Declares a struct of counters and its snapshot for `rpc.stats`.
macro_rules! counters {
    ($(#[$meta:meta])* $name:ident => $snapshot:ident { $($(#[$doc:meta])* $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$doc])* pub $field: AtomicU64,)*
        }

        #[doc = concat!("A copy of [`", stringify!($name), "`] for `rpc.stats`.")]
        #[derive(Debug, Serialize)]
        pub struct $snapshot {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl $name {
            /// A copy of every counter.
            pub fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $($field: self.$field.load(Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// What the service bus did.
    BusStats => BusSnapshot {
        /// Names and patterns registered.
        registrations,
        /// Registrations refused (policy, taken names).
        refused,
        /// Calls and notifications forwarded to providers.
        routed_calls,
        /// Routed calls that got no answer within the call timeout.
        call_timeouts,
        /// Routed calls failed because their provider left.
        provider_gone,
        /// Answers from providers to no pending call (late, cancelled).
        late_answers,
        /// Events published.
        events_published,
        /// Events written to subscribers.
        events_delivered,
        /// Events dropped from slow subscribers' queues.
        events_dropped,
        /// Subscribers disconnected for being too slow.
        slow_disconnects,
        /// Registrations and subscriptions refused at a per-connection cap.
        limit_refused,
        /// Publishes refused because the event did not fit in the buffer memory.
        publish_refused,
        /// Calls not forwarded because their provider's output was full.
        provider_busy,
    }
}

counters! {
    /// HTTP/1.1 and WebSocket traffic (`GET /metrics`, JSON-RPC over POST
    /// and WebSocket; the JSON-RPC it carries counts under jsonrpc too).
    HttpStats => HttpSnapshot {
        /// Connections sniffed as HTTP.
        connections,
        /// Requests parsed (bad ones included).
        requests,
        /// Responses with a 4xx or 5xx status.
        errors,
        /// Requests refused by the Host or Origin allow-lists.
        refused_origin,
        /// Connections upgraded to WebSocket.
        upgrades,
        /// WebSocket text messages received.
        ws_messages_in,
        /// WebSocket text messages sent.
        ws_messages_out,
    }
}

counters! {
    /// Federation over NATS (`--nats`, docs/federation.md); in `rpc.stats`
    /// only when it is on.
    FederationStats => FederationSnapshot {
        /// 1 when `--nats` is set.
        enabled,
        /// 1 while connected to a NATS server.
        connected,
        /// Connections made to NATS (the first and every reconnect).
        connects,
        /// Connections to NATS lost.
        disconnects,
        /// Calls and notifications sent to the cluster.
        calls_out,
        /// Calls and notifications received from the cluster.
        calls_in,
        /// Calls from the cluster the policy refused.
        calls_refused,
        /// Answers received for calls sent.
        answers_in,
        /// Answers received for no pending call (too late, cancelled).
        late_answers,
        /// Calls that ended with -32040 (no daemon provides the name).
        no_host,
        /// Calls that ended with -32041 (not connected, saturated, lost).
        unreachable,
        /// Calls that ended with -32022 (the serving daemon left).
        provider_gone,
        /// Events published to the cluster.
        events_out,
        /// Events received from the cluster.
        events_in,
        /// Events from the cluster the policy refused.
        events_refused,
        /// Events dropped (link saturated, not JSON, no memory).
        events_dropped,
        /// The daemon's own events heard back and dropped (loop guard).
        own_events_dropped,
        /// Messages dropped because a queue between the loop and the NATS thread was full.
        queue_full,
    }
}

counters! {
    /// Connections waiting to authenticate (`max-unauthenticated`,
    /// `auth-timeout`), and peers noticed gone with work pending.
    GateStats => GateSnapshot {
        /// Connections open now that have not authenticated yet (a gauge).
        unauthenticated,
        /// Turned away at accept: `max-unauthenticated` connections were waiting.
        refused_unauthenticated,
        /// Closed for not authenticating within `auth-timeout`.
        auth_timeouts,
        /// Closed at once because the peer hung up (closed or reset) while
        /// calls, answers or held input were pending.
        hang_ups,
    }
}

counters! {
    /// TLS handshakes and PROXY headers on the TCP listener (docs/remote.md).
    RemoteStats => RemoteSnapshot {
        /// TLS handshakes completed.
        tls_handshakes,
        /// Of them, with a verified client certificate (mutual TLS).
        tls_client_certs,
        /// Handshakes or records that failed (garbage, a refused certificate); closed.
        tls_failures,
        /// Handshakes not completed within `auth-timeout`; closed.
        tls_handshake_timeouts,
        /// Plaintext connections refused on a port that serves TLS only.
        tls_plaintext_refused,
        /// PROXY headers taken from trusted proxies.
        proxy_headers,
        /// Connections refused for a malformed PROXY header.
        proxy_refused,
    }
}

impl Stats {
    /// Fresh counters for a server with `workers` pool threads.
    pub fn new(workers: usize) -> Self {
        Self {
            started: Instant::now(),
            workers,
            backend: "epoll",
            transports: Default::default(),
            protocols: Default::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            sniff_rejected: AtomicU64::new(0),
            sniff_timeouts: AtomicU64::new(0),
            refused_max_connections: AtomicU64::new(0),
            queue_full_waits: AtomicU64::new(0),
            access_denied: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            auth_successes: AtomicU64::new(0),
            auth_throttled: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
            ring_bytes: AtomicU64::new(0),
            ring_pool_bytes: AtomicU64::new(0),
            ring_resident_bytes: AtomicU64::new(0),
            memory_waits: AtomicU64::new(0),
            memory_limit: 0,
            accept_errors: AtomicU64::new(0),
            fd_exhausted: AtomicU64::new(0),
            frame_timeouts: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            write_timeouts: AtomicU64::new(0),
            output_buffered: AtomicU64::new(0),
            backpressure_pauses: AtomicU64::new(0),
            shared_bytes: AtomicU64::new(0),
            output_limit_closes: AtomicU64::new(0),
            sockets: Mutex::new(serde_json::Map::new()),
            bus: BusStats::default(),
            gate: GateStats::default(),
            remote: RemoteStats::default(),
            http: HttpStats::default(),
            draining: AtomicBool::new(false),
            federation: FederationStats::default(),
        }
    }

    /// The same counters, naming the event loop backend that runs.
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = backend;
        self
    }

    /// The same counters, reporting `limit` as the buffer-memory limit.
    pub fn with_memory_limit(mut self, limit: usize) -> Self {
        self.memory_limit = limit as u64;
        self
    }

    /// The buffer-memory limit given with [`Stats::with_memory_limit`] (0: none).
    pub fn memory_limit(&self) -> usize {
        usize::try_from(self.memory_limit).unwrap_or(usize::MAX)
    }

    /// Buffer memory in use: rings (as of the last turn), owned output and
    /// shared event bytes.
    pub fn buffer_memory(&self) -> usize {
        let total = self.ring_bytes.load(Relaxed)
            + self.output_buffered.load(Relaxed)
            + self.shared_bytes.load(Relaxed);
        usize::try_from(total).unwrap_or(usize::MAX)
    }

    /// Records the options read back from a socket under `key`.
    pub fn record_socket(&self, key: &str, value: serde_json::Value) {
        if let Ok(mut sockets) = self.sockets.lock() {
            sockets.insert(key.to_string(), value);
        }
    }

    /// Every recorded socket read-back.
    pub fn sockets(&self) -> serde_json::Value {
        self.sockets
            .lock()
            .map(|s| serde_json::Value::Object(s.clone()))
            .unwrap_or_default()
    }

    /// Counters of `transport`.
    pub fn transport(&self, transport: Transport) -> &TransportStats {
        &self.transports[transport as usize]
    }

    /// Counters of `protocol`.
    pub fn protocol(&self, protocol: Protocol) -> &ProtocolStats {
        &self.protocols[protocol as usize]
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// A consistent-enough copy of every counter, for `rpc.stats`.
    pub fn snapshot(&self) -> StatsSnapshot {
        let transport = |t: Transport| {
            let s = self.transport(t);
            TransportSnapshot {
                current: s.current.load(Relaxed),
                total: s.total.load(Relaxed),
            }
        };
        let protocol = |p: Protocol| {
            let s = self.protocol(p);
            ProtocolSnapshot {
                connections: s.connections.load(Relaxed),
                frames: s.frames.load(Relaxed),
                errors: s.errors.load(Relaxed),
            }
        };
        StatsSnapshot {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            backend: self.backend,
            workers: self.workers,
            draining: self.draining.load(Relaxed),
            connections: ConnectionsSnapshot {
                unix: transport(Transport::Unix),
                tcp: transport(Transport::Tcp),
                refused_max_connections: self.refused_max_connections.load(Relaxed),
                sniff_rejected: self.sniff_rejected.load(Relaxed),
                sniff_timeouts: self.sniff_timeouts.load(Relaxed),
                accept_errors: self.accept_errors.load(Relaxed),
                fd_exhausted: self.fd_exhausted.load(Relaxed),
                frame_timeouts: self.frame_timeouts.load(Relaxed),
                idle_timeouts: self.idle_timeouts.load(Relaxed),
                write_timeouts: self.write_timeouts.load(Relaxed),
                output_limit_closes: self.output_limit_closes.load(Relaxed),
            },
            protocols: ProtocolsSnapshot {
                jsonrpc: protocol(Protocol::JsonRpc),
                mcp1: protocol(Protocol::Mcp1),
            },
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            queue_full_waits: self.queue_full_waits.load(Relaxed),
            output_buffered: self.output_buffered.load(Relaxed),
            backpressure_pauses: self.backpressure_pauses.load(Relaxed),
            memory: MemorySnapshot {
                ring_bytes: self.ring_bytes.load(Relaxed),
                output_bytes: self.output_buffered.load(Relaxed),
                shared_bytes: self.shared_bytes.load(Relaxed),
                total_bytes: self.ring_bytes.load(Relaxed)
                    + self.output_buffered.load(Relaxed)
                    + self.shared_bytes.load(Relaxed),
                limit_bytes: self.memory_limit,
                waits: self.memory_waits.load(Relaxed),
                ring_pool_bytes: self.ring_pool_bytes.load(Relaxed),
                ring_resident_bytes: self.ring_resident_bytes.load(Relaxed),
            },
            access: AccessSnapshot {
                denied: self.access_denied.load(Relaxed),
                auth_failures: self.auth_failures.load(Relaxed),
                auth_successes: self.auth_successes.load(Relaxed),
                auth_throttled: self.auth_throttled.load(Relaxed),
                forbidden: self.forbidden.load(Relaxed),
            },
            sockets: self.sockets(),
            bus: self.bus.snapshot(),
            gate: self.gate.snapshot(),
            remote: self.remote.snapshot(),
            http: self.http.snapshot(),
            federation: (self.federation.enabled.load(Relaxed) == 1)
                .then(|| self.federation.snapshot()),
        }
    }
}

/// `rpc.stats` as sent.
#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    /// Seconds since the server started.
    pub uptime_secs: f64,
    /// The event loop backend: "epoll" (or kqueue) or "io-uring".
    pub backend: &'static str,
    /// Worker pool size.
    pub workers: usize,
    /// Shutting down (the shutdown grace or the drain): `/healthz` answers 503.
    pub draining: bool,
    /// Connection counters.
    pub connections: ConnectionsSnapshot,
    /// Per-protocol counters.
    pub protocols: ProtocolsSnapshot,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Pooled requests that waited for room in the worker queue.
    pub queue_full_waits: u64,
    /// Output bytes waiting to be written, all connections together.
    pub output_buffered: u64,
    /// Times a connection was paused by backpressure.
    pub backpressure_pauses: u64,
    /// Buffer memory held by connections, against its limit.
    pub memory: MemorySnapshot,
    /// Access-control decisions.
    pub access: AccessSnapshot,
    /// Socket options and backlog as the kernel reports them.
    pub sockets: serde_json::Value,
    /// Service bus and pub/sub counters.
    pub bus: BusSnapshot,
    /// Connections waiting to authenticate, and peers that hung up.
    pub gate: GateSnapshot,
    /// TLS and PROXY protocol counters.
    pub remote: RemoteSnapshot,
    /// HTTP requests and WebSocket messages.
    pub http: HttpSnapshot,
    /// Federation over NATS, when `--nats` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation: Option<FederationSnapshot>,
}

/// Buffer memory in a snapshot.
#[derive(Debug, Serialize)]
pub struct MemorySnapshot {
    /// Ring-buffer storage held by connections.
    pub ring_bytes: u64,
    /// Output waiting to be written.
    pub output_bytes: u64,
    /// Event bytes shared by subscribers' queues and outputs, counted once.
    pub shared_bytes: u64,
    /// The three together.
    pub total_bytes: u64,
    /// The limit past which connections wait to be read (`max-buffer-memory`).
    pub limit_bytes: u64,
    /// Times a connection waited for buffer memory.
    pub waits: u64,
    /// Free ring blocks kept resident for reuse (the warm pool); blocks
    /// past it give their pages back to the kernel.
    pub ring_pool_bytes: u64,
    /// Ring storage resident in memory (in use plus warm), as the kernel
    /// reports it, updated about once a second.
    pub ring_resident_bytes: u64,
}

/// Access-control counters in a snapshot.
#[derive(Debug, Serialize)]
pub struct AccessSnapshot {
    /// Unix peers refused by the uid/gid allow-list.
    pub denied: u64,
    /// TCP connections closed for a missing or wrong token.
    pub auth_failures: u64,
    /// TCP connections that authenticated.
    pub auth_successes: u64,
    /// Authentications refused because their address failed too often.
    pub auth_throttled: u64,
    /// Actions the policy refused (calls, registrations, publishes, subscriptions, routing).
    pub forbidden: u64,
}

/// One open connection, as `rpc.clients` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// The connection's number (its slot; reused after it closes).
    pub id: usize,
    /// `unix` or `tcp`.
    pub transport: Transport,
    /// The protocol, once sniffed.
    pub protocol: Option<Protocol>,
    /// The peer's process id (Unix, where the platform reports it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The peer's user id (Unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The peer's group id (Unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The peer's address (TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Who the policy takes it for: `user:alice`, `uid:1000`,
    /// `token:NAME`, `cert:NAME`, `anonymous` or `unauthenticated`.
    pub identity: String,
    /// False until a TCP connection has sent the auth token (when one is required).
    pub authenticated: bool,
    /// Seconds since it was accepted.
    pub age_secs: f64,
    /// Seconds since it last read or wrote anything.
    pub idle_secs: f64,
    /// Requests handed to workers and not yet answered.
    pub in_flight: usize,
    /// Output bytes waiting to be written.
    pub output_bytes: usize,
    /// True while it is not read because of output backpressure or a full
    /// worker queue (a wait for buffer memory is not shown here).
    pub paused: bool,
    /// True for a TLS connection (shown only then).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// `http` or `websocket` when its JSON-RPC comes that way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<&'static str>,
}

/// Connection counters in a snapshot.
#[derive(Debug, Serialize)]
pub struct ConnectionsSnapshot {
    /// Unix-socket connections.
    pub unix: TransportSnapshot,
    /// TCP connections.
    pub tcp: TransportSnapshot,
    /// Turned away at the connection limit.
    pub refused_max_connections: u64,
    /// Closed for speaking no known protocol.
    pub sniff_rejected: u64,
    /// Closed for sending too little before the sniff timeout.
    pub sniff_timeouts: u64,
    /// Failed accept calls.
    pub accept_errors: u64,
    /// Turned away because the process ran out of descriptors.
    pub fd_exhausted: u64,
    /// Closed by the frame timeout.
    pub frame_timeouts: u64,
    /// Closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Closed by the write timeout.
    pub write_timeouts: u64,
    /// Closed because pending output passed max-output-hard.
    pub output_limit_closes: u64,
}

/// One transport in a snapshot.
#[derive(Debug, Serialize)]
pub struct TransportSnapshot {
    /// Open now.
    pub current: u64,
    /// Accepted since start.
    pub total: u64,
}

/// Per-protocol counters in a snapshot.
#[derive(Debug, Serialize)]
pub struct ProtocolsSnapshot {
    /// JSON-RPC 2.0.
    pub jsonrpc: ProtocolSnapshot,
    /// MCP1 binary framing.
    pub mcp1: ProtocolSnapshot,
}

/// One protocol in a snapshot.
#[derive(Debug, Serialize)]
pub struct ProtocolSnapshot {
    /// Connections that chose it.
    pub connections: u64,
    /// Frames decoded.
    pub frames: u64,
    /// Errors answered or seen.
    pub errors: u64,
}
