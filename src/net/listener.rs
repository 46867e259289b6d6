//! Binding the Unix and TCP listeners, with the backlog we choose, and the
//! Unix path's rules: a directory we can trust (`sockpath`), a lock beside
//! the socket held for the listener's life, and the stale-socket rule: unlink
//! a socket file only while holding the lock and only when nothing answers.

use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use nix::fcntl::Flock;
use socket2::{Domain, SockAddr, Socket, Type};

use super::sockpath::{self, DirError, LockError, PathProblem};
use super::tuning::{self, SocketOptions};

pub use super::sockpath::default_unix_path;
use super::{Stream, Transport};

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A live daemon answers on the socket path.
    #[error(
        "another junctiond is listening on {0} (stop it first, or pick another path with --unix)"
    )]
    AlreadyRunning(PathBuf),
    /// The path exists and is not a socket: never removed.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Another daemon holds the lock beside the socket path.
    #[error(
        "another junctiond is listening on {path} ({} holds the lock {lock}); stop it first, or pick another path with --unix",
        .pid.map_or_else(|| "a process whose pid it has not written yet".to_string(), |p| format!("pid {p}"))
    )]
    Locked {
        /// The socket path.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// A directory, the socket or the lock file on the way cannot be trusted.
    #[error(
        "{path} {problem}; refusing to use it (fix or remove it, or pick another path with --unix or XDG_RUNTIME_DIR)"
    )]
    Unsafe {
        /// The path at fault.
        path: PathBuf,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// A system call failed.
    #[error("{what} {target}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path or address.
        target: String,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(
    what: &'static str,
    target: impl std::fmt::Display,
) -> impl FnOnce(io::Error) -> BindError {
    let target = target.to_string();
    move |source| BindError::Io {
        what,
        target,
        source,
    }
}

/// A listening socket the loop accepts from.
#[derive(Debug)]
pub enum Listener {
    /// A Unix-domain listener and the file it owns.
    Unix {
        /// The mio listener.
        listener: UnixListener,
        /// The socket file, removed on shutdown.
        path: PathBuf,
        /// The device and inode bound, so that shutdown never removes another
        /// daemon's file; `None` for a socket inherited from the service
        /// manager, which the daemon did not create and never removes.
        inode: Option<(u64, u64)>,
        /// The lock beside the socket, held as long as the listener lives
        /// (none for an inherited socket: see `activation`).
        _lock: Option<Flock<File>>,
    },
    /// A TCP listener.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds the Unix socket at `path` with file mode `mode` and, when set,
    /// owner uid and group gid, after checking its directory and taking the
    /// lock `<path>.lock` (see `sockpath` for the rules).
    pub fn bind_unix(
        path: &Path,
        mode: u32,
        owner: (Option<u32>, Option<u32>),
        backlog: i32,
    ) -> Result<Self, BindError> {
        let lock = prepare_socket_path(path, owner.0)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
            .map_err(io_err("cannot create a socket for", path.display()))?;
        let addr = SockAddr::unix(path).map_err(io_err("invalid socket path", path.display()))?;
        socket
            .bind(&addr)
            .map_err(io_err("cannot bind", path.display()))?;
        // Set the mode before listen(): until then nobody can connect.
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot chmod", path.display()))?;
        if owner != (None, None) {
            if let Err(e) = std::os::unix::fs::chown(path, owner.0, owner.1) {
                let _ = fs::remove_file(path);
                return Err(io_err("cannot chown", path.display())(e));
            }
        }
        socket
            .listen(backlog)
            .map_err(io_err("cannot listen on", path.display()))?;
        socket
            .set_nonblocking(true)
            .map_err(io_err("cannot set non-blocking", path.display()))?;
        let inode = fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let std_listener = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
        Ok(Listener::Unix {
            listener: UnixListener::from_std(std_listener),
            path: path.to_path_buf(),
            inode,
            _lock: Some(lock),
        })
    }

    /// A Unix listener the service manager passed (socket activation),
    /// already checked by `activation`: the daemon did not create `path`,
    /// so it takes no lock and never removes the file.
    pub(crate) fn inherited_unix(
        listener: std::os::unix::net::UnixListener,
        path: PathBuf,
    ) -> Self {
        Listener::Unix {
            listener: UnixListener::from_std(listener),
            path,
            inode: None,
            _lock: None,
        }
    }

    /// A TCP listener the service manager passed (socket activation).
    pub(crate) fn inherited_tcp(listener: std::net::TcpListener) -> Self {
        Listener::Tcp(TcpListener::from_std(listener))
    }

    /// Binds a TCP listener at `addr` (port 0 picks a free port) with the
    /// listener-level socket options.
    pub fn bind_tcp(
        addr: SocketAddr,
        backlog: i32,
        options: &SocketOptions,
    ) -> Result<Self, BindError> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
            .map_err(io_err("cannot create a socket for", addr))?;
        tuning::before_tcp_listen(&socket, options);
        socket
            .bind(&addr.into())
            .map_err(io_err("cannot bind", addr))?;
        socket
            .listen(backlog)
            .map_err(io_err("cannot listen on", addr))?;
        tuning::after_tcp_listen(&socket, options);
        socket
            .set_nonblocking(true)
            .map_err(io_err("cannot set non-blocking", addr))?;
        let std_listener = std::net::TcpListener::from(OwnedFd::from(socket));
        Ok(Listener::Tcp(TcpListener::from_std(std_listener)))
    }

    /// Which transport this listener serves.
    pub fn transport(&self) -> Transport {
        match self {
            Listener::Unix { .. } => Transport::Unix,
            Listener::Tcp(_) => Transport::Tcp,
        }
    }

    /// Where clients connect, for logs and the start-up block.
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Unix { path, .. } => path.display().to_string(),
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("<unknown: {e}>"), |a| a.to_string()),
        }
    }

    /// The bound TCP address (with the real port when 0 was asked for).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
    }

    /// Accepts one pending connection (non-blocking, close-on-exec) and
    /// applies the per-connection socket options.
    pub fn accept(&self, options: &SocketOptions) -> io::Result<Stream> {
        match self {
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept()?;
                tuning::accepted_unix(&stream, options);
                Ok(Stream::Unix(stream))
            }
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept()?;
                tuning::accepted_tcp(&stream, options);
                Ok(Stream::Tcp(stream))
            }
        }
    }

    /// Wraps a connection accepted on this listener by other means (an
    /// io_uring accept, already non-blocking) and applies the options.
    pub fn adopt(&self, fd: OwnedFd, options: &SocketOptions) -> Stream {
        match self {
            Listener::Unix { .. } => {
                let stream = UnixStream::from_std(StdUnixStream::from(fd));
                tuning::accepted_unix(&stream, options);
                Stream::Unix(stream)
            }
            Listener::Tcp(_) => {
                let stream = TcpStream::from_std(std::net::TcpStream::from(fd));
                tuning::accepted_tcp(&stream, options);
                Stream::Tcp(stream)
            }
        }
    }

    /// The listening socket's descriptor (for a completion driver's accept).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Unix { listener, .. } => listener.as_raw_fd(),
            Listener::Tcp(listener) => listener.as_raw_fd(),
        }
    }

    /// The listener's options as the kernel reports them.
    pub fn read_back(&self) -> serde_json::Value {
        match self {
            Listener::Tcp(listener) => tuning::read_back_tcp_listener(listener),
            Listener::Unix { path, .. } => serde_json::json!({ "path": path }),
        }
    }

    /// Removes the socket file if it is still the one this listener bound
    /// (the lock file stays: see `sockpath::take_lock`).
    pub fn remove_socket_file(&self) {
        if let Listener::Unix {
            path,
            inode: Some(inode),
            ..
        } = self
        {
            match fs::symlink_metadata(path) {
                Ok(meta) if (meta.dev(), meta.ino()) == *inode => {
                    if let Err(e) = fs::remove_file(path) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove socket file");
                    }
                }
                _ => {}
            }
        }
    }
}

