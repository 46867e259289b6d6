//! `junction`: the command-line client of junctiond.

#[path = "junction/child.rs"]
mod child;
#[path = "junction/describe.rs"]
mod describe;
#[path = "junction/latency.rs"]
mod latency;
#[path = "junction/monitor.rs"]
mod monitor;
#[path = "junction/observe.rs"]
mod observe;
#[path = "junction/provide.rs"]
mod provide;
#[path = "junction/pubsub.rs"]
mod pubsub;
#[path = "junction/reconnect.rs"]
mod reconnect;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::Value;

use junction::Protocol;
use junction::client::path::default_unix_path;
use junction::client::{Body, Client, ClientError, Endpoint};
use junction::config::{ByteSize, Span};

/// Talk to junctiond: call a method, send a notification, watch its stats;
/// provide methods, subscribe to topics, publish events.
///
/// Connects to the default Unix socket unless --unix or --tcp says
/// otherwise. --tcp wins over --unix: with both, the connection is TCP and
/// --unix only says where the daemon's generated token is (beside it).
#[derive(Parser)]
#[command(name = "junction", version)]
struct Args {
    /// Unix socket of the daemon (with --tcp: only where its token is) [default: $XDG_RUNTIME_DIR/junction.sock, else /tmp/junction-UID/junction.sock; $JUNCTION_TMPDIR replaces /tmp]
    #[arg(long, env = "JUNCTION_UNIX", value_name = "PATH")]
    unix: Option<PathBuf>,
    /// TCP address of the daemon, e.g. 127.0.0.1:7710 (wins over --unix and JUNCTION_UNIX, which then only say where the daemon's token is)
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<String>,
    /// Protocol to speak: jsonrpc or mcp1 (binary; carries raw bodies)
    #[arg(long, env = "JUNCTION_PROTO", default_value = "jsonrpc", value_parser = parse_protocol)]
    proto: Protocol,
    /// File holding the token sent with rpc.auth on TCP connections [default: the token the daemon generated, beside its Unix socket (--unix or the default), when readable]
    #[arg(long, env = "JUNCTION_AUTH_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// How long to wait for an answer
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    timeout: Span,
    /// Connect to --tcp over TLS (docs/remote.md)
    #[arg(long, requires = "tcp")]
    tls: bool,
    /// With --tls: PEM CA certificates the daemon's certificate must chain to [default: the system's CAs]
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// With --tls: PEM client certificate for mutual TLS (with --key); it then stands for the token
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// With --tls: PEM private key of --cert
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    key: Option<PathBuf>,
    /// With --tls: the name the daemon's certificate must carry [default: the host of --tcp]
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Call METHOD and print its result as pretty JSON
    Call {
        /// The method, e.g. rpc.ping
        method: String,
        /// Params as JSON, e.g. '[1,2]' (JSON-RPC wants an array or object; MCP1 takes any JSON value)
        #[arg(conflicts_with_all = ["raw", "raw_file"])]
        params: Option<String>,
        /// Send TEXT as a raw body (MCP1 only); a raw result is written to stdout as is
        #[arg(long, value_name = "TEXT", conflicts_with = "raw_file")]
        raw: Option<String>,
        /// Send the bytes of FILE ("-" for stdin) as a raw body (MCP1 only)
        #[arg(long, value_name = "FILE")]
        raw_file: Option<PathBuf>,
    },
    /// Send METHOD as a notification (no answer is expected)
    Notify {
        /// The method
        method: String,
        /// Params as JSON
        params: Option<String>,
    },
    /// Print the daemon's counters; with --watch, a line of rates every interval
    Stats {
        /// Refresh interval, e.g. 1s (runs until interrupted)
        #[arg(long, value_name = "DURATION")]
        watch: Option<Span>,
        /// Only the per-method table: calls, errors, mean latency, p50 and p99 bucket
        #[arg(long, conflicts_with = "watch")]
        methods: bool,
    },
    /// List the daemon's methods
    Methods,
    /// Check the daemon answers and show the round-trip time
    Ping,
    /// Provide METHODs: each call runs COMMAND with the params as JSON on
    /// stdin and answers what it prints on stdout
    ///
    /// The method's name is in $JUNCTION_METHOD and the call's id in
    /// $JUNCTION_CALL_ID; stdin holds `null` when there are no params (a raw
    /// MCP1 body is passed as is, with JUNCTION_RAW=1). Empty stdout answers
    /// null; stdout that is not JSON, or a non-zero exit status, answers
    /// error -32603 with the status and the first line of stderr. With
    /// --text, stdout is the result as a JSON string (less one trailing
    /// newline), and string params ("hi" or ["hi"]) come as plain text on
    /// stdin. A call the daemon cancels has its command killed. When the
    /// daemon goes away, running commands are killed and provide connects
    /// again (100 ms, doubling up to 5 s between attempts) and registers the
    /// same names, unless --no-reconnect. Runs until SIGINT or SIGTERM.
    #[command(
        override_usage = "junction provide [OPTIONS] METHOD... -- COMMAND [ARGS]...",
        after_help = "Example: junction provide demo.upper -- sh -c 'tr a-z A-Z'"
    )]
    Provide {
        /// Method names or patterns such as editor.* (not under rpc. or bus.)
        #[arg(required = true, value_name = "METHOD")]
        methods: Vec<String>,
        /// Commands run at once; further calls wait their turn
        #[arg(long, default_value_t = 4, value_name = "N")]
        jobs: usize,
        /// Calls that may wait for a job before new ones are refused (-32000)
        #[arg(long, default_value_t = 1024, value_name = "N")]
        max_queued: usize,
        /// Most bytes of stdout taken as a result
        #[arg(long, default_value = "1MiB", value_name = "SIZE")]
        max_output: ByteSize,
        /// Plain text: stdout is the result as a JSON string (one trailing
        /// newline dropped); string params come as plain text on stdin
        #[arg(long)]
        text: bool,
        /// Exit (status 3) when the daemon goes away, instead of connecting
        /// and registering again
        #[arg(long)]
        no_reconnect: bool,
        /// The command and its arguments, after --
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print each event on TOPICs as one JSON line: {"topic":..,"data":..}
    /// (with "dropped":N when the daemon had to drop events)
    ///
    /// When the daemon goes away, subscribe connects again (100 ms, doubling
    /// up to 5 s between attempts) and subscribes to the same topics, unless
    /// --no-reconnect; events published meanwhile are not seen.
    Subscribe {
        /// Topics or patterns such as build.*
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// Exit after N events
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Exit (status 3) when the daemon goes away, instead of connecting
        /// and subscribing again
        #[arg(long)]
        no_reconnect: bool,
    },
    /// Publish DATA on TOPIC and print how many subscribers it reached
    Publish {
        /// The topic
        topic: String,
        /// The data as JSON (default: null); - reads it from stdin
        data: Option<String>,
    },
    /// List the bus: provided names and their providers, topics and their subscribers
    List,
    /// Print the Unix socket path the CLI connects to (--unix or
    /// JUNCTION_UNIX, else the default from XDG_RUNTIME_DIR or
    /// JUNCTION_TMPDIR), for tools such as socat and nc
    #[command(after_help = "Example: socat - UNIX-CONNECT:\"$(junction socket-path)\"")]
    SocketPath,
    /// Print a method's OpenRPC description: params and result schemas (rpc.discover); the whole document without METHOD
    Describe {
        /// The method, e.g. rpc.stats or a name a client provides
        method: Option<String>,
    },
    /// Measure round trips (rpc.ping) continuously: min, avg, p50, p99 and max per interval
    #[command(
        after_help = "Refreshed in place on a terminal, one line per interval otherwise.\nExample: junction --tcp 127.0.0.1:7710 --proto mcp1 latency --count 5"
    )]
    Latency {
        /// Length of one report
        #[arg(long, default_value = "1s", value_name = "DURATION")]
        interval: Span,
        /// Pause between round trips
        #[arg(long, default_value = "10ms", value_name = "DURATION")]
        every: Span,
        /// Stop after this many reports [default: run until interrupted]
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// One JSON object per report
        #[arg(long)]
        json: bool,
    },
    /// Watch the calls, answers and events through the daemon, one line each (admins only)
    #[command(
        after_help = "A monitor that reads too slowly loses lines; the next line says how many.\nExample: junction monitor 'editor.*' rpc.ping"
    )]
    Monitor {
        /// Methods and topics to watch: names or prefix patterns (`editor.*`) [default: everything]
        patterns: Vec<String>,
        /// Stop after this many lines
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Print each line as JSON (the dropped count as "dropped")
        #[arg(long)]
        json: bool,
    },
    /// Show the slow log: the last calls slower than slowlog-threshold (admins only)
    Slowlog {
        /// Only the newest N entries
        #[arg(long, value_name = "N")]
        count: Option<usize>,
        /// Empty the slow log instead
        #[arg(long)]
        reset: bool,
        /// Print the answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a completion script for SHELL on stdout
    #[command(
        after_help = "Example: junction completions bash > ~/.local/share/bash-completion/completions/junction"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the manual page junction(1) as roff on stdout
    #[command(after_help = "Example: junction man > junction.1 && man -l junction.1")]
    Man,
}

