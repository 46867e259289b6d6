//! `junction-bench`: Junction's load generator.
//!
//! Modes: `throughput` (C connections, pipeline P, payload S), `latency`
//! (one connection, one request at a time), `burst` (many connects, one
//! request each), `idle` (RSS per idle connection), `alloc` (server heap
//! allocations per request) and `soak` (a long mixed load watching the
//! daemon's RSS and descriptors for leaks), and `provide` (the bench
//! provider: serves bench.ping and bench.echo through junctiond's service
//! bus, so that `throughput --routed` measures a routed call). Targets:
//! junctiond, Redis (RESP) and the raw echo server, all driven by this same
//! generator so that ratios compare servers, not clients.

mod alloc;
mod burst;
mod idle;
mod load;
mod monitor;
mod provider;
mod soak;
mod sys;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use junction::client::Endpoint;
use junction::config::{ByteSize, Settings, Span};
use serde_json::{Value, json};

use workload::{Method, Proto, Target, Workload};

#[global_allocator]
static COUNTING: alloc::Counting = alloc::Counting;

/// Junction's load generator: throughput, latency, bursts, idle memory, allocations, soak.
#[derive(Parser)]
#[command(name = "junction-bench", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// C connections with P requests in flight each, for a duration or N requests
    Throughput(LoadArgs),
    /// One connection, one request at a time: round-trip percentiles
    Latency(LoadArgs),
    /// Open C connections at a rate (0 = as fast as possible), one request each
    Burst(BurstArgs),
    /// Open K idle connections (one request each) and report the server's RSS per connection
    Idle(IdleArgs),
    /// Count the server's heap allocations per request (in-process junctiond)
    Alloc(AllocArgs),
    /// Mixed load for a long time; watch the daemon's RSS and descriptors for leaks
    Soak(SoakArgs),
    /// The embedded server `soak --embedded` starts (junctiond's flags)
    #[command(hide = true)]
    SoakServer(Box<Settings>),
    /// Provide bench.ping and bench.echo on junctiond's bus, answering as
    /// fast as possible, until killed (for `throughput --routed`)
    Provide(ProvideArgs),
}

#[derive(Args)]
struct ProvideArgs {
    /// The protocol the provider speaks: jsonrpc or mcp1
    #[arg(long, value_enum, default_value = "mcp1")]
    proto: Proto,
    /// Unix socket of junctiond (providers register over Unix by default)
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "tcp",
        required_unless_present = "tcp"
    )]
    unix: Option<PathBuf>,
    /// TCP address of junctiond (needs a bus-allow rule for tcp)
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<String>,
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// The server: junction, redis or echo
    #[arg(long, value_enum, default_value = "junction")]
    target: Target,
    /// The protocol: jsonrpc, mcp1 or resp (Redis)
    #[arg(long, value_enum, default_value = "jsonrpc")]
    proto: Proto,
    /// Unix socket of the server
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "tcp",
        required_unless_present = "tcp"
    )]
    unix: Option<PathBuf>,
    /// TCP address of the server
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<String>,
    /// ping or echo
    #[arg(long, value_enum, default_value = "ping")]
    method: Method,
    /// Echo payload size in bytes
    #[arg(short = 's', long, default_value_t = 0)]
    size: usize,
    /// Call the routed twin (bench.ping / bench.echo, served by
    /// `junction-bench provide` through the daemon) instead of rpc.*
    #[arg(long)]
    routed: bool,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
}

impl TargetArgs {
    fn endpoint(&self) -> Endpoint {
        match (&self.unix, &self.tcp) {
            (Some(path), _) => Endpoint::Unix(path.clone()),
            (None, Some(addr)) => Endpoint::Tcp(addr.clone()),
            (None, None) => unreachable!("clap requires --unix or --tcp"),
        }
    }

    fn transport(&self) -> &'static str {
        if self.unix.is_some() { "unix" } else { "tcp" }
    }

    fn workload(&self) -> Result<Workload, String> {
        if !self.routed {
            return Workload::new(self.target, self.proto, self.method, self.size);
        }
        if self.target != Target::Junction {
            return Err("--routed goes through junctiond: use --target junction".into());
        }
        Workload::routed(self.proto, self.method, self.size)
    }
}

