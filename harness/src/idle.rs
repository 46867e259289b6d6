//! `idle`: K connections that made one request each and then sit quiet;
//! the server's RSS growth per connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use junction::client::Endpoint;

use crate::workload::Workload;

/// What an idle run measured.
#[derive(Debug, serde::Serialize)]
pub struct IdleResult {
    /// Connections held.
    pub connections: usize,
    /// Server RSS with one connection, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with all connections, after they went quiet, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / connections.
    pub bytes_per_connection: f64,
}

/// A connection kept open only for its existence.
type Held = OwnedFd;

/// Sends the request and reads the whole answer.
fn request(stream: &mut (impl Read + Write), workload: &Workload) -> Result<Vec<u8>, String> {
    let mut answer = vec![0u8; workload.response.len()];
    stream
        .write_all(&workload.request)
        .and_then(|()| stream.read_exact(&mut answer))
        .map_err(|e| format!("request: {e}"))?;
    Ok(answer)
}

fn ping(endpoint: &Endpoint, workload: &Workload) -> Result<Held, String> {
    let timeout = Some(Duration::from_secs(10));
    let connect = |e: std::io::Error| format!("connect: {e}");
    let (held, answer) = match endpoint {
        Endpoint::Unix(path) => {
            let mut s = UnixStream::connect(path).map_err(connect)?;
            s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
            let answer = request(&mut s, workload)?;
            (OwnedFd::from(s), answer)
        }
        Endpoint::Tcp(addr) => {
            let mut s = TcpStream::connect(addr.as_str()).map_err(connect)?;
            s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
            let answer = request(&mut s, workload)?;
            (OwnedFd::from(s), answer)
        }
    };
    if answer != workload.response {
        return Err(format!(
            "unexpected answer: {:?}",
            String::from_utf8_lossy(&answer)
        ));
    }
    Ok(held)
}

/// Opens `count` idle connections to the server with pid `pid` and measures its RSS.
pub fn run(
    endpoint: &Endpoint,
    workload: &Workload,
    count: usize,
    pid: u32,
    settle: Duration,
) -> Result<IdleResult, String> {
    let rss = || {
        crate::sys::process_rss_kib(pid).ok_or_else(|| format!("cannot read /proc/{pid}/status"))
    };
    let mut held = vec![ping(endpoint, workload)?];
    std::thread::sleep(settle);
    let before = rss()?;
    for i in 1..count {
        held.push(ping(endpoint, workload).map_err(|e| format!("connection {i}: {e}"))?);
    }
    std::thread::sleep(settle);
    let after = rss()?;
    let result = IdleResult {
        connections: held.len(),
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: (after.saturating_sub(before) * 1024) as f64
            / (held.len().max(2) - 1) as f64,
    };
    drop(held);
    Ok(result)
}