/// Exit codes: 0 ok, 1 the daemon answered an error, 2 bad usage, 3 no daemon / connection failure.
enum Failure {
    Rpc(String),
    Usage(String),
    Connection(String),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Rpc(message)) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("junction: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Connection(message)) => {
            eprintln!("junction: {message}");
            ExitCode::from(3)
        }
    }
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text {
        "jsonrpc" | "json" => Ok(Protocol::JsonRpc),
        "mcp1" => Ok(Protocol::Mcp1),
        other => Err(format!("unknown protocol {other:?}: use jsonrpc or mcp1")),
    }
}

fn endpoint(args: &Args) -> Endpoint {
    match (&args.tcp, &args.unix) {
        (Some(addr), _) => Endpoint::Tcp(addr.clone()),
        (None, Some(path)) => Endpoint::Unix(path.clone()),
        (None, None) => Endpoint::Unix(default_unix_path()),
    }
}

/// The exit code and message of a client error.
fn failure(error: ClientError) -> Failure {
    match error {
        ClientError::Rpc(e) if e.code == -32007 && e.message.contains("required") => {
            Failure::Rpc(format!(
                "error {}: {}\nhint: junction --tcp reads the token the daemon generated beside its \
                 socket (<socket>.token) when this user may read it; say where the socket is with \
                 --unix PATH, or pass --token-file",
                e.code, e.message
            ))
        }
        ClientError::Rpc(e) => Failure::Rpc(format!("error {}: {}", e.code, e.message)),
        ClientError::Usage(message) => Failure::Usage(message),
        e if e.is_not_running() => Failure::Connection(format!(
            "{e}\nhint: is junctiond running? Start it with `junctiond`, or point --unix/--tcp at it"
        )),
        e => Failure::Connection(e.to_string()),
    }
}

