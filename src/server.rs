//! The public face of the daemon: bind with a [`Config`] and a [`Router`],
//! read back the bound addresses, run, and stop through a [`ShutdownHandle`].
//!
//! ```no_run
//! use junction::{Config, Mode, Router, Server};
//!
//! let mut router = Router::new();
//! router.typed("math.add", "adds two integers", Mode::Inline, |(a, b): (i64, i64)| Ok(a + b))?;
//! let server = Server::bind(&Config::default(), router)?;
//! println!("listening on {:?}", server.tcp_addr());
//! server.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::Poll;
use serde_json::json;

use crate::access::{NamedToken, SHORT_TOKEN, generate_token_file, token_path};
use crate::config::{Backend, Config};
use crate::conn::Timeouts;
use crate::dispatch::Limits;
use crate::methods::register_builtins;
use crate::net::activation::{self, ActivationError};
use crate::net::tuning;
use crate::net::{BindError, Listener, Transport};
use crate::notify::Notifier;
use crate::reactor::epoll::{EpollLoop, WAKER};
use crate::reactor::{LoopConfig, Waker};
use crate::reload::{ConfigSource, LogSetter, ReloadError, ReloadReport, Reloader};
use crate::router::{Context, Router, RouterError};
use crate::stats::Stats;
use crate::workers::WorkerPool;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The router clashes with the built-in methods.
    #[error("cannot install the built-in methods: {0}")]
    Router(#[from] RouterError),
    /// A non-loopback TCP address without TLS plus a token, or mutual TLS (protected mode).
    #[error(
        "refusing to listen on {0} without TLS and an auth token, or mutual TLS (protected mode): \
         anyone on the network path could read the traffic or call every method. Set tls-cert and \
         tls-key with auth-token-file (clients then send rpc.auth first) or with tls-client-ca \
         (mutual TLS), and keep tls-mode = only; or listen on loopback (e.g. --tcp 127.0.0.1:7710); \
         or turn protected mode off (--protected-mode false) if something else guards the port \
         (see docs/remote.md)"
    )]
    Unprotected(SocketAddr),
    /// The TLS certificate, key or client CA cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    /// tcp-anonymous with PROXY headers: the real clients are not on loopback.
    #[error(
        "refusing tcp-anonymous with proxy-protocol-from: the clients a proxy forwards are not on \
         loopback, and anonymous TCP is for loopback clients only; give them tokens or certificates"
    )]
    AnonymousBehindProxy,
    /// A token too short to face a network.
    #[error(
        "refusing to listen on {addr} with the token {name:?} of {len} bytes: tokens must be at \
         least {min} bytes on a non-loopback address (use e.g. `head -c 32 /dev/urandom | xxd -p -c 64`)"
    )]
    ShortToken {
        /// The address.
        addr: SocketAddr,
        /// The token's name (never its secret).
        name: String,
        /// Its length.
        len: usize,
        /// The least length.
        min: usize,
    },
    /// Anonymous TCP asked for on an address that is not loopback.
    #[error(
        "refusing tcp-anonymous on {0}: anonymous TCP is for loopback addresses only; \
         give clients tokens (auth-token-file) instead"
    )]
    AnonymousNotLoopback(SocketAddr),
    /// The generated token could not be written.
    #[error("cannot write the generated auth token to {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The service manager passed sockets that cannot be used.
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// The service manager passed a socket for a transport the configuration turns off.
    #[error(
        "the service manager passed a {transport} socket ({address}) but {transport} is off in \
         the configuration; turn it on or remove the socket from the .socket unit",
        transport = .0.name(), address = .1
    )]
    ActivationOff(Transport, String),
    /// `--backend io-uring` was asked for where io_uring cannot run.
    #[error("{0}; run with --backend epoll (or auto)")]
    Backend(String),
    /// The poller, the waker or a worker thread could not be created, or polling failed.
    #[error("event loop: {0}")]
    Io(#[from] io::Error),
    /// Federation over NATS could not start (`--nats`).
    #[error("{0}")]
    Federation(#[from] crate::federation::FederationError),
}

/// Asks a running server to stop: it stops accepting, finishes in-flight
/// requests (up to the drain timeout), removes its socket file and returns.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Requests the shutdown; safe to call from any thread, more than once.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::Relaxed);
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the event loop for shutdown");
        }
    }
}

/// Reloads the configuration of a running server from any thread (the
/// daemon's SIGHUP), then wakes the loop so that it judges open
/// connections under the new policy at once.
#[derive(Clone)]
pub struct ReloadHandle {
    context: Arc<Context>,
    waker: Arc<Waker>,
}

impl ReloadHandle {
    /// Reloads; on error the old configuration stays (the reason is logged too).
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let result = crate::reload::reload(&self.context);
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the event loop after a reload");
        }
        result
    }
}

