//! A blocking client over Unix or TCP, in either protocol: calls,
//! notifications, batches, pipelined calls and (MCP1) raw bodies and pings;
//! and the service bus (`proto/bus.md`): providing methods, subscribing to
//! topics, publishing. The `junction` CLI uses it; it pulls in no event
//! loop, no async runtime and no daemon (see README.md for its dependency
//! count). TLS is behind the `tls` feature.
//!
//! Call a method:
//!
//! ```no_run
//! use junction_client::{Client, Endpoint, Protocol};
//!
//! let mut client = Client::connect(&Endpoint::default_unix())?;
//! assert_eq!(client.call("rpc.ping", None)?, "pong");
//! # Ok::<(), junction_client::ClientError>(())
//! ```
//!
//! Over TCP the daemon wants a token first (`rpc.auth`), read from the
//! token file it wrote, or given:
//!
//! ```no_run
//! use junction_client::{Client, Endpoint, Protocol};
//!
//! let mut client = Client::connect(&Endpoint::Tcp("127.0.0.1:7710".into()))?;
//! client.authenticate("the-token")?;
//! assert_eq!(client.call("rpc.ping", None)?, "pong");
//! let mut binary = Client::connect_with(&Endpoint::Tcp("127.0.0.1:7710".into()), Protocol::Mcp1)?;
//! assert_eq!(binary.call("rpc.echo", Some("hi".into()))?, "hi");
//! # Ok::<(), junction_client::ClientError>(())
//! ```
//!
//! Provide a method: a provider registers names, then answers what the daemon forwards:
//!
//! ```no_run
//! use junction_client::{Body, Client, Endpoint, Incoming};
//!
//! let mut provider = Client::connect(&Endpoint::default_unix())?;
//! provider.register(&["editor.*"])?;
//! loop {
//!     match provider.next_message()? {
//!         Incoming::Request(call) => {
//!             let params = call.params.unwrap_or(Body::Json(serde_json::Value::Null));
//!             provider.respond(call.id, Ok(params))?;
//!         }
//!         Incoming::Cancel { id, reason } => eprintln!("call {id} cancelled: {reason}"),
//!         _ => {}
//!     }
//! }
//! # Ok::<(), junction_client::ClientError>(())
//! ```
//!
//! Messages the daemon originates (forwarded requests, cancels, events) may
//! arrive while [`Client::call`] waits for its answer: they are queued, not
//! lost, and [`Client::next_message`] returns them in order.

#![warn(missing_docs)]

mod bus;
mod incoming;
pub mod path;
mod socket;
#[cfg(test)]
mod tests;
#[cfg(feature = "tls")]
mod tls;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

pub use junction_proto::{ErrorCode, Protocol, RpcError};
use socket::Socket;
use wire::Inbound;

pub use bus::{BusList, GroupMember, Peer, ProvidedName, Provider, TopicEntry};
pub use incoming::{CANCEL_METHOD, EVENT_METHOD, Event, ForwardedCall, Incoming};
#[cfg(feature = "tls")]
pub use tls::{TlsOptions, TlsSetupError};

/// The token file a client on `tcp` (`HOST:PORT`) can read by itself:
/// the daemon's generated token beside its Unix socket (`unix`, else the
/// default socket path), or that of a daemon without a Unix socket
/// (`junction-tcp-<port>.token`, checked first). Only a regular file of
/// this user counts; None when there is none.
pub fn find_token_file(tcp: &str, unix: Option<&std::path::Path>) -> Option<PathBuf> {
    let port = tcp
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let socket = unix.map_or_else(path::default_unix_path, PathBuf::from);
    let by_port = port.map(path::tcp_token_path);
    let beside = path::token_path(Some(&socket), 0);
    by_port
        .into_iter()
        .chain(std::iter::once(beside))
        .find(|path| is_own_readable_file(path))
}

