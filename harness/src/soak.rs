//! `soak`: a mixed load for a long time against one daemon, to see whether
//! it leaks memory or descriptors, answers wrongly, or hangs.
//!
//! The daemon is started by the harness (`junctiond`, or the embedded server
//! with a pooled method) or found running by its pid. A fixed set of client
//! threads runs until the time is up: pipelined and one-at-a-time clients of
//! both protocols on both transports, large payloads that wrap the ring
//! buffer, JSON-RPC batches, connection churn (clean, half-closed, with calls
//! in flight, mid-frame, silent) and malformed input. Every answer is
//! compared byte for byte with the one expected. Once a second (by default)
//! the daemon's RSS, open descriptors and `rpc.stats` are sampled.
//!
//! The verdict is "flat" when RSS grows less than the limit after the
//! warm-up, descriptors and connections are back at their baseline once the
//! clients are gone, no answer was wrong, nothing failed unexpectedly, the
//! daemon logged no error and (when the harness started it) drained and
//! exited with status 0 on SIGTERM.

mod abuse;
mod daemon;
mod report;
mod roles;
mod wire;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use daemon::{Daemon, StatsLink};
pub use daemon::{Launch, serve};
use report::{Readings, open_connections};
pub use report::{RssLimit, Sample, SoakReport, print_table};
pub use roles::Tally;
use roles::{Ctx, Role, Transport};
use wire::Rng;

use crate::workload::Proto;

/// What to run.
pub struct SoakSpec {
    /// The daemon.
    pub launch: Launch,
    /// Time under load.
    pub duration: Duration,
    /// The warm-up: its largest RSS sample is the warm RSS.
    pub warmup: Duration,
    /// Time between samples.
    pub interval: Duration,
    /// The verdict's RSS limit.
    pub max_rss_growth: RssLimit,
    /// How long descriptors may take to come back once the clients are gone.
    pub settle: Duration,
    /// Longest wait for any answer.
    pub timeout: Duration,
    /// The daemon's max-frame.
    pub max_frame: usize,
    /// Connections per second the churning clients open together.
    pub churn_rate: f64,
    /// Seed of the mix.
    pub seed: u64,
}

/// The default mix: one thread per entry.
fn mix() -> Vec<Role> {
    use Transport::{Tcp, Unix};
    let steady = |proto, transport, depth, large| Role::Steady {
        proto,
        transport,
        depth,
        large,
    };
    vec![
        steady(Proto::Jsonrpc, Unix, 16, false),
        steady(Proto::Mcp1, Tcp, 16, false),
        steady(Proto::Jsonrpc, Tcp, 1, false),
        steady(Proto::Mcp1, Unix, 1, false),
        steady(Proto::Jsonrpc, Tcp, 4, true),
        steady(Proto::Mcp1, Unix, 4, true),
        Role::Batch(Unix),
        Role::Batch(Tcp),
        Role::Churn,
        Role::Churn,
        Role::Malformed,
    ]
}

fn sample(daemon: &Daemon, stats: &mut StatsLink, tally: &Tally, t: f64) -> Result<Sample, String> {
    let (rss_kib, fds) = daemon
        .rss_kib()
        .zip(daemon.fds())
        .ok_or_else(|| format!("the daemon (pid {}) is gone", daemon.pid))?;
    let s = stats.stats()?;
    Ok(Sample {
        t,
        rss_kib,
        fds,
        answers: tally.answers.load(Relaxed),
        connections: open_connections(&s),
        output_buffered: s["output_buffered"].as_u64().unwrap_or(0),
    })
}