fn parse_params(text: Option<&str>) -> Result<Option<Value>, Failure> {
    let Some(text) = text else {
        return Ok(None);
    };
    serde_json::from_str(text).map(Some).map_err(|e| {
        Failure::Usage(format!(
            "PARAMS must be JSON ({e}); quote strings twice, e.g. '\"hi\"' or '[1,2]'"
        ))
    })
}

fn read_raw(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    let result = if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map(|_| ())
    };
    result
        .map(|()| bytes)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))
}

/// The token file to authenticate a TCP connection with: --token-file, or
/// the one the daemon generated when this user can read it.
fn token_file(args: &Args) -> Option<PathBuf> {
    match (&args.tcp, &args.token_file) {
        (None, _) => None,
        (Some(_), Some(path)) => Some(path.clone()),
        // A client certificate authenticates by itself.
        (Some(_), None) if args.cert.is_some() => None,
        (Some(addr), None) => junction::client::find_token_file(addr, args.unix.as_deref()),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Writes generated text (completions, the manual page) to stdout.
fn emit(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::Connection(format!("cannot write to stdout: {e}")))
}

/// The commands that need no daemon; false for the others.
fn run_offline(args: &Args) -> Result<bool, Failure> {
    match &args.command {
        Command::SocketPath => {
            let path = args.unix.clone().unwrap_or_else(default_unix_path);
            println!("{}", path.display());
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Args::command(), "junction", &mut out);
            emit(&out)?;
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Args::command())
                .render(&mut out)
                .map_err(|e| Failure::Connection(format!("cannot render the manual: {e}")))?;
            emit(&out)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn run(args: Args) -> Result<(), Failure> {
    if run_offline(&args)? {
        return Ok(());
    }
    let endpoint = endpoint(&args);
    let connect = || -> Result<Client, Failure> {
        let mut client = match (&args.tcp, args.tls) {
            (Some(addr), true) => {
                let tls = junction::client::TlsOptions {
                    ca: args.ca.clone(),
                    cert: args.cert.clone(),
                    key: args.key.clone(),
                    server_name: args.server_name.clone(),
                };
                Client::connect_tls(addr, &tls, args.proto).map_err(failure)?
            }
            _ => Client::connect_with(&endpoint, args.proto).map_err(failure)?,
        };
        client.set_timeout(Some(args.timeout.0)).map_err(failure)?;
        if let Some(path) = token_file(&args) {
            client.authenticate_with_file(&path).map_err(|e| match e {
                ClientError::Rpc(e) => Failure::Rpc(format!(
                    "error {}: {} (token from {})",
                    e.code,
                    e.message,
                    path.display()
                )),
                e => failure(e),
            })?;
        }
        Ok(client)
    };
    match &args.command {
        Command::Call {
            method,
            params,
            raw,
            raw_file,
        } => {
            let body = match (raw, raw_file) {
                (Some(text), _) => Some(Body::Raw(text.clone().into_bytes())),
                (None, Some(path)) => Some(Body::Raw(read_raw(path)?)),
                (None, None) => parse_params(params.as_deref())?.map(Body::Json),
            };
            if matches!(body, Some(Body::Raw(_))) && args.proto != Protocol::Mcp1 {
                return Err(Failure::Usage("raw bodies need --proto mcp1".into()));
            }
            match connect()?.call_body(method, body).map_err(failure)? {
                Body::Json(result) => println!("{}", pretty(&result)),
                Body::Raw(bytes) => {
                    let mut stdout = std::io::stdout();
                    stdout
                        .write_all(&bytes)
                        .and_then(|()| stdout.flush())
                        .map_err(|e| {
                            Failure::Connection(format!("cannot write the result: {e}"))
                        })?;
                }
            }
        }
        Command::Notify { method, params } => {
            let params = parse_params(params.as_deref())?;
            connect()?.notify(method, params).map_err(failure)?;
        }
        Command::Stats {
            watch: None,
            methods: true,
        } => {
            let stats = connect()?.call("rpc.stats", None).map_err(failure)?;
            observe::print_methods(&stats);
        }
        Command::Stats { watch: None, .. } => {
            let stats = connect()?.call("rpc.stats", None).map_err(failure)?;
            println!("{}", pretty(&stats));
        }
        Command::Stats {
            watch: Some(every), ..
        } => watch_stats(&mut connect()?, every.0)?,
        Command::Methods => {
            let methods = connect()?.call("rpc.methods", None).map_err(failure)?;
            for m in methods.as_array().into_iter().flatten() {
                let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                println!(
                    "{:<24} {:<7} {}",
                    field("name"),
                    field("mode"),
                    field("description")
                );
            }
        }
        Command::Provide {
            methods,
            jobs,
            max_queued,
            max_output,
            text,
            no_reconnect,
            command,
        } => {
            let options = provide::Options {
                command: command.clone(),
                jobs: *jobs,
                max_queued: *max_queued,
                max_output: max_output.0,
                text: *text,
                reconnect: !*no_reconnect,
            };
            provide::run(&connect, methods, options, &endpoint.to_string())?;
        }
        Command::Subscribe {
            topics,
            count,
            no_reconnect,
        } => {
            let endpoint = endpoint.to_string();
            pubsub::subscribe(&connect, topics, *count, !*no_reconnect, &endpoint)?;
        }
        Command::Publish { topic, data } => {
            pubsub::publish(connect()?, topic, data.as_deref())?;
        }
        Command::List => pubsub::list(connect()?)?,
        Command::Latency {
            interval,
            every,
            count,
            json,
        } => {
            let options = latency::Options {
                interval: interval.0,
                every: every.0,
                count: *count,
                json: *json,
            };
            latency::run(&mut connect()?, &options)?;
        }
        Command::Describe { method } => describe::run(&mut connect()?, method.as_deref())?,
        Command::Monitor {
            patterns,
            count,
            json,
        } => monitor::run(&mut connect()?, patterns, *count, *json)?,
        Command::Slowlog { count, reset, json } => {
            observe::slowlog(&mut connect()?, *count, *reset, *json)?;
        }
        Command::SocketPath | Command::Completions { .. } | Command::Man => {}
        Command::Ping => {
            let mut client = connect()?;
            let started = Instant::now();
            let answer = client.call("rpc.ping", None).map_err(failure)?;
            println!(
                "{} from {endpoint} in {:.1?}",
                answer.as_str().unwrap_or("?"),
                started.elapsed()
            );
        }
    }
    Ok(())
}

/// Numbers read out of one `rpc.stats` answer.
struct Sample {
    at: Instant,
    unix: u64,
    tcp: u64,
    frames: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Sample {
    fn read(stats: &Value) -> Sample {
        let n = |path: &str| stats.pointer(path).and_then(Value::as_u64).unwrap_or(0);
        Sample {
            at: Instant::now(),
            unix: n("/connections/unix/current"),
            tcp: n("/connections/tcp/current"),
            frames: n("/protocols/jsonrpc/frames") + n("/protocols/mcp1/frames"),
            errors: n("/protocols/jsonrpc/errors") + n("/protocols/mcp1/errors"),
            bytes_in: n("/bytes_in"),
            bytes_out: n("/bytes_out"),
        }
    }
}

fn watch_stats(client: &mut Client, every: Duration) -> Result<(), Failure> {
    let every = every.max(Duration::from_millis(100));
    println!(
        "{:>8} {:>8} {:>12} {:>10} {:>12} {:>12}",
        "unix", "tcp", "frames/s", "errors/s", "in B/s", "out B/s"
    );
    let mut last = Sample::read(&client.call("rpc.stats", None).map_err(failure)?);
    loop {
        std::thread::sleep(every);
        let now = Sample::read(&client.call("rpc.stats", None).map_err(failure)?);
        let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-6);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        println!(
            "{:>8} {:>8} {:>12.0} {:>10.0} {:>12.0} {:>12.0}",
            now.unix,
            now.tcp,
            rate(now.frames, last.frames),
            rate(now.errors, last.errors),
            rate(now.bytes_in, last.bytes_in),
            rate(now.bytes_out, last.bytes_out)
        );
        last = now;
    }
}
