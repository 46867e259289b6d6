//! Junction: a dual-protocol (JSON-RPC 2.0 and MCP1) local IPC daemon, to
//! run as `junctiond` or to embed.
//!
//! Three crates make it up:
//! - `junction-proto`: the wire formats, with no I/O;
//! - `junction-client`: a light blocking client (re-exported here as
//!   [`client`]): call methods, provide them on the bus, subscribe;
//! - `junction` (this one): the daemon. Its public API is what an embedder
//!   touches: [`Server`], [`Router`], [`Config`], and the types their fields
//!   and handlers use.
//!
//! # Call a method
//!
//! ```no_run
//! use junction::client::{Client, Endpoint};
//!
//! let mut client = Client::connect(&Endpoint::default_unix())?;
//! assert_eq!(client.call("rpc.ping", None)?, "pong");
//! # Ok::<(), junction::ClientError>(())
//! ```
//!
//! # Provide a method
//!
//! Any connection may provide methods to the others through the bus
//! (proto/bus.md): it registers names, then answers what the daemon forwards.
//!
//! ```no_run
//! use junction::client::{Body, Client, Endpoint, Incoming};
//! use serde_json::json;
//!
//! let mut provider = Client::connect(&Endpoint::default_unix())?;
//! provider.register(&["editor.open"])?;
//! while let Incoming::Request(call) = provider.next_message()? {
//!     provider.respond(call.id, Ok(Body::Json(json!({"opened": true}))))?;
//! }
//! # Ok::<(), junction::ClientError>(())
//! ```
//!
//! # Embed the daemon
//!
//! ```
//! use junction::{Config, Router, Server};
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir()?;
//! let config = Config {
//!     unix: Some(dir.path().join("app.sock")),
//!     tcp: None,
//!     ..Config::default()
//! };
//! let mut router = Router::new();
//! router.method("app.hello", "greets", junction::Mode::Inline, |_call, reply| {
//!     reply.json(&json!("hello"))
//! })?;
//! let server = Server::bind(&config, router)?.spawn()?;
//! let mut client = junction::Client::connect(&junction::client::Endpoint::Unix(
//!     dir.path().join("app.sock"),
//! ))?;
//! assert_eq!(client.call("app.hello", None)?, "hello");
//! server.stop()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Inside
//!
//! Data flows one way through the daemon:
//!
//! ```text
//! socket --readv--> buffer::RingBuffer --proto::sniff--> proto::jsonrpc (frames)
//!   --> dispatch (inline handler, or workers::WorkerPool) --> router::Router
//!   --> response bytes --> write_queue::WriteQueue --writev--> socket
//! ```
//!
//! `reactor` owns the loop and all I/O (epoll through mio, or io_uring);
//! `conn` is the per-connection state machine and does none, so either
//! driver can run it. Those modules are internal: the `internals` feature
//! shows them (hidden from the docs) to the fuzz targets, the benchmarks and
//! the harness, and makes no promise about them.

#![warn(missing_docs)]

/// Declares modules internal to the daemon: `pub(crate)`, or with the
/// `internals` feature public but hidden from the docs.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        pub(crate) mod $name;
    )*};
}

/// Declares an item of a public module internal to the daemon: `pub(crate)`,
/// or with the `internals` feature public but hidden from the docs (the fuzz
/// targets drive the bus directly).
macro_rules! internal_item {
    ($(#[$meta:meta])* pub $($item:tt)*) => {
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        $(#[$meta])* pub $($item)*
        #[cfg(not(feature = "internals"))]
        $(#[$meta])* pub(crate) $($item)*
    };
}

internal!(
    buffer,
    conn,
    discover,
    dispatch,
    methods,
    monitor,
    notify,
    observe,
    proto,
    reactor,
    workers,
    write_queue,
);

pub mod access;
pub mod bus;
pub mod config;
pub mod federation;
pub mod http;
pub mod net;
pub mod policy;
pub mod reload;
pub mod router;
pub mod server;
pub mod stats;

/// The client, from the `junction-client` crate: a light blocking client
/// for tools that only talk to a daemon (depend on `junction-client` alone
/// to leave the daemon out).
pub use junction_client as client;
/// The error codes both protocols carry, from `junction-proto`.
pub use junction_proto::error;

pub use client::{Client, ClientError};
pub use config::{Config, Settings};
pub use error::{ErrorCode, RpcError};
pub use junction_proto::Protocol;
pub use reactor::io_uring_unavailable;
pub use router::{Call, Context, Mode, Params, Reply, Router};
pub use server::{ReloadHandle, RunningServer, Server, ServerError, ShutdownHandle};
