//! Socket options: the presets, applying them where they belong (listener or
//! accepted socket), and reading back what the kernel actually took.
//!
//! A failing option never stops the daemon: it is logged once as a warning,
//! with the reason, and the socket is used as it is. Linux-only options are
//! compiled only there, so the crate runs on macOS with what kqueue systems have.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socket2::{SockRef, TcpKeepalive};

/// A named starting point for the socket options; single options override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// NODELAY, keepalive 60s/10s/3, kernel-tuned buffers.
    #[default]
    Default,
    /// Default plus QUICKACK and 128 KiB buffers: the least queueing.
    LowLatency,
    /// Default with 1 MiB buffers on both transports: bulk pipelines.
    HighThroughput,
}

/// Every socket option, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// The preset the values started from.
    pub preset: Preset,
    /// TCP_NODELAY on accepted sockets.
    pub tcp_nodelay: bool,
    /// SO_KEEPALIVE on accepted sockets.
    pub tcp_keepalive: bool,
    /// TCP_KEEPIDLE.
    pub tcp_keepalive_idle: Duration,
    /// TCP_KEEPINTVL.
    pub tcp_keepalive_interval: Duration,
    /// TCP_KEEPCNT.
    pub tcp_keepalive_count: u32,
    /// SO_RCVBUF for TCP (0: the kernel's autotuning).
    pub tcp_rcvbuf: usize,
    /// SO_SNDBUF for TCP (0: the kernel's autotuning).
    pub tcp_sndbuf: usize,
    /// TCP_USER_TIMEOUT (zero: off).
    pub tcp_user_timeout: Duration,
    /// TCP_QUICKACK, re-armed after every read (the kernel clears it).
    pub tcp_quickack: bool,
    /// TCP_DEFER_ACCEPT on the listener (zero: off).
    pub tcp_defer_accept: Duration,
    /// TCP_FASTOPEN queue length on the listener (0: off).
    pub tcp_fastopen: u32,
    /// SO_REUSEADDR on the listener.
    pub tcp_reuseaddr: bool,
    /// SO_RCVBUF for Unix sockets (0: kernel default).
    pub unix_rcvbuf: usize,
    /// SO_SNDBUF for Unix sockets (0: kernel default).
    pub unix_sndbuf: usize,
}

impl SocketOptions {
    /// The values of a preset.
    pub fn preset(preset: Preset) -> Self {
        let base = SocketOptions {
            preset,
            tcp_nodelay: true,
            tcp_keepalive: true,
            tcp_keepalive_idle: Duration::from_secs(60),
            tcp_keepalive_interval: Duration::from_secs(10),
            tcp_keepalive_count: 3,
            tcp_rcvbuf: 0,
            tcp_sndbuf: 0,
            tcp_user_timeout: Duration::ZERO,
            tcp_quickack: false,
            tcp_defer_accept: Duration::ZERO,
            tcp_fastopen: 0,
            tcp_reuseaddr: true,
            unix_rcvbuf: 0,
            unix_sndbuf: 0,
        };
        match preset {
            Preset::Default => base,
            Preset::LowLatency => SocketOptions {
                tcp_quickack: true,
                tcp_rcvbuf: 128 << 10,
                tcp_sndbuf: 128 << 10,
                ..base
            },
            Preset::HighThroughput => SocketOptions {
                tcp_rcvbuf: 1 << 20,
                tcp_sndbuf: 1 << 20,
                unix_rcvbuf: 1 << 20,
                unix_sndbuf: 1 << 20,
                ..base
            },
        }
    }
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self::preset(Preset::Default)
    }
}

/// Options that failed once are not reported again.
static WARNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

fn warn_once(option: &'static str, error: &std::io::Error) {
    let first = match WARNED.lock() {
        Ok(mut warned) => warned.get_or_insert_with(HashSet::new).insert(option),
        Err(_) => true,
    };
    if first {
        tracing::warn!(option, error = %error, "socket option not applied; continuing without it");
    }
}

fn apply(option: &'static str, result: std::io::Result<()>) {
    if let Err(e) = result {
        warn_once(option, &e);
    }
}

/// Applies the listener-level TCP options; called between socket() and listen().
pub fn before_tcp_listen(socket: &socket2::Socket, options: &SocketOptions) {
    apply(
        "SO_REUSEADDR",
        socket.set_reuse_address(options.tcp_reuseaddr),
    );
    // Buffers set on the listener are inherited by accepted sockets, and
    // must be in place before the handshake to size the window scale.
    if options.tcp_rcvbuf > 0 {
        apply("SO_RCVBUF", socket.set_recv_buffer_size(options.tcp_rcvbuf));
    }
    if options.tcp_sndbuf > 0 {
        apply("SO_SNDBUF", socket.set_send_buffer_size(options.tcp_sndbuf));
    }
}

