//! `throughput --monitor`: one `rpc.monitor` connection attached to
//! junctiond for the whole run, reading every line as fast as it can, so
//! that a run with it against one without gives the cost of a monitor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use junction::Protocol;
use junction::client::{Client, Endpoint, Incoming};

/// Lines received and lines the daemon reported lost, so far.
#[derive(Default)]
pub struct Counts {
    pub lines: AtomicU64,
    pub dropped: AtomicU64,
}

/// Attaches a monitor on `endpoint` (it must be an admin: the daemon's
/// user over Unix) and reads it on a thread until the process ends.
pub fn attach(endpoint: &Endpoint) -> Result<Arc<Counts>, String> {
    let mut client = Client::connect_with(endpoint, Protocol::Mcp1)
        .map_err(|e| format!("monitor: cannot connect: {e}"))?;
    client
        .call("rpc.monitor", None)
        .map_err(|e| format!("monitor: rpc.monitor refused: {e}"))?;
    client
        .set_timeout(None)
        .map_err(|e| format!("monitor: {e}"))?;
    let counts = Arc::new(Counts::default());
    let seen = Arc::clone(&counts);
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            while let Ok(message) = client.next_message() {
                if let Incoming::Event(event) = message {
                    seen.lines.fetch_add(1, Relaxed);
                    seen.dropped.fetch_add(event.dropped.unwrap_or(0), Relaxed);
                }
            }
        })
        .map_err(|e| format!("monitor: no thread: {e}"))?;
    Ok(counts)
}
