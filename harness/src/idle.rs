//! `idle`: K connections that made one request each and then sit quiet;
//! the server's RSS growth per connection, and whether it comes back.
//!
//! By default the connections arrive together (`concurrent`): all connect,
//! then all send their request, then all answers are read, as real clients
//! in a burst do; `sequential` pings each on connect, one after another.
//! After the idle reading every connection closes, and RSS is read again
//! once `close_wait` passed; then `partial` connections each send the start
//! of a frame (for JSON-RPC `{"jsonrpc`) and close, and RSS is read again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use junction::client::Endpoint;

use crate::workload::Workload;

/// What an idle run measured.
#[derive(Debug, serde::Serialize)]
pub struct IdleResult {
    /// Connections held.
    pub connections: usize,
    /// Whether they sent their requests together.
    pub concurrent: bool,
    /// Server RSS with one connection, before the burst, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with all connections, after they went quiet, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / connections.
    pub bytes_per_connection: f64,
    /// Server RSS once every connection closed and `close_wait` passed, KiB.
    pub rss_after_close_kib: u64,
    /// rss_after_close - rss_before, KiB (may be negative).
    pub after_close_growth_kib: i64,
    /// Connections that left a partial frame and closed (0: not measured).
    pub partial: usize,
    /// Server RSS `close_wait` after the partial frames, KiB.
    pub rss_after_partial_kib: Option<u64>,
    /// rss_after_partial - rss_before, KiB.
    pub after_partial_growth_kib: Option<i64>,
}

/// How an idle run goes.
#[derive(Debug, Clone, Copy)]
pub struct IdlePlan {
    /// Connections to hold.
    pub count: usize,
    /// The server whose RSS is read.
    pub pid: u32,
    /// Wait before the baseline and the idle reading.
    pub settle: Duration,
    /// All connections send at once (else one after another).
    pub concurrent: bool,
    /// Wait after the connections closed before reading RSS again.
    pub close_wait: Duration,
    /// Connections that each leave a partial frame and close (0: none).
    pub partial: usize,
}

/// An open client socket of either transport.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn open(endpoint: &Endpoint) -> Result<Self, String> {
        let connect = |e: std::io::Error| format!("connect: {e}");
        let conn = match endpoint {
            Endpoint::Unix(path) => Conn::Unix(UnixStream::connect(path).map_err(connect)?),
            Endpoint::Tcp(addr) => Conn::Tcp(TcpStream::connect(addr.as_str()).map_err(connect)?),
        };
        let timeout = Some(Duration::from_secs(20));
        match &conn {
            Conn::Unix(s) => s.set_read_timeout(timeout),
            Conn::Tcp(s) => s.set_read_timeout(timeout),
        }
        .map_err(|e| e.to_string())?;
        Ok(conn)
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Conn::Unix(s) => s,
            Conn::Tcp(s) => s,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io().write_all(bytes).map_err(|e| format!("send: {e}"))
    }

    fn answer(&mut self, workload: &Workload) -> Result<(), String> {
        let mut answer = vec![0u8; workload.response.len()];
        self.io()
            .read_exact(&mut answer)
            .map_err(|e| format!("answer: {e}"))?;
        if answer != workload.response {
            return Err(format!(
                "unexpected answer: {:?}",
                String::from_utf8_lossy(&answer)
            ));
        }
        Ok(())
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// `count` connections that each made one request: together, or one by one.
fn open_idle(
    endpoint: &Endpoint,
    workload: &Workload,
    count: usize,
    concurrent: bool,
) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let mut c = Conn::open(endpoint).map_err(|e| format!("connection {i}: {e}"))?;
        if !concurrent {
            c.send(&workload.request)
                .and_then(|()| c.answer(workload))
                .map_err(|e| format!("connection {i}: {e}"))?;
        }
        conns.push(c);
    }
    if concurrent {
        for (i, c) in conns.iter_mut().enumerate() {
            c.send(&workload.request)
                .map_err(|e| format!("connection {i}: {e}"))?;
        }
        for (i, c) in conns.iter_mut().enumerate() {
            c.answer(workload)
                .map_err(|e| format!("connection {i}: {e}"))?;
        }
    }
    Ok(conns)
}

/// The start of a frame, never a whole one.
fn partial_frame(workload: &Workload) -> &[u8] {
    let request = &workload.request;
    &request[..request.len().saturating_sub(1).min(9)]
}

/// Opens the connections, measures the server's RSS idle, after they
/// close, and after partial frames.
pub fn run(endpoint: &Endpoint, workload: &Workload, plan: IdlePlan) -> Result<IdleResult, String> {
    let pid = plan.pid;
    let rss = || {
        crate::sys::process_rss_kib(pid).ok_or_else(|| format!("cannot read /proc/{pid}/status"))
    };
    let first = open_idle(endpoint, workload, 1, false)?;
    std::thread::sleep(plan.settle);
    let before = rss()?;
    let held = open_idle(
        endpoint,
        workload,
        plan.count.saturating_sub(1),
        plan.concurrent,
    )?;
    std::thread::sleep(plan.settle);
    let after = rss()?;
    let connections = held.len() + first.len();
    drop(held);
    std::thread::sleep(plan.close_wait);
    let after_close = rss()?;
    let mut after_partial = None;
    if plan.partial > 0 {
        let mut conns = Vec::with_capacity(plan.partial);
        for i in 0..plan.partial {
            conns.push(Conn::open(endpoint).map_err(|e| format!("partial {i}: {e}"))?);
        }
        for (i, c) in conns.iter_mut().enumerate() {
            c.send(partial_frame(workload))
                .map_err(|e| format!("partial {i}: {e}"))?;
        }
        // Let the daemon read them all before they go.
        std::thread::sleep(Duration::from_millis(500));
        drop(conns);
        std::thread::sleep(plan.close_wait);
        after_partial = Some(rss()?);
    }
    drop(first);
    let growth = |kib: u64| kib as i64 - before as i64;
    Ok(IdleResult {
        connections,
        concurrent: plan.concurrent,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: (after.saturating_sub(before) * 1024) as f64
            / (connections.max(2) - 1) as f64,
        rss_after_close_kib: after_close,
        after_close_growth_kib: growth(after_close),
        partial: plan.partial,
        rss_after_partial_kib: after_partial,
        after_partial_growth_kib: after_partial.map(growth),
    })
}
