//! A burst larger than io_uring's queues (issue 15 made them 1,024
//! submission and 2,048 completion entries, so that a burst leaves fewer of
//! the kernel's ring pages resident): every client's request is answered
//! when more connections become readable at once than either queue holds.
//! The loop then submits as it goes and the completions past the queue wait
//! in the kernel for the next reap. Run on both backends (on epoll it is a
//! burst of readiness events past one `epoll_wait`'s batch). The daemon is
//! stopped (SIGSTOP) while the clients connect and send, so that it really
//! finds them all at once.

mod common;

use std::time::Duration;

use common::{Raw, mcp1_request};
use junction::client::Endpoint;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// More than the completion queue's 2,048 entries (one POLL_ADD completion
/// per readable connection), and than the submission queue's 1,024 (one
/// READV per readable connection).
const CLIENTS: usize = 2_600;

/// Raises this process's descriptor limit to its hard limit (the daemon,
/// a child, inherits it).
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    hard
}

/// The daemon under test, stopped and resumed with signals; killed when dropped.
struct Daemon(std::process::Child);

impl Daemon {
    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.0.id() as i32), signal).expect("signal the daemon");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_burst_past_the_queues_gets_every_answer() {
    let limit = raise_fd_limit();
    let wanted = CLIENTS as u64 + 256;
    if limit < wanted {
        eprintln!("skipped: {wanted} descriptors needed, the hard limit is {limit}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("j.sock");
    let mut command = common::junctiond();
    command
        .arg("--unix")
        .arg(&socket)
        .args(["--tcp", "off", "--backlog", "4096", "--log-format", "human"])
        .env_remove("JUNCTION_UNIX")
        .env_remove("JUNCTION_TCP");
    let (child, log) = common::spawn_logged(&mut command);
    let daemon = Daemon(child);
    common::wait_for_line(&log, "listening on");
    let path = Endpoint::Unix(socket);
    // Stopped, the daemon accepts nothing: every client connects into the
    // listen backlog and sends its request. Resumed, it finds them all at
    // once: accepted in one go, every one readable.
    daemon.signal(Signal::SIGSTOP);
    let mut clients: Vec<Raw> = (0..CLIENTS).map(|_| Raw::connect(&path)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            let line = format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"rpc.ping\"}}\n");
            client.send(line.as_bytes());
        } else {
            client.send(&mcp1_request(i as u32, "rpc.ping", b"", false));
        }
    }
    daemon.signal(Signal::SIGCONT);
    for (i, client) in clients.iter_mut().enumerate() {
        client.set_timeout(Duration::from_secs(60));
        if i % 2 == 0 {
            let answer = client.json();
            assert_eq!(answer["id"], i, "{answer}");
            assert_eq!(answer["result"], "pong", "{answer}");
        } else {
            let frame = client.frame();
            assert_eq!(frame.id, i as u32, "{frame:?}");
            assert_eq!(frame.payload, b"\"pong\"", "{frame:?}");
        }
    }
    drop(clients);
    // Still serving after the burst.
    let mut last = Raw::connect(&path);
    last.send(b"{\"jsonrpc\":\"2.0\",\"id\":\"end\",\"method\":\"rpc.ping\"}\n");
    assert_eq!(last.json()["result"], "pong");
    drop(daemon);
}
