//! The client's stream: a Unix or TCP socket behind one type.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{ClientError, Endpoint};
use crate::path as sockpath;

/// A connected blocking socket.
pub(crate) enum Socket {
    Unix(UnixStream),
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(super::tls::TlsSocket),
}

/// Connects to the Unix socket at `path` once the path passes the client's
/// checks (`sockpath::check_client_path`): a planted link, a directory
/// others could write to, or a socket owned by an untrusted user would hand
/// our calls to whoever put it there.
pub(crate) fn connect_unix(endpoint: &Endpoint, path: &Path) -> Result<Socket, ClientError> {
    if let Err((at, problem)) = sockpath::check_client_path(path) {
        return Err(ClientError::Unsafe {
            endpoint: endpoint.clone(),
            path: at,
            problem,
        });
    }
    UnixStream::connect(path)
        .map(Socket::Unix)
        .map_err(|source| ClientError::Connect {
            endpoint: endpoint.clone(),
            source,
        })
}

impl Socket {
    pub(crate) fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            #[cfg(feature = "tls")]
            Socket::Tls(s) => Socket::Tls(s.try_clone()?),
        })
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Unix(s) => s.set_read_timeout(timeout),
            Socket::Tcp(s) => s.set_read_timeout(timeout),
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.tcp.set_read_timeout(timeout),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.read(buf),
            Socket::Tcp(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.write(buf),
            Socket::Tcp(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}