#[derive(Args, Clone)]
struct LoadArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Measured time
    #[arg(short = 'd', long, default_value = "5s")]
    duration: Span,
    /// Stop after N answers instead of after the duration
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Unmeasured time before
    #[arg(long, default_value = "500ms")]
    warmup: Span,
    /// Generator threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The server's pid, to report its CPU per million requests
    #[arg(long)]
    server_pid: Option<u32>,
    /// Attach one `rpc.monitor` connection (junctiond; over Unix, as its
    /// user) that reads every line, to measure what a monitor costs
    #[arg(long)]
    monitor: bool,
    /// Connect to --tcp over TLS, trusting the CA certificate in FILE
    #[arg(long, value_name = "FILE", requires = "tcp")]
    tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name the server's certificate must carry
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    tls_server_name: String,
}

#[derive(Args)]
struct BurstArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections in all
    #[arg(short = 'c', long, default_value_t = 12_000)]
    connections: usize,
    /// Connections per second; 0 = as fast as possible
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// A connection not answered by then is a timeout
    #[arg(long, default_value = "10s")]
    timeout: Span,
    /// Generator threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Idle connections to hold
    #[arg(short = 'k', long, default_value_t = 10_000)]
    connections: usize,
    /// The server's pid (required: its RSS is what is measured)
    #[arg(long)]
    server_pid: u32,
    /// Wait before the baseline and the idle reading
    #[arg(long, default_value = "5s")]
    settle: Span,
    /// Ping each connection as it connects, one after another, instead of
    /// all sending at once
    #[arg(long)]
    sequential: bool,
    /// Wait after the connections closed (and after the partial frames)
    /// before reading RSS again
    #[arg(long, default_value = "10s")]
    close_wait: Span,
    /// Connections that each send a partial frame and close, after the
    /// idle ones are gone (0: skip)
    #[arg(long, default_value_t = 5_000)]
    partial: usize,
}

