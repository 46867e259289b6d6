//! The daemon under soak: started by the harness (the `junctiond` binary, or
//! this harness's embedded server, which adds a pooled method) or found
//! running by its pid; what it costs (RSS, open descriptors, `rpc.stats`),
//! what it logs, and how it stops.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use junction::client::Endpoint;
use junction::config::{Config, Settings};
use junction::{Mode, Router, Server};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::wire::{self, Link};

/// Which daemon to soak.
pub enum Launch {
    /// Start this `junctiond` binary with these extra arguments.
    Binary(PathBuf, Vec<String>),
    /// Start `junction-bench soak-server` (the library's server with the
    /// stock methods and a pooled echo) with these extra arguments.
    Embedded(Vec<String>),
    /// Use the daemon already running as `pid`, at these endpoints.
    Attach {
        /// Its process id.
        pid: u32,
        /// Its Unix socket.
        unix: Option<PathBuf>,
        /// Its TCP address.
        tcp: Option<String>,
    },
}

/// WARN and ERROR lines the daemon logged while under soak.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LogWatch {
    /// WARN lines.
    pub warnings: u64,
    /// ERROR lines, and lines that are not the daemon's JSON log (a panic's text).
    pub errors: u64,
    /// The first of them.
    pub lines: Vec<String>,
}

/// The daemon and the means to watch it.
pub struct Daemon {
    /// Its process id.
    pub pid: u32,
    /// Its Unix endpoint.
    pub unix: Option<Endpoint>,
    /// Its TCP endpoint.
    pub tcp: Option<Endpoint>,
    child: Option<Child>,
    log: Arc<Mutex<LogWatch>>,
    _dir: Option<tempfile::TempDir>,
}

/// How a started daemon ended.
#[derive(Debug, serde::Serialize)]
pub struct Exit {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Seconds from SIGTERM to exit.
    pub seconds: f64,
}

impl Daemon {
    /// Starts (or finds) the daemon and waits until it listens.
    pub fn start(launch: Launch) -> Result<Daemon, String> {
        let (program, mut args) = match launch {
            Launch::Attach { pid, unix, tcp } => {
                if crate::sys::process_rss_kib(pid).is_none() {
                    return Err(format!(
                        "no process {pid} to soak (cannot read /proc/{pid})"
                    ));
                }
                return Ok(Daemon {
                    pid,
                    unix: unix.map(Endpoint::Unix),
                    tcp: tcp.map(Endpoint::Tcp),
                    child: None,
                    log: Arc::default(),
                    _dir: None,
                });
            }
            Launch::Binary(path, extra) => (path, extra),
            Launch::Embedded(extra) => {
                let me = std::env::current_exe()
                    .map_err(|e| format!("cannot find this executable: {e}"))?;
                let mut args = vec!["soak-server".to_string()];
                args.extend(extra);
                (me, args)
            }
        };
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let socket = dir.path().join("junction.sock");
        args.extend(
            [
                "--unix",
                &socket.display().to_string(),
                "--tcp",
                "127.0.0.1:0",
                // TCP peers are anonymous and may call every method (the
                // soak measures the daemon, not authentication).
                "--tcp-anonymous",
                "true",
                "--allow",
                "anonymous:call:*",
            ]
            .map(String::from),
        );
        args.extend(["--log-format", "json", "--log", "info"].map(String::from));
        let mut child = Command::new(&program)
            .args(&args)
            .env_remove("JUNCTION_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| "no stderr pipe from the daemon".to_string())?;
        let log = Arc::new(Mutex::new(LogWatch::default()));
        let (tx, rx) = mpsc::channel();
        let watch = Arc::clone(&log);
        std::thread::Builder::new()
            .name("soak-daemon-log".into())
            .spawn(move || read_log(stderr, &tx, &watch))
            .map_err(|e| format!("cannot start the log reader: {e}"))?;
        let mut daemon = Daemon {
            pid: child.id(),
            unix: None,
            tcp: None,
            child: Some(child),
            log,
            _dir: Some(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon.unix.is_none() || daemon.tcp.is_none() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(line) => {
                    if let Some(path) = line.strip_prefix("listening on unix ") {
                        daemon.unix = Some(Endpoint::Unix(PathBuf::from(path)));
                    } else if let Some(addr) = line.strip_prefix("listening on tcp ") {
                        daemon.tcp = Some(Endpoint::Tcp(addr.to_string()));
                    }
                }
                Err(_) => {
                    let log = daemon.log();
                    daemon.kill();
                    return Err(format!(
                        "{} did not start listening within 20 s; its log: {:?}",
                        program.display(),
                        log.lines
                    ));
                }
            }
        }
        Ok(daemon)
    }

    /// Its resident set size in KiB, or None once it is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::sys::process_rss_kib(self.pid)
    }

