//! Junction's wire formats, with no I/O: bytes in, frames out.
//!
//! Everything that speaks to `junctiond` shares this crate: the daemon
//! itself, [`junction-client`](https://docs.rs/junction-client), the fuzz
//! targets and the benchmarks. It holds
//! - [`sniff`]: which protocol a connection speaks, from its first bytes
//!   (JSON-RPC 2.0, MCP1, HTTP/1.1, or a TLS ClientHello);
//! - [`jsonrpc`]: one JSON-RPC 2.0 message per line, parsed in one
//!   validating pass that borrows the method, params and id from the line,
//!   and answers written without a tree;
//! - [`mcp1`]: the binary framing of `proto/mcp1.md`, headers checked and
//!   written;
//! - [`ErrorCode`] and [`RpcError`]: the error codes both protocols carry;
//! - [`Params`] and [`Reply`]: what a method handler reads and writes.
//!
//! ```
//! use junction_proto::{Protocol, Sniff, jsonrpc, sniff};
//!
//! let line = br#"{"jsonrpc":"2.0","id":1,"method":"rpc.ping"}"#;
//! assert_eq!(sniff(line), Sniff::Detected(Protocol::JsonRpc));
//! match jsonrpc::parse_line(line, 100) {
//!     jsonrpc::Message::Single(jsonrpc::Entry::Request { method, id, .. }) => {
//!         assert_eq!(method, "rpc.ping");
//!         assert_eq!(id.map(|id| id.get()), Some("1"));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

#![warn(missing_docs)]

mod call;
mod detect;
pub mod error;
pub mod jsonrpc;
mod jsonscan;
pub mod mcp1;

pub use call::{Params, Reply};
pub use detect::*;
pub use error::{ErrorCode, RpcError};