impl Source for Listener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Listener::Unix { listener, .. } => listener.register(registry, token, interests),
            Listener::Tcp(l) => l.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Listener::Unix { listener, .. } => listener.reregister(registry, token, interests),
            Listener::Tcp(l) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Listener::Unix { listener, .. } => listener.deregister(registry),
            Listener::Tcp(l) => l.deregister(registry),
        }
    }
}

/// Checks (and makes, when missing) the socket's directory, then takes the
/// lock beside the socket: from here on no other daemon can be setting up
/// this path, so a socket that refuses connections is really stale.
fn prepare_socket_path(path: &Path, owner: Option<u32>) -> Result<Flock<File>, BindError> {
    let dir = sockpath::socket_dir(path);
    let fallback = sockpath::fallback_dir().is_some_and(|f| f == dir);
    sockpath::check_daemon_dir_at(dir, fallback).map_err(|e| match e {
        DirError::Unsafe(path, problem) => BindError::Unsafe { path, problem },
        DirError::Io(what, source) => io_err(what, dir.display())(source),
    })?;
    let lock_path = sockpath::lock_path(path);
    let lock = sockpath::take_lock(&lock_path).map_err(|e| match e {
        LockError::Held(pid) => BindError::Locked {
            path: path.to_path_buf(),
            lock: lock_path.clone(),
            pid,
        },
        LockError::Unsafe(problem) => BindError::Unsafe {
            path: lock_path.clone(),
            problem,
        },
        LockError::Io(what, source) => io_err(what, lock_path.display())(source),
    })?;
    clear_stale_socket(path, owner)?;
    Ok(lock)
}

/// How often, and how far apart, a socket that accepts while we hold the
/// lock is probed again before the start is refused (2 s in all).
const DYING_PROBES: u32 = 40;
const DYING_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Removes a socket file left by a daemon that died: only a socket (never a
/// link or another file), only one we could have made (owned by us or the
/// configured `--unix-owner`), and only when it refuses connections.
fn clear_stale_socket(path: &Path, owner: Option<u32>) -> Result<(), BindError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot inspect", path.display())(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(BindError::Unsafe {
            path: path.to_path_buf(),
            problem: PathProblem::Symlink,
        });
    }
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_path_buf()));
    }
    let euid = sockpath::euid();
    if meta.uid() != euid && Some(meta.uid()) != owner {
        return Err(BindError::Unsafe {
            path: path.to_path_buf(),
            problem: PathProblem::Owner {
                owner: meta.uid(),
                trusted: format!("uid {euid} (this daemon's user)"),
            },
        });
    }
    // We hold the lock, so no junctiond is starting or running here. A socket
    // that still accepts belongs to one that just died (an io_uring ring is
    // torn down after its process, holding the listener a little longer), or
    // to a program that takes no lock: ask again for a bounded while.
    let mut probes = 0;
    let probe = loop {
        match StdUnixStream::connect(path) {
            Ok(_) if probes < DYING_PROBES => {
                probes += 1;
                std::thread::sleep(DYING_PAUSE);
            }
            other => break other,
        }
    };
    match probe {
        Ok(_) => Err(BindError::AlreadyRunning(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale socket file");
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("cannot remove stale socket", path.display())(e)),
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot probe existing socket", path.display())(e)),
    }
}