    /// Its open file descriptors, or None once it is gone.
    pub fn fds(&self) -> Option<u64> {
        crate::sys::process_fds(self.pid)
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => crate::sys::process_rss_kib(self.pid).is_some(),
        }
    }

    /// What it logged at WARN and above so far.
    pub fn log(&self) -> LogWatch {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops a daemon the harness started (SIGTERM, the graceful drain) and
    /// reports how it ended; a daemon found running is left alone (None).
    pub fn stop(mut self, patience: Duration) -> Result<Option<Exit>, String> {
        let Some(child) = &mut self.child else {
            return Ok(None);
        };
        let sent = Instant::now();
        let pid = i32::try_from(self.pid).map_err(|_| "pid out of range".to_string())?;
        kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| format!("SIGTERM: {e}"))?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Ok(Some(Exit {
                        code: status.code(),
                        seconds: sent.elapsed().as_secs_f64(),
                    }));
                }
                Ok(None) if sent.elapsed() < patience => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    self.kill();
                    return Err(format!(
                        "the daemon did not exit within {patience:?} of SIGTERM (killed)"
                    ));
                }
                Err(e) => return Err(format!("waiting for the daemon: {e}")),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the daemon's JSON log: `listening on` messages go to `tx`, WARN and
/// ERROR lines (and anything that is not JSON) are counted in `watch`.
fn read_log(stderr: impl std::io::Read, tx: &mpsc::Sender<String>, watch: &Mutex<LogWatch>) {
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let parsed: Option<Value> = serde_json::from_str(&line).ok();
        let level = parsed.as_ref().and_then(|v| v["level"].as_str());
        let message = parsed
            .as_ref()
            .and_then(|v| v["fields"]["message"].as_str())
            .unwrap_or_default();
        if message.starts_with("listening on ") {
            let _ = tx.send(message.to_string());
        }
        let Ok(mut watch) = watch.lock() else {
            continue;
        };
        match level {
            Some("INFO" | "DEBUG" | "TRACE") => continue,
            Some("WARN") => watch.warnings += 1,
            _ => watch.errors += 1,
        }
        if watch.lines.len() < 10 {
            watch.lines.push(line);
        }
    }
}

/// A connection that asks the daemon for `rpc.stats`.
pub struct StatsLink {
    link: Link,
    id: u64,
    buf: Vec<u8>,
}

impl StatsLink {
    /// Connects to `endpoint`.
    pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<StatsLink, String> {
        let link = Link::connect(endpoint, timeout)
            .map_err(|e| format!("stats connection to {endpoint}: {e}"))?;
        Ok(StatsLink {
            link,
            id: 0,
            buf: Vec::new(),
        })
    }

    /// The daemon's counters now.
    pub fn stats(&mut self) -> Result<Value, String> {
        self.call("rpc.stats")
    }

    /// The result of calling `method` without params.
    pub fn call(&mut self, method: &str) -> Result<Value, String> {
        self.id += 1;
        let request = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"{method}\",\"id\":{}}}\n",
            self.id
        );
        self.link
            .send(request.as_bytes())
            .and_then(|()| self.link.line(&mut self.buf))
            .map_err(|e| format!("{method}: {e}"))?;
        let mut answer: Value = serde_json::from_slice(&self.buf)
            .map_err(|e| format!("{method} answer is not JSON: {e}"))?;
        if answer["id"] != self.id || answer.get("result").is_none() {
            return Err(format!("unexpected answer to {method}: {answer}"));
        }
        Ok(answer["result"].take())
    }
}

/// `junction-bench soak-server`: the library's server with the stock
/// methods plus a pooled echo, so that a soak reaches the worker pool. It
/// takes junctiond's flags, logs `listening on` lines as junctiond's JSON
/// log does, and drains on SIGTERM or SIGINT.
pub fn serve(settings: Settings) -> Result<(), String> {
    let config = Config::resolve(settings).map_err(|e| e.to_string())?;
    let mut router = Router::new();
    router
        .method(
            wire::POOLED_ECHO,
            "rpc.echo on a worker thread (soak)",
            Mode::Pooled,
            |call, reply| {
                match call.params {
                    junction::Params::Json(raw) => reply.json_text(raw),
                    junction::Params::Raw(bytes) => reply.bytes(bytes),
                    junction::Params::None => {}
                }
                Ok(())
            },
        )
        .map_err(|e| e.to_string())?;
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let server = Server::bind(&config, router).map_err(|e| e.to_string())?;
    for line in server.listening() {
        let event = json!({"level": "INFO", "fields": {"message": format!("listening on {line}")}});
        eprintln!("{event}");
    }
    let handle = server.shutdown_handle();
    std::thread::Builder::new()
        .name("soak-server-signals".into())
        .spawn(move || {
            if signals.wait().is_ok() {
                handle.shutdown();
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    server.run().map_err(|e| e.to_string())
}
