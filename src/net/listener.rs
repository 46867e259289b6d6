//! Binding the Unix and TCP listeners, with the backlog we choose, and the
//! stale-socket rule: unlink a socket file only when nothing answers there.

use std::fs;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockAddr, Socket, Type};

use super::tuning::{self, SocketOptions};
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
    /// The fallback socket directory is not private to this user.
    #[error(
        "{0} is not a private directory of this user (owner and mode 0700 expected); remove it or set XDG_RUNTIME_DIR or --unix"
    )]
    UnsafeDirectory(PathBuf),
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
        /// The inode bound, so that shutdown never removes another daemon's file.
        inode: u64,
    },
    /// A TCP listener.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds the Unix socket at `path` with file mode `mode` and, when set,
    /// owner uid and group gid.
    pub fn bind_unix(
        path: &Path,
        mode: u32,
        owner: (Option<u32>, Option<u32>),
        backlog: i32,
    ) -> Result<Self, BindError> {
        prepare_socket_path(path)?;
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
        let inode = fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
        let std_listener = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
        Ok(Listener::Unix {
            listener: UnixListener::from_std(std_listener),
            path: path.to_path_buf(),
            inode,
        })
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

    /// Removes the socket file if it is still the one this listener bound.
    pub fn remove_socket_file(&self) {
        if let Listener::Unix { path, inode, .. } = self {
            match fs::metadata(path) {
                Ok(meta) if meta.ino() == *inode => {
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

/// Creates the parent directory (0700) and clears a stale socket file.
fn prepare_socket_path(path: &Path) -> Result<(), BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("cannot create directory", dir.display()))?;
        } else if Some(dir) == default_unix_path().parent() && default_is_fallback() {
            // /tmp is shared: someone else may have made the directory first.
            check_private_dir(dir, nix::unistd::getuid().as_raw())?;
        }
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot inspect", path.display())(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_path_buf()));
    }
    match StdUnixStream::connect(path) {
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

fn default_is_fallback() -> bool {
    std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|d| d.is_empty())
}

/// Refuses a directory that another user owns or that others can write to.
fn check_private_dir(dir: &Path, uid: u32) -> Result<(), BindError> {
    let meta = fs::metadata(dir).map_err(io_err("cannot inspect", dir.display()))?;
    if meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(BindError::UnsafeDirectory(dir.to_path_buf()));
    }
    Ok(())
}

/// The default Unix socket path: `$XDG_RUNTIME_DIR/junction.sock`, else
/// `/tmp/junction-<uid>/junction.sock`.
pub fn default_unix_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("junction.sock"),
        None => {
            PathBuf::from(format!("/tmp/junction-{}", nix::unistd::getuid())).join("junction.sock")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_private_directory_of_ours_is_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uid = nix::unistd::getuid().as_raw();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(check_private_dir(dir.path(), uid).is_ok());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(matches!(
            check_private_dir(dir.path(), uid),
            Err(BindError::UnsafeDirectory(_))
        ));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(matches!(
            check_private_dir(dir.path(), uid + 1),
            Err(BindError::UnsafeDirectory(_))
        ));
    }
}