/// The event loop driver chosen at bind time.
enum Driver {
    Epoll(Poll),
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    Uring,
}

impl Driver {
    fn name(&self) -> &'static str {
        match self {
            Driver::Epoll(_) => Backend::Epoll.name(),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Driver::Uring => Backend::IoUring.name(),
        }
    }
}

/// Picks the backend: io_uring when asked for (or, for auto, when the
/// kernel allows it), else epoll; with its waker.
fn choose_driver(backend: Backend) -> Result<(Driver, Waker), ServerError> {
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    if backend != Backend::Epoll {
        match crate::reactor::uring::probe() {
            Ok(()) => return Ok((Driver::Uring, crate::reactor::uring::waker()?)),
            Err(why) if backend == Backend::IoUring => {
                return Err(ServerError::Backend(why.to_string()));
            }
            Err(why) => tracing::warn!("{why}; running on epoll"),
        }
    }
    #[cfg(not(all(target_os = "linux", feature = "io-uring")))]
    if backend == Backend::IoUring {
        return Err(ServerError::Backend(
            "io_uring is unavailable: this build has no io-uring backend (Linux, feature \"io-uring\")"
                .into(),
        ));
    }
    let poll = Poll::new()?;
    let waker = Waker::Mio(mio::Waker::new(poll.registry(), WAKER)?);
    Ok((Driver::Epoll(poll), waker))
}

/// A bound, not yet running server.
pub struct Server {
    driver: Driver,
    waker: Arc<Waker>,
    listeners: Vec<Listener>,
    context: Arc<Context>,
    config: Config,
    shutdown: Arc<AtomicBool>,
    /// The token file the server wrote (no token was configured), removed at the end.
    generated_token: Option<TokenFile>,
}

/// A token file the server generated: removed when the server is done.
#[derive(Debug)]
struct TokenFile(PathBuf);

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Refuses TCP settings that would let the network in too easily: no token
/// on a public address (protected mode), anonymous TCP off loopback, and
/// tokens under [`SHORT_TOKEN`] bytes off loopback.
pub(crate) fn check_tcp_access(addr: SocketAddr, config: &Config) -> Result<(), ServerError> {
    if config.access.tcp_anonymous && !config.remote.proxies.is_empty() {
        return Err(ServerError::AnonymousBehindProxy);
    }
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if config.access.tcp_anonymous {
        return Err(ServerError::AnonymousNotLoopback(addr));
    }
    if let Some(short) = config
        .access
        .tokens
        .iter()
        .find(|t| t.token.len() < SHORT_TOKEN)
    {
        return Err(ServerError::ShortToken {
            addr,
            name: short.name.clone(),
            len: short.token.len(),
            min: SHORT_TOKEN,
        });
    }
    // Off loopback, protected mode wants encryption and a credential that
    // did not come from a local file: TLS only, plus a configured token or
    // a client certificate every peer must show.
    let remote = &config.remote;
    let tls_only = remote.tls() && !remote.plaintext;
    let credential = remote.mutual() || !config.access.tokens.is_empty();
    if config.protected_mode && !(tls_only && credential) {
        return Err(ServerError::Unprotected(addr));
    }
    Ok(())
}

/// Writes a fresh token for the daemon's user beside the Unix socket (or,
/// with it off, in the default socket's directory), mode 0600.
fn write_generated_token(
    unix: Option<&Path>,
    port: u16,
) -> Result<(PathBuf, crate::access::AuthToken), ServerError> {
    let path = token_path(unix, port);
    if unix.is_none() {
        if let Some(dir) = path.parent() {
            ensure_private_dir(dir).map_err(|source| ServerError::TokenFile {
                path: path.clone(),
                source,
            })?;
        }
    }
    let token = generate_token_file(&path).map_err(|source| ServerError::TokenFile {
        path: path.clone(),
        source,
    })?;
    tracing::info!(path = %path.display(), "TCP connections must send rpc.auth first: the daemon's user finds the token in this file (mode 0600), which `junction --tcp` reads by itself");
    Ok((path, token))
}

/// Makes `dir` (mode 0700) when missing and checks it is ours and private,
/// without following a symlink.
fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let ours = meta.uid() == nix::unistd::geteuid().as_raw();
    let private = meta.permissions().mode() & 0o022 == 0;
    if !meta.is_dir() || !ours || !private {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of this user closed to others",
                dir.display()
            ),
        ));
    }
    Ok(())
}

