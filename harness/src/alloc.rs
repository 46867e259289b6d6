//! `alloc`: heap allocations per request on the server, counted by a global
//! allocator around an in-process junctiond, in steady state.
//!
//! The client side of the measurement allocates nothing in its loop (blocks
//! and buffers are made before the counter is read), so every allocation
//! counted between the two snapshots is the server's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

use junction::{Config, Router, Server};

use crate::workload::{Method, Proto, Target, Workload};

/// A global allocator that counts allocations (and reallocations).
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator unchanged; the
// counter is a relaxed atomic increment with no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds alloc's contract; we pass it on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc/realloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds realloc's contract; we pass it on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// One measured case.
#[derive(Debug, serde::Serialize)]
pub struct AllocResult {
    /// Protocol.
    pub proto: Proto,
    /// Method.
    pub method: Method,
    /// Payload size for echo.
    pub size: usize,
    /// Requests in the measured window.
    pub requests: u64,
    /// Allocations counted in it.
    pub allocations: u64,
    /// allocations / requests.
    pub per_request: f64,
}

/// Measures every protocol and method with `requests` requests each.
pub fn run(requests: u64, pipeline: usize, size: usize) -> Result<Vec<AllocResult>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("alloc.sock");
    let config = Config {
        unix: Some(path.clone()),
        tcp: None,
        workers: 1,
        // A call slower than the slow log's threshold (a loaded machine, a
        // debug build) allocates its log entry: that is the slow log's
        // cost, not the request path's, so it is off here.
        slowlog_max_len: 0,
        ..Config::default()
    };
    let server = Server::bind(&config, Router::new())
        .map_err(|e| e.to_string())?
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for proto in [Proto::Mcp1, Proto::Jsonrpc] {
        for method in [Method::Ping, Method::Echo] {
            let size = if method == Method::Echo { size } else { 0 };
            let workload = Workload::new(Target::Junction, proto, method, size)?;
            results.push(measure(
                &path, &workload, proto, method, size, requests, pipeline,
            )?);
        }
    }
    server.stop().map_err(|e| e.to_string())?;
    Ok(results)
}

fn measure(
    path: &std::path::Path,
    workload: &Workload,
    proto: Proto,
    method: Method,
    size: usize,
    requests: u64,
    pipeline: usize,
) -> Result<AllocResult, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| e.to_string())?;
    let block = workload.block(pipeline);
    let mut answers = vec![0u8; workload.response.len() * pipeline];
    let mut round = |stream: &mut UnixStream| -> Result<(), String> {
        stream.write_all(&block).map_err(|e| e.to_string())?;
        stream.read_exact(&mut answers).map_err(|e| e.to_string())
    };
    // Warm up: pools fill, buffers reach their working size.
    for _ in 0..2000 {
        round(&mut stream)?;
    }
    let rounds = (requests / pipeline as u64).max(1);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        round(&mut stream)?;
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    if answers[..workload.response.len()] != workload.response[..] {
        return Err(format!(
            "unexpected answer: {:?}",
            String::from_utf8_lossy(&answers[..workload.response.len()])
        ));
    }
    let requests = rounds * pipeline as u64;
    Ok(AllocResult {
        proto,
        method,
        size,
        requests,
        allocations,
        per_request: allocations as f64 / requests as f64,
    })
}
