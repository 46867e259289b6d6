//! A blocking JSON-RPC client over Unix or TCP: calls, notifications,
//! batches and pipelined calls. The `junction` CLI and the tests use it.
//!
//! ```no_run
//! use junction::client::{Client, Endpoint};
//!
//! let mut client = Client::connect(&Endpoint::Tcp("127.0.0.1:7710".into()))?;
//! let pong = client.call("rpc.ping", None)?;
//! assert_eq!(pong, "pong");
//! # Ok::<(), junction::ClientError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::RpcError;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
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
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The daemon answered with an error.
    #[error("{0}")]
    Rpc(RpcError),
    /// The daemon closed the connection.
    #[error("the daemon closed the connection{}", .0.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Closed(Option<String>),
    /// The daemon sent something that is not a JSON-RPC response.
    #[error("unexpected reply from the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    /// True when the daemon does not seem to be running at the endpoint.
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::Connect { source, .. }
            if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused))
    }
}

/// One response, matched to its call by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id the call carried.
    pub id: Value,
    /// The result, or the error the daemon answered.
    pub result: Result<Value, RpcError>,
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

enum Socket {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Socket {
    fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Unix(s) => s.set_read_timeout(timeout),
            Socket::Tcp(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.read(buf),
            Socket::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.write(buf),
            Socket::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blocking JSON-RPC 2.0 connection to junctiond.
pub struct Client {
    reader: BufReader<Socket>,
    writer: BufWriter<Socket>,
    next_id: u64,
    /// Responses read while waiting for another id (pipelining).
    early: HashMap<String, Response>,
    line: String,
}

impl Client {
    /// Connects to `endpoint`.
    pub fn connect(endpoint: &Endpoint) -> Result<Client, ClientError> {
        let connect_err = |source| ClientError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let socket = match endpoint {
            Endpoint::Unix(path) => Socket::Unix(UnixStream::connect(path).map_err(connect_err)?),
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).map_err(connect_err)?;
                stream.set_nodelay(true)?;
                Socket::Tcp(stream)
            }
        };
        let reader = BufReader::new(socket.try_clone()?);
        Ok(Client {
            reader,
            writer: BufWriter::new(socket),
            next_id: 1,
            early: HashMap::new(),
            line: String::new(),
        })
    }

    /// Bounds how long a read may wait for the daemon (None: forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.reader.get_ref().set_read_timeout(timeout)?;
        Ok(())
    }

    /// Calls `method` and waits for its result.
    pub fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        let id = self.send(method, params)?;
        self.flush()?;
        self.wait(id)?.result.map_err(ClientError::Rpc)
    }

    /// Sends a notification (no response comes back).
    pub fn notify(&mut self, method: &str, params: Option<Value>) -> Result<(), ClientError> {
        let mut message = json!({"jsonrpc": "2.0", "method": method});
        if let Some(params) = params {
            message["params"] = params;
        }
        self.write_line(&message)?;
        self.flush()
    }

    /// Queues a call without waiting (pipelining); returns its id. Call
    /// [`Client::flush`] then [`Client::wait`] or [`Client::recv`].
    pub fn send(&mut self, method: &str, params: Option<Value>) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if let Some(params) = params {
            message["params"] = params;
        }
        self.write_line(&message)?;
        Ok(id)
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.writer.flush()?;
        Ok(())
    }

    /// Waits for the response to call `id`, keeping others for later.
    pub fn wait(&mut self, id: u64) -> Result<Response, ClientError> {
        let key = id.to_string();
        if let Some(response) = self.early.remove(&key) {
            return Ok(response);
        }
        loop {
            let response = self.read_response()?;
            // An error with id null is the daemon failing to read a request
            // at all: it belongs to whoever is waiting.
            if response.id.as_u64() == Some(id)
                || (response.id.is_null() && response.result.is_err())
            {
                return Ok(response);
            }
            self.early.insert(response.id.to_string(), response);
        }
    }

    /// Reads the next response, whatever its id.
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        if let Some(key) = self.early.keys().next().cloned() {
            if let Some(response) = self.early.remove(&key) {
                return Ok(response);
            }
        }
        self.read_response()
    }

    /// Sends a batch and returns the results of its calls in the order given
    /// (notifications have none).
    pub fn batch(
        &mut self,
        entries: &[BatchEntry],
    ) -> Result<Vec<Result<Value, RpcError>>, ClientError> {
        let mut ids = Vec::new();
        let mut messages = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut message = json!({"jsonrpc": "2.0", "method": entry.method});
            if let Some(params) = &entry.params {
                message["params"] = params.clone();
            }
            if !entry.notification {
                let id = self.next_id;
                self.next_id += 1;
                message["id"] = json!(id);
                ids.push(id);
            }
            messages.push(message);
        }
        self.write_line(&Value::Array(messages))?;
        self.flush()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self.read_value()?;
        let Value::Array(items) = reply else {
            return Err(ClientError::Protocol(format!(
                "expected a batch array, got {reply}"
            )));
        };
        let mut by_id: HashMap<String, Response> = HashMap::new();
        for item in items {
            let response = parse_response(item)?;
            by_id.insert(response.id.to_string(), response);
        }
        ids.iter()
            .map(|id| {
                by_id
                    .remove(&id.to_string())
                    .map(|r| r.result)
                    .ok_or_else(|| {
                        ClientError::Protocol(format!("batch reply has no response for id {id}"))
                    })
            })
            .collect()
    }

    /// Writes raw bytes (for tests and tools that speak the wire directly).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.write_all(bytes)?;
        self.flush()
    }

    /// Reads one raw line (without its newline); None at EOF.
    pub fn read_line(&mut self) -> Result<Option<String>, ClientError> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Ok(None);
        }
        Ok(Some(self.line.trim_end_matches(['\n', '\r']).to_string()))
    }

    fn write_line(&mut self, message: &Value) -> Result<(), ClientError> {
        serde_json::to_writer(&mut self.writer, message).map_err(io::Error::from)?;
        self.writer.write_all(b"\n")?;
        Ok(())
    }

    fn read_value(&mut self) -> Result<Value, ClientError> {
        let line = self.read_line()?.ok_or(ClientError::Closed(None))?;
        serde_json::from_str(&line).map_err(|_| {
            // A daemon refusing the connection says why in plain text.
            ClientError::Closed(Some(line.clone()))
        })
    }

    fn read_response(&mut self) -> Result<Response, ClientError> {
        let value = self.read_value()?;
        parse_response(value)
    }
}

fn parse_response(value: Value) -> Result<Response, ClientError> {
    let Value::Object(mut object) = value else {
        return Err(ClientError::Protocol(format!(
            "not a response object: {value}"
        )));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    if let Some(result) = object.remove("result") {
        return Ok(Response {
            id,
            result: Ok(result),
        });
    }
    let Some(error) = object.remove("error") else {
        return Err(ClientError::Protocol(
            "response has neither result nor error".into(),
        ));
    };
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)")
        .to_string();
    let mut rpc = RpcError::new(code as i32, message);
    rpc.data = error.get("data").cloned();
    Ok(Response {
        id,
        result: Err(rpc),
    })
}
