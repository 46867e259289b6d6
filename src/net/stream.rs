//! An accepted connection over either transport.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::Transport;
use crate::access::{Peer, peer_credentials};

/// A non-blocking stream socket, Unix or TCP.
#[derive(Debug)]
pub enum Stream {
    /// A Unix-domain stream.
    Unix(UnixStream),
    /// A TCP stream.
    Tcp(TcpStream),
}

impl Stream {
    /// Which transport this stream came in on.
    pub fn transport(&self) -> Transport {
        match self {
            Stream::Unix(_) => Transport::Unix,
            Stream::Tcp(_) => Transport::Tcp,
        }
    }

    /// `readv` into up to two regions of a ring buffer.
    pub fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read_vectored(bufs),
            Stream::Tcp(s) => s.read_vectored(bufs),
        }
    }

    /// `writev` from the write queue.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tcp(s) => s.write_vectored(bufs),
        }
    }

    /// `recv(2)` into one region, the event loop's common read. Every
    /// argument is passed as a full word, as `syscall(2)` reads them.
    ///
    /// Made through `syscall(2)`: glibc's `recv` and `send` are thread
    /// cancellation points, which in a multi-threaded process (the worker
    /// pool) wrap every call in two atomic updates of the thread's cancel
    /// state, about 2% of the loop's CPU at P=16 in `perf`. The daemon never
    /// cancels a thread, so it has no use for them.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the
        // duration of the call, and the descriptor is this stream's own, open
        // while `self` is borrowed. recvfrom(2) with null address arguments
        // writes nothing else.
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                libc::c_long::from(self.as_raw_fd()),
                buf.as_mut_ptr(),
                buf.len(),
                0 as libc::c_long,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            )
        };
        syscall_result(n)
    }

    /// `send(2)` from one region, without SIGPIPE (see [`Stream::recv`]).
    pub fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the
        // duration of the call, and the descriptor is this stream's own, open
        // while `self` is borrowed; sendto(2) with no address reads nothing
        // else.
        let n = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                libc::c_long::from(self.as_raw_fd()),
                buf.as_ptr(),
                buf.len(),
                libc::c_long::from(libc::MSG_NOSIGNAL),
                std::ptr::null::<libc::sockaddr>(),
                0 as libc::c_long,
            )
        };
        syscall_result(n)
    }

    /// Plain write, for the one-line messages sent before a close.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    /// Half-closes the stream in the given direction.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    /// The socket options as the kernel reports them.
    pub fn read_back(&self) -> serde_json::Value {
        match self {
            Stream::Unix(s) => super::tuning::read_back_unix(s),
            Stream::Tcp(s) => super::tuning::read_back_tcp(s),
        }
    }

    /// Re-arms TCP_QUICKACK after a read (a no-op on Unix sockets).
    pub fn rearm_quickack(&self) {
        if let Stream::Tcp(s) = self {
            super::tuning::rearm_quickack(s);
        }
    }

    /// True when the peer is gone altogether, not just done sending: the
    /// kernel reports POLLHUP (a Unix peer closed its socket; a TCP
    /// connection whose both directions ended) or POLLERR (a TCP reset).
    /// A TCP peer that sent FIN shows neither until a write reaches its
    /// closed socket and its kernel answers with a reset.
    pub fn peer_gone(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: self.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack, a count of 1 and a zero
        // timeout: poll(2) only reads the descriptor's state and writes
        // `revents`.
        let ready = unsafe { libc::poll(&mut fd, 1, 0) };
        ready > 0 && fd.revents & (libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Who is at the other end: a Unix peer's credentials, a TCP peer's address.
    pub fn identity(&self) -> Peer {
        match self {
            Stream::Unix(s) => Peer::Unix(peer_credentials(s).ok()),
            Stream::Tcp(s) => Peer::Tcp(s.peer_addr().ok()),
        }
    }
}

impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.register(registry, token, interests),
            Stream::Tcp(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.reregister(registry, token, interests),
            Stream::Tcp(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.deregister(registry),
            Stream::Tcp(s) => s.deregister(registry),
        }
    }
}

/// What `syscall(2)` returned, as `read`/`write` would: a count, or the
/// error it left in errno.
fn syscall_result(n: libc::c_long) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
