//! Junction: a dual-protocol local IPC daemon and its client library.
//!
//! Data flows one way through the daemon:
//!
//! ```text
//! socket --readv--> buffer::RingBuffer --proto::sniff--> proto::jsonrpc (frames)
//!   --> dispatch (inline handler, or workers::WorkerPool) --> router::Router
//!   --> response bytes --> write_queue::WriteQueue --writev--> socket
//! ```
//!
//! [`reactor`] owns the mio loop and all I/O; [`conn`] is the per-connection
//! state machine and does none, so a completion-based backend can drive it
//! as well. [`server::Server`] is the entry point for embedding; [`client`]
//! is the blocking client the `junction` CLI and the tests use.

#![warn(missing_docs)]

pub mod access;
pub mod buffer;
pub mod bus;
pub mod client;
pub mod config;
pub mod conn;
pub mod discover;
pub mod dispatch;
pub mod error;
pub mod federation;
pub mod http;
pub mod methods;
pub mod monitor;
pub mod net;
pub mod notify;
pub mod observe;
pub mod policy;
pub mod proto;
pub mod reactor;
pub mod reload;
pub mod router;
pub mod server;
pub mod stats;
pub mod workers;
pub mod write_queue;

pub use client::{Client, ClientError};
pub use config::{Config, Settings};
pub use error::{ErrorCode, RpcError};
pub use router::{Call, Context, Mode, Params, Reply, Router};
pub use server::{ReloadHandle, RunningServer, Server, ServerError, ShutdownHandle};
