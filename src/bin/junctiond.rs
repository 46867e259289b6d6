//! `junctiond`: the Junction daemon.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

use junction::access::SHORT_TOKEN;
use junction::config::{Config, LogFormat, Settings};
use junction::{Router, Server, ShutdownHandle};

/// mimalloc gives memory freed after a burst back to the kernel (glibc's
/// malloc keeps it resident): see docs/design.md, "Memory that comes back".
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Junction: JSON-RPC 2.0 and MCP1 over Unix and TCP sockets.
///
/// Every option can also be set by a JUNCTION_* environment variable or in a
/// TOML file (--config); flags win over the environment, which wins over the file.
#[derive(Parser)]
#[command(name = "junctiond", version)]
struct Args {
    #[command(flatten)]
    settings: Settings,
    /// TOML configuration file (keys as the long flags: max-frame = "1MiB")
    #[arg(long, env = "JUNCTION_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    print_config: bool,
}

fn load_config(args: Args) -> Result<(Config, bool), String> {
    let file = match &args.config {
        Some(path) => Settings::from_file(path).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    let config = Config::resolve(args.settings.over(file)).map_err(|e| e.to_string())?;
    Ok((config, args.print_config))
}

fn init_logging(config: &Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .map_err(|e| format!("invalid --log filter {:?}: {e}", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match config.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot start logging: {e}"))
}

/// SIGINT/SIGTERM are blocked in every thread and taken by one thread with
/// sigwait: the first starts a graceful drain, a second exits at once.
fn block_signals() -> Result<SigSet, String> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    Ok(set)
}

fn watch_signals(set: SigSet, handle: ShutdownHandle) -> Result<(), String> {
    std::thread::Builder::new()
        .name("junction-signals".into())
        .spawn(move || {
            let mut received = 0;
            while let Ok(signal) = set.wait() {
                if signal == Signal::SIGHUP {
                    tracing::info!("SIGHUP ignored: configuration reload is not supported; restart to apply changes");
                    continue;
                }
                received += 1;
                if received == 1 {
                    tracing::info!(signal = %signal, "shutting down (send it again to exit at once)");
                    handle.shutdown();
                } else {
                    tracing::warn!(signal = %signal, "second signal: exiting without draining");
                    std::process::exit(1);
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}

/// Raises the soft open-file limit to the hard one (as Redis does) and warns
/// when it still cannot hold max-connections.
fn raise_fd_limit(config: &Config) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    // Listeners, the poller, the waker, the spare, stdio, workers' needs.
    let needed = (config.max_connections + config.max_unauthenticated) as u64 + 32;
    if limit < needed {
        tracing::warn!(
            fd_limit = limit,
            max_connections = config.max_connections,
            "the open-file limit is below max-connections; raise it (ulimit -n, LimitNOFILE=) \
             or connections will be refused with an out-of-descriptors error"
        );
    } else {
        tracing::info!(fd_limit = limit, "open-file limit");
    }
}

/// Says how TCP clients are let in; the token itself is never logged.
fn report_access(config: &Config) {
    let Some(addr) = config.tcp else { return };
    match &config.access.token {
        Some(token) => {
            tracing::info!("TCP connections must send rpc.auth with the token first");
            if token.len() < SHORT_TOKEN {
                tracing::warn!(
                    bytes = token.len(),
                    "the auth token is short; use at least {SHORT_TOKEN} random bytes"
                );
            }
        }
        None if !addr.ip().is_loopback() => tracing::warn!(
            %addr,
            "protected mode is off: anyone who can reach this address can call every method"
        ),
        None => {}
    }
}

fn run() -> Result<(), String> {
    let (config, print_only) = load_config(Args::parse())?;
    if print_only {
        print!("{}", config.render());
        return Ok(());
    }
    init_logging(&config)?;
    // A panic (a bug: handlers' panics are caught) goes to the log, in its format.
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));
    let signals = block_signals()?;
    raise_fd_limit(&config);
    let server = Server::bind(&config, Router::new()).map_err(|e| e.to_string())?;
    tracing::info!(
        "junctiond {} starting with this configuration:\n{}\n# event loop: {}\n# as the kernel took it: {}",
        env!("CARGO_PKG_VERSION"),
        config.render().trim_end(),
        server.backend(),
        server.socket_report()
    );
    for line in server.listening() {
        tracing::info!("listening on {line}");
    }
    report_access(&config);
    watch_signals(signals, server.shutdown_handle())?;
    server.run().map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("junctiond: {message}");
            ExitCode::FAILURE
        }
    }
}