/// Runs the soak. `progress` is called after each sample.
pub fn run(
    spec: SoakSpec,
    progress: &mut dyn FnMut(&Sample, &Tally),
) -> Result<SoakReport, String> {
    let label = match &spec.launch {
        Launch::Binary(path, _) => format!("junctiond ({})", path.display()),
        Launch::Embedded(_) => "embedded server (library + pooled echo)".to_string(),
        Launch::Attach { .. } => "a running daemon".to_string(),
    };
    let mut daemon = Daemon::start(spec.launch)?;
    let home = daemon
        .unix
        .clone()
        .or_else(|| daemon.tcp.clone())
        .ok_or("the soak needs --unix or --tcp for a running daemon")?;
    let mut stats = StatsLink::connect(&home, spec.timeout)?;
    let methods = stats.call("rpc.methods")?;
    let pooled = methods.as_array().is_some_and(|list| {
        list.iter()
            .any(|m| m["name"] == wire::POOLED_ECHO && m["mode"] == "pooled")
    });
    std::thread::sleep(Duration::from_millis(200));
    let before = stats.stats()?;
    let fds_baseline = daemon
        .fds()
        .ok_or("cannot read the daemon's /proc/PID/fd")?;
    let rss_start = daemon.rss_kib().ok_or("cannot read the daemon's RSS")?;

    let roles = mix();
    let churners = roles.iter().filter(|r| matches!(r, Role::Churn)).count();
    let ctx = Arc::new(Ctx {
        unix: daemon.unix.clone(),
        tcp: daemon.tcp.clone(),
        pooled,
        timeout: spec.timeout,
        max_frame: spec.max_frame,
        churn_every: Duration::from_secs_f64(churners as f64 / spec.churn_rate.max(0.1)),
        stop: Default::default(),
        tally: Tally::default(),
    });
    let started = Instant::now();
    let threads = start_clients(&ctx, &roles, spec.seed)?;
    let mut reasons = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next = started + spec.interval;
    while started.elapsed() < spec.duration {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += spec.interval;
        let t = started.elapsed().as_secs_f64();
        match sample(&daemon, &mut stats, &ctx.tally, t) {
            Ok(s) => {
                progress(&s, &ctx.tally);
                samples.push(s);
            }
            Err(e) => {
                reasons.push(format!("sampling at {t:.0} s: {e}"));
                break;
            }
        }
    }
    ctx.stop.store(true, Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    for thread in threads {
        if thread.join().is_err() {
            reasons.push("a client thread panicked".into());
        }
    }

    // Wait for the daemon to close what the clients left, and to give back
    // their output (a loaded daemon may answer rpc.stats in the turn that
    // closes the last of them, before their buffers are counted out).
    let settle_start = Instant::now();
    let buffered = |s: &Value| s["output_buffered"].as_u64().unwrap_or(u64::MAX);
    let mut after = stats.stats().unwrap_or(Value::Null);
    let mut fds_end = daemon.fds().unwrap_or(u64::MAX);
    while (fds_end > fds_baseline
        || open_connections(&after) > open_connections(&before)
        || buffered(&after) > buffered(&before))
        && settle_start.elapsed() < spec.settle
    {
        std::thread::sleep(Duration::from_millis(100));
        after = stats.stats().unwrap_or(Value::Null);
        fds_end = daemon.fds().unwrap_or(u64::MAX);
    }
    let settle_secs = settle_start.elapsed().as_secs_f64();
    let rss_after = daemon.rss_kib().unwrap_or(0);
    let alive = daemon.alive();
    drop(stats);
    std::thread::sleep(Duration::from_millis(100));
    let daemon_log = daemon.log();
    let pid = daemon.pid;
    let exit = daemon.stop(Duration::from_secs(30)).unwrap_or_else(|e| {
        reasons.push(e);
        None
    });
    let readings = Readings {
        label,
        pid,
        pooled,
        clients: roles.len(),
        seconds,
        warmup: spec.warmup.as_secs_f64(),
        limit: spec.max_rss_growth,
        rss_start,
        rss_after,
        fds_baseline,
        fds_end,
        settle_secs,
        before,
        after,
        alive,
        daemon_log,
        exit,
        reasons,
        samples,
    };
    Ok(report::build(readings, &ctx.tally))
}

/// Starts one thread per role; each runs until `ctx.stop`.
fn start_clients(ctx: &Arc<Ctx>, roles: &[Role], seed: u64) -> Result<Vec<JoinHandle<()>>, String> {
    let mut threads = Vec::new();
    for (slot, role) in roles.iter().copied().enumerate() {
        let client = Arc::clone(ctx);
        let mut rng = Rng::new(seed ^ (slot as u64 + 1).wrapping_mul(0x9e37_79b9));
        let thread = std::thread::Builder::new()
            .name(format!("soak-{slot}"))
            .spawn(move || match role {
                Role::Steady {
                    proto,
                    transport,
                    depth,
                    large,
                } => roles::steady(&client, slot, &mut rng, (proto, transport, depth, large)),
                Role::Batch(transport) => roles::batches(&client, slot, &mut rng, transport),
                Role::Churn => abuse::churn(&client, slot, &mut rng),
                Role::Malformed => abuse::malformed(&client, slot, &mut rng),
            });
        match thread {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                ctx.stop.store(true, Relaxed);
                return Err(format!("cannot start a client thread: {e}"));
            }
        }
    }
    Ok(threads)
}