#[derive(Args)]
struct AllocArgs {
    /// Requests per case
    #[arg(short = 'n', long, default_value_t = 200_000)]
    requests: u64,
    /// Requests per round trip
    #[arg(short = 'P', long, default_value_t = 16)]
    pipeline: usize,
    /// Echo payload size
    #[arg(short = 's', long, default_value_t = 64)]
    size: usize,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SoakArgs {
    /// Time under load
    #[arg(short = 'd', long, default_value = "10m")]
    duration: Span,
    /// Time before the warm RSS reading [default: 10% of the duration, at least 10s (a quarter of a shorter run), at most 30s]
    #[arg(long)]
    warmup: Option<Span>,
    /// Time between samples of RSS, descriptors and rpc.stats
    #[arg(long, default_value = "1s")]
    interval: Span,
    /// Most RSS growth allowed after the warm-up: a size (4MiB, 2048KiB) or a percentage of the warm RSS (25%)
    #[arg(long, default_value = "4MiB", value_name = "SIZE|PCT%")]
    max_rss_growth: soak::RssLimit,
    /// The junctiond binary to start [default: the junctiond next to this executable]
    #[arg(long, value_name = "PATH", conflicts_with_all = ["embedded", "server_pid"])]
    daemon: Option<PathBuf>,
    /// Start the embedded server instead (the library's server with the stock methods and a pooled echo)
    #[arg(long, conflicts_with = "server_pid")]
    embedded: bool,
    /// Soak the daemon already running as PID (at --unix and/or --tcp) instead of starting one
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Unix socket of the running daemon
    #[arg(long, value_name = "PATH", requires = "server_pid")]
    unix: Option<PathBuf>,
    /// TCP address of the running daemon
    #[arg(long, value_name = "HOST:PORT", requires = "server_pid")]
    tcp: Option<String>,
    /// How long descriptors may take to come back once the clients have left
    #[arg(long, default_value = "5s")]
    settle: Span,
    /// Longest wait for any answer; a longer one counts as a hang
    #[arg(long, default_value = "10s")]
    timeout: Span,
    /// The daemon's max-frame: bounds the payloads and sizes the oversized cases
    #[arg(long, default_value = "1MiB")]
    max_frame: ByteSize,
    /// Connections per second the churning clients open together
    #[arg(long, default_value_t = 200.0)]
    churn_rate: f64,
    /// Seed of the mix
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
    /// Extra arguments for the daemon the harness starts (after --)
    #[arg(last = true, value_name = "DAEMON ARGS")]
    daemon_args: Vec<String>,
}

fn main() -> ExitCode {
    let fd_limit = sys::raise_fd_limit();
    let outcome = match Cli::parse().mode {
        Mode::Throughput(args) => throughput("throughput", args),
        Mode::Latency(mut args) => {
            args.connections = 1;
            args.pipeline = 1;
            args.threads = 1;
            throughput("latency", args)
        }
        Mode::Burst(args) => run_burst(args, fd_limit),
        Mode::Idle(args) => run_idle(args),
        Mode::Alloc(args) => run_alloc(args),
        Mode::Soak(args) => run_soak(args),
        Mode::SoakServer(settings) => soak::serve(*settings),
        Mode::Provide(args) => run_provide(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("junction-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn percentiles_us(h: &Histogram<u64>) -> Value {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({"p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "p999": us(0.999), "max": h.max() as f64 / 1000.0})
}

fn throughput(mode: &str, args: LoadArgs) -> Result<(), String> {
    let t = &args.target;
    let spec = load::LoadSpec {
        endpoint: t.endpoint(),
        workload: t.workload()?,
        connections: args.connections.max(1),
        pipeline: args.pipeline.max(1),
        threads: args.threads.max(1),
        duration: args.duration.0,
        requests: args.requests,
        warmup: args.warmup.0,
        server_pid: args.server_pid,
        tls: match &args.tls_ca {
            Some(ca) => Some(load::Tls::new(ca, &args.tls_server_name)?),
            None => None,
        },
    };
    let mut progress = |secs: f64, answers: u64| {
        eprintln!(
            "  {secs:5.1}s  {answers:>12} answers  {:>12.0} ops/s",
            answers as f64 / secs.max(1e-9)
        );
    };
    let monitor = match args.monitor {
        true => Some(monitor::attach(&spec.endpoint)?),
        false => None,
    };
    let result = load::run(&spec, &mut progress)?;
    // Over the measured window only, like the requests it is divided by.
    let server_cpu = result.server_cpu.map(|d| d.as_secs_f64());
    let ops = result.requests as f64 / result.seconds;
    let report = json!({
        "mode": mode,
        "target": t.target,
        "proto": t.proto,
        "transport": t.transport(),
        "tls": spec.tls.is_some(),
        "connections": spec.connections,
        "pipeline": spec.pipeline,
        "size": t.size,
        "method": t.method,
        "routed": t.routed,
        "threads": spec.threads.min(spec.connections),
        "seconds": result.seconds,
        "requests": result.requests,
        "ops_per_sec": ops,
        "bytes_per_sec": result.bytes as f64 / result.seconds,
        "latency_us": percentiles_us(&result.latency),
        "client_cpu_secs": result.client_cpu.as_secs_f64(),
        "server_cpu_secs": server_cpu,
        "server_cpu_secs_per_million": server_cpu.map(|s| s * 1e6 / result.requests.max(1) as f64),
        "errors": result.errors,
        "monitor": monitor.map(|m| json!({
            "lines": m.lines.load(std::sync::atomic::Ordering::Relaxed),
            "dropped": m.dropped.load(std::sync::atomic::Ordering::Relaxed),
        })),
    });
    if t.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(report: &Value) {
    let field = |k: &str| {
        report
            .get(k)
            .map_or_else(String::new, |v| v.to_string().trim_matches('"').to_string())
    };
    let lat = &report["latency_us"];
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    println!(
        "{} {} {} over {}: C={} P={} S={} method={}{}",
        field("mode"),
        field("target"),
        field("proto"),
        field("transport"),
        field("connections"),
        field("pipeline"),
        field("size"),
        field("method"),
        if report["routed"] == true {
            " (routed)"
        } else {
            ""
        }
    );
    println!(
        "  ops/s          {:>14.0}",
        report["ops_per_sec"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  MB/s           {:>14.1}",
        report["bytes_per_sec"].as_f64().unwrap_or(0.0) / 1e6
    );
    println!(
        "  latency us     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        f(&lat["p50"]),
        f(&lat["p90"]),
        f(&lat["p99"]),
        f(&lat["p999"]),
        f(&lat["max"])
    );
    println!(
        "  generator CPU  {} s (this process)",
        f(&report["client_cpu_secs"])
    );
    println!(
        "  server CPU     {} s per million requests",
        f(&report["server_cpu_secs_per_million"])
    );
    println!("  errors         {}", field("errors"));
}

fn run_provide(args: ProvideArgs) -> Result<(), String> {
    let endpoint = match (args.unix, args.tcp) {
        (Some(path), _) => Endpoint::Unix(path),
        (None, Some(addr)) => Endpoint::Tcp(addr),
        (None, None) => unreachable!("clap requires --unix or --tcp"),
    };
    provider::serve(&endpoint, args.proto)
}

fn run_burst(args: BurstArgs, fd_limit: u64) -> Result<(), String> {
    let t = &args.target;
    if (args.connections as u64) > fd_limit.saturating_sub(64) && args.rate == 0.0 {
        eprintln!(
            "warning: {} connections at once may exceed this process's fd limit ({fd_limit})",
            args.connections
        );
    }
    let cpu = sys::own_cpu();
    let spec = burst::BurstSpec {
        endpoint: t.endpoint(),
        workload: t.workload()?,
        connections: args.connections,
        rate: args.rate,
        timeout: args.timeout.0,
        threads: args.threads.max(1),
    };
    let result = burst::run(&spec)?;
    let report = json!({
        "mode": "burst",
        "target": t.target,
        "proto": t.proto,
        "transport": t.transport(),
        "connections": args.connections,
        "rate": args.rate,
        "ok": result.ok,
        "failures": result.failures,
        "failed": result.failures.total(),
        "seconds": result.seconds,
        "connects_per_sec": args.connections as f64 / result.seconds,
        "connect_us": percentiles_us(&result.connect),
        "first_response_us": percentiles_us(&result.first_response),
        "client_cpu_secs": sys::own_cpu().saturating_sub(cpu).as_secs_f64(),
    });
    if t.json {
        println!("{report}");
    } else {
        let f = &result.failures;
        println!(
            "burst of {} connections over {} ({}) in {:.2}s",
            args.connections,
            t.transport(),
            t.proto,
            result.seconds
        );
        println!("  answered       {}", result.ok);
        println!(
            "  failed         {} (refused {}, reset {}, timeout {}, wrong answer {}, other {})",
            f.total(),
            f.refused,
            f.reset,
            f.timeout,
            f.wrong_answer,
            f.other
        );
        println!("  connect us     {}", report["connect_us"]);
        println!("  answer us      {}", report["first_response_us"]);
    }
    Ok(())
}

fn run_idle(args: IdleArgs) -> Result<(), String> {
    let t = &args.target;
    let plan = idle::IdlePlan {
        count: args.connections,
        pid: args.server_pid,
        settle: args.settle.0,
        concurrent: !args.sequential,
        close_wait: args.close_wait.0,
        partial: args.partial,
    };
    let result = idle::run(&t.endpoint(), &t.workload()?, plan)?;
    if t.json {
        let mut report = serde_json::to_value(&result).map_err(|e| e.to_string())?;
        report["mode"] = json!("idle");
        report["transport"] = json!(t.transport());
        report["proto"] = json!(t.proto);
        report["target"] = json!(t.target);
        println!("{report}");
    } else {
        println!(
            "{} idle connections over {} ({})",
            result.connections,
            t.transport(),
            t.proto
        );
        println!(
            "  server RSS     {} KiB -> {} KiB",
            result.rss_before_kib, result.rss_after_kib
        );
        println!("  per connection {:.0} bytes", result.bytes_per_connection);
        println!(
            "  after close    {} KiB ({:+} KiB)",
            result.rss_after_close_kib, result.after_close_growth_kib
        );
        if let (Some(kib), Some(growth)) = (
            result.rss_after_partial_kib,
            result.after_partial_growth_kib,
        ) {
            println!(
                "  after {} partial frames {kib} KiB ({growth:+} KiB)",
                result.partial
            );
        }
    }
    Ok(())
}

fn run_alloc(args: AllocArgs) -> Result<(), String> {
    let results = alloc::run(args.requests, args.pipeline.max(1), args.size)?;
    if args.json {
        println!(
            "{}",
            json!({"mode": "alloc", "pipeline": args.pipeline, "results": results})
        );
    } else {
        println!(
            "server heap allocations per request (steady state, pipeline {}):",
            args.pipeline
        );
        for r in &results {
            let label = format!(
                "{} {:?}{}",
                r.proto,
                r.method,
                if r.size > 0 {
                    format!(" ({} B)", r.size)
                } else {
                    String::new()
                }
            );
            println!(
                "  {label:<24} {:>8.3}   ({} allocations / {} requests)",
                r.per_request, r.allocations, r.requests
            );
        }
    }
    Ok(())
}

fn run_soak(args: SoakArgs) -> Result<(), String> {
    let launch = match (args.server_pid, args.embedded, args.daemon) {
        (Some(pid), _, _) => {
            if args.unix.is_none() && args.tcp.is_none() {
                return Err("--server-pid needs --unix or --tcp (or both)".into());
            }
            soak::Launch::Attach {
                pid,
                unix: args.unix,
                tcp: args.tcp,
            }
        }
        (None, true, _) => soak::Launch::Embedded(args.daemon_args),
        (None, false, Some(path)) => soak::Launch::Binary(path, args.daemon_args),
        (None, false, None) => {
            let exe = std::env::current_exe().map_err(|e| format!("this executable: {e}"))?;
            let path = exe.with_file_name("junctiond");
            if !path.exists() {
                return Err(format!(
                    "no junctiond at {}: build it (cargo build --release --workspace), \
                     or pass --daemon PATH, --embedded or --server-pid",
                    path.display()
                ));
            }
            soak::Launch::Binary(path, args.daemon_args)
        }
    };
    let duration = args.duration.0;
    // 10% of the run, but at least 10 s (or a quarter of a short run) and at most 30 s.
    let warmup = args.warmup.map_or_else(
        || {
            (duration / 10)
                .max((duration / 4).min(Duration::from_secs(10)))
                .min(Duration::from_secs(30))
        },
        |w| w.0,
    );
    let spec = soak::SoakSpec {
        launch,
        duration,
        warmup,
        interval: args.interval.0.max(Duration::from_millis(50)),
        max_rss_growth: args.max_rss_growth,
        settle: args.settle.0,
        timeout: args.timeout.0,
        max_frame: usize::try_from(args.max_frame.0).map_err(|_| "--max-frame too large")?,
        churn_rate: args.churn_rate,
        seed: args.seed,
    };
    let mut last = std::time::Instant::now();
    let mut progress = |s: &soak::Sample, tally: &soak::Tally| {
        if last.elapsed() >= Duration::from_secs(10) {
            last = std::time::Instant::now();
            eprintln!(
                "  {:6.0}s  RSS {:>7} KiB  fds {:>4}  conns {:>3}  {:>11} answers  {} wrong  {} errors",
                s.t,
                s.rss_kib,
                s.fds,
                s.connections,
                s.answers,
                tally.mismatches.load(std::sync::atomic::Ordering::Relaxed),
                tally.errors.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    };
    let report = soak::run(spec, &mut progress)?;
    if args.json {
        let mut value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        value["mode"] = json!("soak");
        println!("{value}");
    } else {
        soak::print_table(&report);
    }
    if report.verdict == "flat" {
        Ok(())
    } else {
        Err(format!("soak failed: {}", report.reasons.join("; ")))
    }
}