/// True for a regular file (not a symlink) of this user that it can read:
/// a token file planted by someone else is never sent.
fn is_own_readable_file(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file() && meta.uid() == path::euid())
        && std::fs::File::open(path).is_ok()
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// The daemon's default Unix socket: `$XDG_RUNTIME_DIR/junction.sock`,
    /// else `/tmp/junction-<uid>/junction.sock` (see [`path`]).
    pub fn default_unix() -> Self {
        Endpoint::Unix(path::default_unix_path())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached.
    #[error("cannot connect to junctiond at {endpoint}: {source}")]
    Connect {
        /// Where we tried.
        endpoint: Endpoint,
        /// The OS error.
        source: io::Error,
    },
    /// The Unix socket's path is not one to trust: a link, a directory others
    /// could write to, or a socket owned by another user ([`path::PathProblem`]).
    #[error("refusing to connect to junctiond at {endpoint}: {path} {problem}")]
    Unsafe {
        /// Where we meant to connect.
        endpoint: Endpoint,
        /// The path at fault (the socket or its directory).
        path: PathBuf,
        /// What is wrong with it.
        problem: path::PathProblem,
    },
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The daemon answered with an error.
    #[error("{0}")]
    Rpc(RpcError),
    /// The daemon closed the connection, perhaps saying why.
    #[error("the daemon closed the connection{}", .0.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Closed(Option<String>),
    /// The daemon sent something that is not a response.
    #[error("unexpected reply from the daemon: {0}")]
    Protocol(String),
    /// The call cannot be made this way (e.g. raw bytes over JSON-RPC).
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// True when the daemon does not seem to be running at the endpoint.
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::Connect { source, .. }
            if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused))
    }
}

/// A request or response body: JSON, or raw bytes (MCP1 only).
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A JSON value.
    Json(Value),
    /// Raw bytes.
    Raw(Vec<u8>),
}

impl Body {
    /// The JSON value; raw bytes are an error.
    pub fn into_json(self) -> Result<Value, ClientError> {
        match self {
            Body::Json(value) => Ok(value),
            Body::Raw(bytes) => Err(ClientError::Protocol(format!(
                "expected JSON, got {} raw bytes",
                bytes.len()
            ))),
        }
    }
}

/// One response, matched to its call by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id the call carried (a number for MCP1).
    pub id: Value,
    /// The result, or the error the daemon answered.
    pub result: Result<Body, RpcError>,
}

/// One entry of a batch.
#[derive(Debug, Clone)]
pub struct BatchEntry {
    /// The method.
    pub method: String,
    /// The params.
    pub params: Option<Value>,
    /// True for a notification (no id, no response).
    pub notification: bool,
}

/// The sending half of a connection, shared with [`Responder`]s.
struct Writer {
    out: BufWriter<Socket>,
    scratch: Vec<u8>,
}

/// A blocking connection to junctiond.
pub struct Client {
    protocol: Protocol,
    reader: BufReader<Socket>,
    writer: Arc<Mutex<Writer>>,
    next_id: u64,
    /// Responses read while waiting for another id (pipelining).
    early: HashMap<String, Response>,
    /// Daemon-originated messages read while waiting for a response.
    backlog: VecDeque<Incoming>,
}

/// Sends answers to forwarded calls from any thread, while the
/// [`Client`] it came from blocks in [`Client::next_message`]. Clones share
/// the connection; writes are whole frames, never interleaved.
#[derive(Clone)]
pub struct Responder {
    protocol: Protocol,
    writer: Arc<Mutex<Writer>>,
}

impl Responder {
    /// Answers the forwarded call `id` with a result or an error, and sends
    /// it at once. A raw result needs MCP1.
    pub fn respond(&self, id: u64, result: Result<Body, RpcError>) -> Result<(), ClientError> {
        let mut writer = lock(&self.writer);
        let Writer { out, scratch } = &mut *writer;
        wire::write_answer(self.protocol, out, &Value::from(id), &result, scratch)?;
        out.flush()?;
        Ok(())
    }
}

