//! Listeners and accepted streams: the only code that knows Unix from TCP.

pub(crate) mod activation;
pub(crate) mod listener;
pub mod proxy;
pub(crate) mod sockpath;
pub(crate) mod stream;
pub mod tls;
pub mod tuning;

pub use listener::BindError;
pub(crate) use listener::Listener;
pub use sockpath::PathProblem;
pub(crate) use stream::Stream;

use serde::Serialize;

/// The two transports a client can connect over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A Unix-domain stream socket.
    Unix = 0,
    /// TCP (loopback by default).
    Tcp = 1,
}

impl Transport {
    /// The name used in logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
        }
    }
}