impl Server {
    /// Binds the configured listeners and installs the built-in methods
    /// beside the router's own.
    pub fn bind(config: &Config, router: Router) -> Result<Server, ServerError> {
        if let Some(addr) = config.tcp {
            check_tcp_access(addr, config)?;
        }
        // Read before any socket is bound, so a bad file leaves nothing behind.
        let remote = crate::net::tls::Remote::load(&config.remote)?;
        let mut methods = Router::new();
        register_builtins(&mut methods)?;
        methods.merge(router)?;
        let (driver, waker) = choose_driver(config.backend)?;
        let waker = Arc::new(waker);
        let backlog = i32::try_from(config.backlog).unwrap_or(i32::MAX);
        let inherited = activation::take()?;
        let activated = !inherited.is_empty();
        let inherited_tcp = inherited.tcp.as_ref().map(|(_, addr)| *addr);
        if let Some(addr) = inherited_tcp {
            check_tcp_access(addr, config)?;
        }
        let mut listeners = Vec::new();
        match (inherited.unix, &config.unix) {
            (Some((_, path)), None) => {
                return Err(ServerError::ActivationOff(
                    Transport::Unix,
                    path.display().to_string(),
                ));
            }
            (Some((listener, path)), Some(configured)) => {
                if &path != configured {
                    tracing::warn!(inherited = %path.display(), configured = %configured.display(), "serving the Unix socket the service manager passed, not the configured path");
                }
                listeners.push(listener);
            }
            (None, Some(path)) => {
                let owner = (config.unix_owner, config.unix_group);
                listeners.push(Listener::bind_unix(path, config.unix_mode, owner, backlog)?);
            }
            (None, None) => {}
        }
        match (inherited.tcp, config.tcp) {
            (Some((_, addr)), None) => {
                listeners.iter().for_each(Listener::remove_socket_file);
                return Err(ServerError::ActivationOff(Transport::Tcp, addr.to_string()));
            }
            (Some((listener, addr)), Some(configured)) => {
                if addr != configured && configured.port() != 0 {
                    tracing::warn!(inherited = %addr, %configured, "serving the TCP socket the service manager passed, not the configured address");
                }
                listeners.push(listener);
            }
            (None, Some(addr)) => match Listener::bind_tcp(addr, backlog, &config.sockets) {
                Ok(listener) => listeners.push(listener),
                Err(e) => {
                    // Leave no socket file behind for a daemon that never ran.
                    listeners.iter().for_each(Listener::remove_socket_file);
                    return Err(e.into());
                }
            },
            (None, None) => {}
        }
        if activated {
            tracing::info!(
                listeners = listeners.len(),
                "socket-activated: serving the sockets the service manager passed (they are never removed at stop)"
            );
        }
        let mut access = config.access.clone();
        let mut generated_token = None;
        if let Some(addr) = listeners.iter().find_map(Listener::tcp_addr) {
            if access.tokens.is_empty() && !access.tcp_anonymous {
                let unix = listeners.iter().find_map(|l| match l {
                    Listener::Unix { path, .. } => Some(path.as_path()),
                    Listener::Tcp(_) => None,
                });
                match write_generated_token(unix, addr.port()) {
                    Ok((path, token)) => {
                        access.tokens.push(NamedToken::owner(token));
                        generated_token = Some(TokenFile(path));
                    }
                    Err(e) => {
                        listeners.iter().for_each(Listener::remove_socket_file);
                        return Err(e);
                    }
                }
            }
        }
        let stats = Arc::new(
            Stats::new(config.workers)
                .with_memory_limit(config.max_buffer_memory)
                .with_backend(driver.name()),
        );
        stats.record_socket(
            "backlog",
            json!({
                "requested": config.backlog,
                "somaxconn": tuning::somaxconn(),
                "effective": tuning::effective_backlog(config.backlog),
            }),
        );
        for listener in &listeners {
            let key = format!("{}_listener", listener.transport().name());
            stats.record_socket(&key, listener.read_back());
        }
        let context = Context::new(methods, stats)
            .with_remote(remote)
            .with_access(access)
            .with_bus(config.bus.clone())
            .with_notifier(Notifier::from_env());
        context
            .observe()
            .slowlog
            .configure(config.slowlog_threshold, config.slowlog_max_len);
        Ok(Server {
            driver,
            waker,
            listeners,
            context: Arc::new(context),
            config: config.clone(),
            generated_token,
            shutdown: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The Unix socket path, when that listener is on.
    pub fn unix_path(&self) -> Option<&Path> {
        self.listeners.iter().find_map(|l| match l {
            Listener::Unix { path, .. } => Some(path.as_path()),
            Listener::Tcp(_) => None,
        })
    }

    /// The bound TCP address (the real port when port 0 was configured).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.listeners.iter().find_map(Listener::tcp_addr)
    }

    /// Where the server listens, one line per listener.
    pub fn listening(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|l| format!("{} {}", l.transport().name(), l.local_addr()))
            .collect()
    }

    /// The listener options and backlog as the kernel took them.
    pub fn socket_report(&self) -> serde_json::Value {
        self.context.stats().sockets()
    }

    /// The token file the server generated for the daemon's user (TCP on,
    /// no token configured, anonymous TCP off); removed when it stops.
    pub fn token_file(&self) -> Option<&Path> {
        self.generated_token.as_ref().map(|t| t.0.as_path())
    }

    /// The shared state handlers see (methods, counters).
    pub fn context(&self) -> &Arc<Context> {
        &self.context
    }

    /// Lets SIGHUP and `rpc.reload` re-read the configuration through
    /// `source` (the file under the same flags and environment) and set the
    /// log filter through `log`; see [`crate::reload`] for what reloads.
    pub fn enable_reload(&self, source: ConfigSource, log: Option<LogSetter>) {
        let generated = self.generated_token.as_ref().and_then(|_| {
            self.context
                .access()
                .tokens
                .iter()
                .find(|t| t.name == crate::policy::OWNER_TOKEN)
                .cloned()
        });
        let reloader = Reloader::new(source, log, self.tcp_addr(), generated, self.config.clone());
        crate::reload::install(&self.context, reloader);
    }

    /// A handle that reloads the configuration from any thread (SIGHUP).
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            context: Arc::clone(&self.context),
            waker: Arc::clone(&self.waker),
        }
    }

    /// A handle that stops the server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: Arc::clone(&self.shutdown),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs the loop on this thread until shut down and drained.
    pub fn run(self) -> Result<(), ServerError> {
        let workers = WorkerPool::start(
            self.config.workers,
            self.config.queue,
            Arc::clone(&self.context),
            Arc::clone(&self.waker),
        )?;
        let loop_config = LoopConfig {
            limits: Limits {
                max_frame: self.config.max_frame,
                max_batch: self.config.max_batch,
                max_output: self.config.max_output,
                max_output_hard: self.config.max_output_hard,
                max_in_flight: self.config.max_in_flight,
                max_buffer_memory: self.config.max_buffer_memory,
            },
            max_connections: self.config.max_connections,
            sniff_timeout: self.config.sniff_timeout,
            auth_timeout: self.config.auth_timeout,
            max_unauthenticated: self.config.max_unauthenticated,
            drain_timeout: self.config.drain_timeout,
            shutdown_grace: self.config.shutdown_grace,
            timeouts: Timeouts {
                frame: self.config.frame_timeout,
                idle: self.config.idle_timeout,
                write: self.config.write_timeout,
            },
            sockets: self.config.sockets,
        };
        let federation = crate::federation::start(
            &self.config.federation,
            &self.context,
            Arc::clone(&self.waker),
        )?;
        match self.driver {
            Driver::Epoll(poll) => EpollLoop::new(
                poll,
                self.listeners,
                self.context,
                workers,
                loop_config,
                self.shutdown,
            )?
            .with_federation(federation)
            .run()?,
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Driver::Uring => crate::reactor::uring::UringLoop::new(
                self.listeners,
                self.context,
                workers,
                loop_config,
                self.shutdown,
                self.waker,
            )?
            .with_federation(federation)
            .run()?,
        }
        Ok(())
    }

    /// The event loop backend that runs: "epoll" or "io-uring".
    pub fn backend(&self) -> &'static str {
        self.driver.name()
    }

    /// Runs the server on a new thread; returns the handle to stop it and the
    /// thread to join (used by tests and by programs embedding the daemon).
    pub fn spawn(self) -> io::Result<RunningServer> {
        let handle = self.shutdown_handle();
        let unix = self.unix_path().map(Path::to_path_buf);
        let tcp = self.tcp_addr();
        let token_file = self.token_file().map(Path::to_path_buf);
        let thread = std::thread::Builder::new()
            .name("junction-loop".into())
            .spawn(move || self.run())?;
        Ok(RunningServer {
            handle,
            thread: Some(thread),
            unix,
            tcp,
            token_file,
        })
    }
}

/// A server running on its own thread; dropping it shuts it down.
pub struct RunningServer {
    handle: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
    unix: Option<PathBuf>,
    tcp: Option<SocketAddr>,
    token_file: Option<PathBuf>,
}

impl RunningServer {
    /// The token file the server generated, if it did (see [`Server::token_file`]).
    pub fn token_file(&self) -> Option<&Path> {
        self.token_file.as_deref()
    }

    /// The Unix socket path, when on.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_deref()
    }

    /// The bound TCP address, when on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The handle that stops it.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Shuts down and waits for the loop to finish.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServerError> {
        self.handle.shutdown();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServerError::Io(io::Error::other("the event loop panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            tracing::error!(error = %e, "server stopped with an error");
        }
    }
}