/// The writer, even if a thread panicked while holding it: what it left is
/// at worst a partial frame, which the daemon reports.
fn lock(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Client {
    /// Connects to `endpoint`, speaking JSON-RPC.
    pub fn connect(endpoint: &Endpoint) -> Result<Client, ClientError> {
        Self::connect_with(endpoint, Protocol::JsonRpc)
    }

    /// Connects to `endpoint`, speaking `protocol`.
    pub fn connect_with(endpoint: &Endpoint, protocol: Protocol) -> Result<Client, ClientError> {
        let connect_err = |source| ClientError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let socket = match endpoint {
            Endpoint::Unix(path) => socket::connect_unix(endpoint, path)?,
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).map_err(connect_err)?;
                stream.set_nodelay(true)?;
                Socket::Tcp(stream)
            }
        };
        Self::from_socket(socket, protocol)
    }

    /// Connects to the daemon's TCP `addr` (`host:port`) over TLS, speaking
    /// `protocol`: the daemon's certificate is checked against `tls.ca`
    /// (or the system's CAs) for `tls.server_name` (or the host of `addr`),
    /// and `tls.cert`/`tls.key` are shown for mutual TLS. The handshake is
    /// done when this returns.
    ///
    /// ```no_run
    /// use junction_client::{Client, Protocol, TlsOptions};
    ///
    /// let tls = TlsOptions { ca: Some("ca.pem".into()), ..TlsOptions::default() };
    /// let mut client = Client::connect_tls("daemon.example:7710", &tls, Protocol::JsonRpc)?;
    /// client.authenticate("the token")?;
    /// # Ok::<(), junction_client::ClientError>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        addr: &str,
        tls: &TlsOptions,
        protocol: Protocol,
    ) -> Result<Client, ClientError> {
        let endpoint = Endpoint::Tcp(addr.to_string());
        let connect_err = |source| ClientError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let stream = TcpStream::connect(addr).map_err(connect_err)?;
        stream.set_nodelay(true)?;
        let socket = tls.connect(stream, addr).map_err(connect_err)?;
        Self::from_socket(Socket::Tls(socket), protocol)
    }

    /// A client on an already connected Unix stream (one passed by a
    /// supervisor, or one end of a socket pair in tests).
    pub fn from_unix_stream(stream: UnixStream, protocol: Protocol) -> Result<Client, ClientError> {
        Self::from_socket(Socket::Unix(stream), protocol)
    }

    fn from_socket(socket: Socket, protocol: Protocol) -> Result<Client, ClientError> {
        let reader = BufReader::new(socket.try_clone()?);
        Ok(Client {
            protocol,
            reader,
            writer: Arc::new(Mutex::new(Writer {
                out: BufWriter::new(socket),
                scratch: Vec::new(),
            })),
            next_id: 1,
            early: HashMap::new(),
            backlog: VecDeque::new(),
        })
    }

    /// The protocol this client speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Bounds how long a read may wait for the daemon (None: forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.reader.get_ref().set_read_timeout(timeout)?;
        Ok(())
    }

    /// Sends `rpc.auth` with `token`: the first request a TCP connection
    /// makes to a daemon that has an auth token. A wrong token is an
    /// [`ClientError::Rpc`] error (-32007), and the daemon then closes.
    pub fn authenticate(&mut self, token: &str) -> Result<(), ClientError> {
        self.call("rpc.auth", Some(serde_json::json!({ "token": token })))?;
        Ok(())
    }

    /// Authenticates with the token in `path`: the file's content, or the
    /// SECRET of a single `NAME:SECRET` line.
    pub fn authenticate_with_file(&mut self, path: &std::path::Path) -> Result<(), ClientError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ClientError::Usage(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        self.authenticate(path::client_secret(&text))
    }

    /// Calls `method` with JSON params and waits for its JSON result.
    pub fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        self.call_body(method, params.map(Body::Json))?.into_json()
    }

    /// Calls `method` with any body (raw bytes need MCP1) and waits for the result.
    pub fn call_body(&mut self, method: &str, params: Option<Body>) -> Result<Body, ClientError> {
        let id = self.send_body(method, params)?;
        self.flush()?;
        self.wait(id)?.result.map_err(ClientError::Rpc)
    }

    /// Sends a notification (no response comes back).
    pub fn notify(&mut self, method: &str, params: Option<Value>) -> Result<(), ClientError> {
        let params = params.map(Body::Json);
        self.write_call(None, method, params.as_ref())?;
        self.flush()
    }

    /// Writes one call (`id` Some) or notification, unflushed.
    fn write_call(
        &mut self,
        id: Option<u64>,
        method: &str,
        params: Option<&Body>,
    ) -> Result<(), ClientError> {
        let mut writer = lock(&self.writer);
        let Writer { out, scratch } = &mut *writer;
        wire::write_call(self.protocol, out, id, method, params, scratch)
    }

    /// Queues a call without waiting (pipelining); returns its id. Call
    /// [`Client::flush`] then [`Client::wait`] or [`Client::recv`].
    pub fn send(&mut self, method: &str, params: Option<Value>) -> Result<u64, ClientError> {
        self.send_body(method, params.map(Body::Json))
    }

    /// Like [`Client::send`] with any body.
    pub fn send_body(&mut self, method: &str, params: Option<Body>) -> Result<u64, ClientError> {
        let id = self.take_id();
        self.write_call(Some(id), method, params.as_ref())?;
        Ok(id)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        // MCP1 ids are u32 and never 0.
        self.next_id = match self.protocol {
            Protocol::Mcp1 if id >= u64::from(u32::MAX) => 1,
            _ => id + 1,
        };
        id
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        lock(&self.writer).out.flush()?;
        Ok(())
    }

    /// Waits for the response to call `id`, keeping others for later.
    pub fn wait(&mut self, id: u64) -> Result<Response, ClientError> {
        if let Some(response) = self.early.remove(&id.to_string()) {
            return Ok(response);
        }
        loop {
            let response = self.read_response()?;
            // An error without an id is the daemon failing to read a request
            // at all: it belongs to whoever is waiting.
            let anonymous = response.id.is_null() || response.id.as_u64() == Some(0);
            if response.id.as_u64() == Some(id) || (anonymous && response.result.is_err()) {
                return Ok(response);
            }
            self.early.insert(response.id.to_string(), response);
        }
    }

    /// Reads the next response, whatever its id (daemon-originated messages
    /// read meanwhile are kept for [`Client::next_message`]).
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        if let Some(response) = self.take_early() {
            return Ok(response);
        }
        self.read_response()
    }

    fn take_early(&mut self) -> Option<Response> {
        let key = self.early.keys().next().cloned()?;
        self.early.remove(&key)
    }

    /// The next response off the wire; daemon-originated messages on the
    /// way go to the backlog.
    fn read_response(&mut self) -> Result<Response, ClientError> {
        loop {
            match self.read_inbound()? {
                Inbound::Response(response) => return Ok(response),
                Inbound::Batch(_) => {
                    return Err(ClientError::Protocol(
                        "a batch answer where none was asked".into(),
                    ));
                }
                Inbound::Pong { id, .. } => {
                    return Err(ClientError::Protocol(format!(
                        "a PONG ({id}) where a response was expected"
                    )));
                }
                other => self.keep(other)?,
            }
        }
    }

    fn read_inbound(&mut self) -> Result<Inbound, ClientError> {
        wire::read(self.protocol, &mut self.reader)
    }

    /// Queues a daemon-originated message for [`Client::next_message`].
    fn keep(&mut self, inbound: Inbound) -> Result<(), ClientError> {
        if let Some(message) = incoming::classify(inbound)? {
            self.backlog.push_back(message);
        }
        Ok(())
    }

    /// The next message from the daemon: a forwarded request, a
    /// notification, a cancel, an event, or a response nobody waited for.
    /// Messages that arrived while a call waited come first, in order.
    /// Blocks (up to the timeout of [`Client::set_timeout`]).
    pub fn next_message(&mut self) -> Result<Incoming, ClientError> {
        if let Some(message) = self.backlog.pop_front() {
            return Ok(message);
        }
        if let Some(response) = self.take_early() {
            return Ok(Incoming::Response(response));
        }
        let inbound = self.read_inbound()?;
        let description = match &inbound {
            Inbound::Batch(_) => "a batch answer nobody waited for".to_string(),
            Inbound::Pong { id, .. } => format!("a PONG ({id}) nobody waited for"),
            _ => String::new(),
        };
        incoming::classify(inbound)?.ok_or(ClientError::Protocol(description))
    }

    /// True when messages already read wait in the client (no read needed).
    pub fn has_pending_messages(&self) -> bool {
        !self.backlog.is_empty() || !self.early.is_empty()
    }

    /// Answers a call the daemon forwarded ([`Incoming::Request`]) with its
    /// `id`: a result or an error, sent at once.
    pub fn respond(&mut self, id: u64, result: Result<Body, RpcError>) -> Result<(), ClientError> {
        self.responder().respond(id, result)
    }

    /// A handle that answers forwarded calls from other threads.
    pub fn responder(&self) -> Responder {
        Responder {
            protocol: self.protocol,
            writer: Arc::clone(&self.writer),
        }
    }

    /// Sends an MCP1 PING and waits for its PONG; returns the echoed payload.
    pub fn ping(&mut self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        if self.protocol != Protocol::Mcp1 {
            return Err(ClientError::Usage(
                "PING frames are MCP1; over JSON-RPC call rpc.ping".into(),
            ));
        }
        let id = self.take_id() as u32;
        wire::write_ping(&mut lock(&self.writer).out, id, payload)?;
        self.flush()?;
        loop {
            match self.read_inbound()? {
                Inbound::Pong { id: got, payload } if got == id => return Ok(payload),
                Inbound::Response(response) => {
                    self.early.insert(response.id.to_string(), response);
                }
                Inbound::Pong { .. } | Inbound::Batch(_) => {
                    return Err(ClientError::Protocol(
                        "unexpected frame while waiting for PONG".into(),
                    ));
                }
                other => self.keep(other)?,
            }
        }
    }

    /// Sends a batch and returns the results of its calls in the order given
    /// (notifications have none). Over MCP1, which has no batches, the
    /// entries are pipelined instead.
    pub fn batch(
        &mut self,
        entries: &[BatchEntry],
    ) -> Result<Vec<Result<Value, RpcError>>, ClientError> {
        let ids = match self.protocol {
            Protocol::JsonRpc => self.send_jsonrpc_batch(entries)?,
            Protocol::Mcp1 => self.send_pipelined(entries)?,
        };
        let mut by_id: HashMap<u64, Response> = HashMap::new();
        if self.protocol == Protocol::JsonRpc && !ids.is_empty() {
            let items = self.read_batch()?;
            by_id.extend(
                items
                    .into_iter()
                    .filter_map(|r| r.id.as_u64().map(|id| (id, r))),
            );
        }
        ids.iter()
            .map(|&id| {
                let response = match by_id.remove(&id) {
                    Some(response) => response,
                    None if self.protocol == Protocol::Mcp1 => self.wait(id)?,
                    None => {
                        return Err(ClientError::Protocol(format!("batch answer lacks id {id}")));
                    }
                };
                Ok(response.result.and_then(|body| {
                    body.into_json()
                        .map_err(|e| RpcError::new(0, e.to_string()))
                }))
            })
            .collect()
    }

    /// The next batch array; daemon-originated messages on the way go to
    /// the backlog.
    fn read_batch(&mut self) -> Result<Vec<Response>, ClientError> {
        loop {
            match self.read_inbound()? {
                Inbound::Batch(items) => return Ok(items),
                Inbound::Response(_) | Inbound::Pong { .. } => {
                    return Err(ClientError::Protocol("expected a batch array".into()));
                }
                other => self.keep(other)?,
            }
        }
    }

    fn send_jsonrpc_batch(&mut self, entries: &[BatchEntry]) -> Result<Vec<u64>, ClientError> {
        let mut ids = Vec::new();
        let mut messages = Vec::with_capacity(entries.len());
        for entry in entries {
            let id = (!entry.notification).then(|| self.take_id());
            ids.extend(id);
            let params = entry.params.clone().map(Body::Json);
            messages.push(wire::jsonrpc_message(id, &entry.method, params.as_ref())?);
        }
        {
            let mut writer = lock(&self.writer);
            serde_json::to_writer(&mut writer.out, &Value::Array(messages))
                .map_err(io::Error::from)?;
            writer.out.write_all(b"\n")?;
        }
        self.flush()?;
        Ok(ids)
    }

    fn send_pipelined(&mut self, entries: &[BatchEntry]) -> Result<Vec<u64>, ClientError> {
        let mut ids = Vec::new();
        for entry in entries {
            let params = entry.params.clone().map(Body::Json);
            if entry.notification {
                self.write_call(None, &entry.method, params.as_ref())?;
            } else {
                ids.push(self.send_body(&entry.method, params)?);
            }
        }
        self.flush()?;
        Ok(ids)
    }
}

/// The README's example, compiled with the other doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
