//! Socket activation: the listeners a service manager (systemd, or
//! `systemd-socket-activate`) bound for us and passed as descriptors 3.. with
//! `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
//!
//! Each descriptor is checked before it is trusted: `fstat` says it is a
//! socket, `SO_TYPE` a stream, `SO_ACCEPTCONN` a listening one, and
//! `getsockname` gives its family and address. It is matched to a transport
//! by its name (`FileDescriptorName=unix` / `tcp`) or, for any other name,
//! by its family. It is then made non-blocking and close-on-exec (a service
//! manager passes blocking sockets, and mio would inherit them as they are).
//!
//! An inherited Unix socket was not created by the daemon: it takes no lock
//! file and no stale-socket check (the service manager owns the path and
//! keeps the socket bound across restarts), and it is never unlinked at stop.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Socket, Type};

use super::{Listener, Transport};

/// Why the descriptors the service manager passed cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS`, `LISTEN_PID` or `LISTEN_FDNAMES` do not parse.
    #[error("socket activation: {0}")]
    Environment(io::Error),
    /// A descriptor is not a listening stream socket of a known family.
    #[error("socket activation: descriptor {fd} ({name:?}) {problem}")]
    Unusable {
        /// The descriptor.
        fd: RawFd,
        /// Its name in `LISTEN_FDNAMES`.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Two descriptors for the same transport.
    #[error(
        "socket activation: more than one {} socket was passed (descriptors {first} and {second}); pass one Unix and one TCP socket at most",
        .transport.name()
    )]
    Duplicate {
        /// The transport.
        transport: Transport,
        /// The first descriptor.
        first: RawFd,
        /// The second one.
        second: RawFd,
    },
}

/// The listeners the service manager passed, by transport.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The Unix listener and its path.
    pub unix: Option<(Listener, PathBuf)>,
    /// The TCP listener and its address.
    pub tcp: Option<(Listener, SocketAddr)>,
}

impl Inherited {
    /// True when nothing was passed (not socket-activated).
    pub fn is_empty(&self) -> bool {
        self.unix.is_none() && self.tcp.is_none()
    }
}

/// Set once the descriptors have been taken: a second server in the same
/// process must not claim (and close) them again.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the listeners passed to this process, if it was socket-activated
/// (`LISTEN_PID` is our pid); an empty set otherwise, or when they were
/// already taken by an earlier call.
pub fn take() -> Result<Inherited, ActivationError> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(ActivationError::Environment)?
        .collect();
    if fds.is_empty() || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Inherited::default());
    }
    let mut inherited = Inherited::default();
    let mut seen: [Option<RawFd>; 2] = [None, None];
    for (fd, name) in fds {
        // SAFETY: the service manager passed descriptors 3..3+LISTEN_FDS to
        // this very process (LISTEN_PID checked by sd_notify); nothing else in
        // the daemon uses them, and TAKEN makes sure they are owned only once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let unusable = |problem: String| ActivationError::Unusable {
            fd,
            name: name.clone(),
            problem,
        };
        let socket = check(owned).map_err(&unusable)?;
        let transport = match (name.as_str(), socket.domain()) {
            ("unix", Ok(d)) if d == Domain::UNIX => Transport::Unix,
            ("tcp", Ok(d)) if d == Domain::IPV4 || d == Domain::IPV6 => Transport::Tcp,
            ("unix" | "tcp", _) => {
                return Err(unusable(format!(
                    "is named {name:?} but is not a socket of that family"
                )));
            }
            (_, Ok(d)) if d == Domain::UNIX => Transport::Unix,
            (_, Ok(d)) if d == Domain::IPV4 || d == Domain::IPV6 => Transport::Tcp,
            (_, other) => {
                return Err(unusable(format!(
                    "is of an unsupported address family ({other:?}); pass a Unix or TCP socket"
                )));
            }
        };
        if let Some(first) = seen[transport as usize].replace(fd) {
            return Err(ActivationError::Duplicate {
                transport,
                first,
                second: fd,
            });
        }
        let local = socket
            .local_addr()
            .map_err(|e| unusable(format!("has no readable address (getsockname: {e})")))?;
        match transport {
            Transport::Unix => {
                let path = local.as_pathname().map(PathBuf::from).ok_or_else(|| {
                    unusable(
                        "is an unnamed or abstract Unix socket; pass one bound to a path".into(),
                    )
                })?;
                let std = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
                inherited.unix = Some((Listener::inherited_unix(std, path.clone()), path));
            }
            Transport::Tcp => {
                let addr = local
                    .as_socket()
                    .ok_or_else(|| unusable("has no IP address".into()))?;
                let std = std::net::TcpListener::from(OwnedFd::from(socket));
                inherited.tcp = Some((Listener::inherited_tcp(std), addr));
            }
        }
    }
    Ok(inherited)
}

/// Checks that `fd` is a listening stream socket and makes it non-blocking
/// and close-on-exec.
fn check(fd: OwnedFd) -> Result<Socket, String> {
    let stat =
        nix::sys::stat::fstat(&fd).map_err(|e| format!("cannot be inspected (fstat: {e})"))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err("is not a socket".into());
    }
    let socket = Socket::from(fd);
    match socket.r#type() {
        Ok(t) if t == Type::STREAM => {}
        Ok(_) => return Err("is not a stream socket (ListenStream= is needed)".into()),
        Err(e) => return Err(format!("cannot be inspected (SO_TYPE: {e})")),
    }
    match socket.is_listener() {
        Ok(true) => {}
        Ok(false) => return Err("is not listening (Accept=no is needed)".into()),
        Err(e) => return Err(format!("cannot be inspected (SO_ACCEPTCONN: {e})")),
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("cannot be made non-blocking: {e}"))?;
    socket
        .set_cloexec(true)
        .map_err(|e| format!("cannot be made close-on-exec: {e}"))?;
    Ok(socket)
}