/// Applies the listener-level TCP options that take effect after listen().
pub fn after_tcp_listen(socket: &socket2::Socket, options: &SocketOptions) {
    #[cfg(target_os = "linux")]
    {
        if !options.tcp_defer_accept.is_zero() {
            let secs = options.tcp_defer_accept.as_secs().clamp(1, i32::MAX as u64) as i32;
            apply(
                "TCP_DEFER_ACCEPT",
                raw::set_int(socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, secs),
            );
        }
        if options.tcp_fastopen > 0 {
            let queue = options.tcp_fastopen.min(i32::MAX as u32) as i32;
            apply(
                "TCP_FASTOPEN",
                raw::set_int(socket, libc::IPPROTO_TCP, libc::TCP_FASTOPEN, queue),
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, options);
    }
}

/// Applies the per-connection options to an accepted TCP socket.
pub fn accepted_tcp(stream: &impl AsFd, options: &SocketOptions) {
    let socket = SockRef::from(stream);
    apply("TCP_NODELAY", socket.set_tcp_nodelay(options.tcp_nodelay));
    apply("SO_KEEPALIVE", socket.set_keepalive(options.tcp_keepalive));
    if options.tcp_keepalive {
        let params = TcpKeepalive::new()
            .with_time(options.tcp_keepalive_idle)
            .with_interval(options.tcp_keepalive_interval)
            .with_retries(options.tcp_keepalive_count);
        apply(
            "TCP_KEEPIDLE/KEEPINTVL/KEEPCNT",
            socket.set_tcp_keepalive(&params),
        );
    }
    #[cfg(target_os = "linux")]
    {
        if !options.tcp_user_timeout.is_zero() {
            apply(
                "TCP_USER_TIMEOUT",
                socket.set_tcp_user_timeout(Some(options.tcp_user_timeout)),
            );
        }
        if options.tcp_quickack {
            apply("TCP_QUICKACK", socket.set_tcp_quickack(true));
        }
    }
}

/// Re-arms TCP_QUICKACK after a read (the kernel clears it once it acks).
pub fn rearm_quickack(stream: &impl AsFd) {
    #[cfg(target_os = "linux")]
    apply("TCP_QUICKACK", SockRef::from(stream).set_tcp_quickack(true));
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Applies the per-connection options to an accepted Unix socket.
pub fn accepted_unix(stream: &impl AsFd, options: &SocketOptions) {
    let socket = SockRef::from(stream);
    if options.unix_rcvbuf > 0 {
        apply(
            "SO_RCVBUF (unix)",
            socket.set_recv_buffer_size(options.unix_rcvbuf),
        );
    }
    if options.unix_sndbuf > 0 {
        apply(
            "SO_SNDBUF (unix)",
            socket.set_send_buffer_size(options.unix_sndbuf),
        );
    }
}

/// What the kernel reports for an accepted TCP socket.
pub fn read_back_tcp(stream: &impl AsFd) -> Value {
    let socket = SockRef::from(stream);
    let secs = |d: std::io::Result<Duration>| d.ok().map(|d| d.as_secs());
    #[cfg(target_os = "linux")]
    let linux = json!({
        "user_timeout_ms": socket.tcp_user_timeout().ok().map(|t| t.map_or(0, |t| t.as_millis() as u64)),
        "quickack": socket.tcp_quickack().ok(),
    });
    #[cfg(not(target_os = "linux"))]
    let linux = json!({});
    json!({
        "nodelay": socket.tcp_nodelay().ok(),
        "keepalive": socket.keepalive().ok(),
        "keepalive_idle_secs": secs(socket.tcp_keepalive_time()),
        "keepalive_interval_secs": secs(socket.tcp_keepalive_interval()),
        "keepalive_count": socket.tcp_keepalive_retries().ok(),
        "rcvbuf": socket.recv_buffer_size().ok(),
        "sndbuf": socket.send_buffer_size().ok(),
        "linux": linux,
    })
}

/// What the kernel reports for an accepted Unix socket.
pub fn read_back_unix(stream: &impl AsFd) -> Value {
    let socket = SockRef::from(stream);
    json!({
        "rcvbuf": socket.recv_buffer_size().ok(),
        "sndbuf": socket.send_buffer_size().ok(),
    })
}

/// What the kernel reports for the TCP listener.
pub fn read_back_tcp_listener(stream: &impl AsFd) -> Value {
    let socket = SockRef::from(stream);
    #[cfg(target_os = "linux")]
    let (defer_accept, fastopen) = (
        raw::get_int(stream, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT).ok(),
        raw::get_int(stream, libc::IPPROTO_TCP, libc::TCP_FASTOPEN).ok(),
    );
    #[cfg(not(target_os = "linux"))]
    let (defer_accept, fastopen): (Option<i32>, Option<i32>) = (None, None);
    json!({
        "reuseaddr": socket.reuse_address().ok(),
        "rcvbuf": socket.recv_buffer_size().ok(),
        "sndbuf": socket.send_buffer_size().ok(),
        "defer_accept_secs": defer_accept,
        "fastopen_queue": fastopen,
    })
}

/// The kernel's cap on listen backlogs, where it can be read.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The backlog the kernel will use for `requested`; warns when it is capped.
pub fn effective_backlog(requested: u32) -> u32 {
    match somaxconn() {
        Some(cap) if cap < requested => {
            tracing::warn!(
                requested,
                somaxconn = cap,
                "the kernel caps the listen backlog at net.core.somaxconn; raise it with \
                 `sysctl -w net.core.somaxconn={requested}` to absorb large connection bursts"
            );
            cap
        }
        _ => requested,
    }
}

/// The two options socket2 does not cover (server-side TCP_DEFER_ACCEPT and
/// TCP_FASTOPEN): one plain setsockopt/getsockopt pair for an int.
#[cfg(target_os = "linux")]
mod raw {
    use std::os::fd::{AsFd, AsRawFd};

    pub fn set_int(socket: &impl AsFd, level: i32, name: i32, value: i32) -> std::io::Result<()> {
        // SAFETY: the fd is open for the duration of the borrow; we pass a
        // pointer to a live i32 and its exact size, as setsockopt requires.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_fd().as_raw_fd(),
                level,
                name,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    pub fn get_int(socket: &impl AsFd, level: i32, name: i32) -> std::io::Result<i32> {
        let mut value: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: the fd is open for the duration of the borrow; value and
        // len are live locals of the sizes getsockopt is told about.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_fd().as_raw_fd(),
                level,
                name,
                (&mut value as *mut i32).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
