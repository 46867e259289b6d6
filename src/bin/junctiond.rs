//! `junctiond`: the Junction daemon.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

use junction::access::SHORT_TOKEN;
use junction::config::{Config, LogFormat, Settings};
use junction::reload::{ConfigSource, LogSetter};
use junction::{ReloadHandle, Router, Server, ShutdownHandle};

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
    /// Print this manual page (roff, for man -l or a man1 directory) and exit
    #[arg(long)]
    man: bool,
}

/// The manual page, from the same definitions as --help (clap_mangen, as `junction man`).
fn print_man() -> Result<(), String> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut out = Vec::new();
    clap_mangen::Man::new(Args::command())
        .render(&mut out)
        .map_err(|e| format!("cannot render the manual: {e}"))?;
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| format!("cannot write the manual: {e}"))
}

/// Reads the file (when given) under the flags and environment, which win over it.
fn read_config(settings: &Settings, file: Option<&Path>) -> Result<Config, String> {
    let file = match file {
        Some(path) => Settings::from_file(path).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    Config::resolve(settings.clone().over(file)).map_err(|e| e.to_string())
}

/// The configuration, whether to print it only, and how to read it again
/// for a reload (the same file under the same flags and environment).
fn load_config(args: Args) -> Result<(Config, bool, ConfigSource), String> {
    let config = read_config(&args.settings, args.config.as_deref())?;
    let (settings, file) = (args.settings, args.config);
    let source: ConfigSource = Box::new(move || read_config(&settings, file.as_deref()));
    Ok((config, args.print_config, source))
}

/// Starts logging; returns how to change the filter on a reload.
fn init_logging(config: &Config) -> Result<LogSetter, String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log)
        .map_err(|e| format!("invalid --log filter {:?}: {e}", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let parse = |text: &str| EnvFilter::try_new(text).map_err(|e| format!("{text:?}: {e}"));
    let (result, setter): (_, LogSetter) = match config.log_format {
        LogFormat::Human => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let setter =
                Box::new(move |text: &str| handle.reload(parse(text)?).map_err(|e| e.to_string()));
            (builder.try_init(), setter)
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            let setter =
                Box::new(move |text: &str| handle.reload(parse(text)?).map_err(|e| e.to_string()));
            (builder.try_init(), setter)
        }
    };
    result.map_err(|e| format!("cannot start logging: {e}"))?;
    Ok(setter)
}

/// SIGINT/SIGTERM/SIGHUP are blocked in every thread and taken by one thread
/// with sigwait: the first SIGINT/SIGTERM starts the shutdown (the
/// `shutdown-grace`, then a graceful drain), a second during the grace ends
/// the grace, one during the drain exits at once; SIGHUP reloads the
/// configuration (see `junction::reload`).
fn block_signals() -> Result<SigSet, String> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    Ok(set)
}

fn watch_signals(
    set: SigSet,
    handle: ShutdownHandle,
    reload: ReloadHandle,
    grace: std::time::Duration,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("junction-signals".into())
        .spawn(move || {
            let mut received = 0;
            let mut grace_ends = None;
            while let Ok(signal) = set.wait() {
                if signal == Signal::SIGHUP {
                    // Logged by the reload itself, success or not.
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = reload.reload();
                    continue;
                }
                received += 1;
                if received == 1 && !grace.is_zero() {
                    tracing::info!(
                        signal = %signal,
                        "shutting down after the shutdown grace (send it again to drain now)"
                    );
                    grace_ends = Some(std::time::Instant::now() + grace);
                    handle.shutdown();
                } else if received == 1 {
                    tracing::info!(signal = %signal, "shutting down (send it again to exit at once)");
                    handle.shutdown();
                } else if received == 2
                    && grace_ends.is_some_and(|at| std::time::Instant::now() < at)
                {
                    // The loop takes a second request as the end of the grace.
                    tracing::info!(signal = %signal, "second signal: draining now (send it again to exit at once)");
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

/// Says how TCP clients are let in; tokens themselves are never logged.
fn report_access(config: &Config, server: &Server) {
    let Some(addr) = server.tcp_addr() else {
        return;
    };
    let access = &config.access;
    if access.tcp_anonymous {
        tracing::warn!(
            %addr,
            "tcp-anonymous is on: any local user may connect over TCP without a token, as the \
             identity `anonymous` (rights: rpc.* plus what the policy grants `anonymous`)"
        );
    }
    // A generated token is reported by the server itself (its file's path).
    if server.token_file().is_none() && !access.tokens.is_empty() {
        let names: Vec<&str> = access.tokens.iter().map(|t| t.name.as_str()).collect();
        tracing::info!(
            tokens = %names.join(","),
            "TCP connections must send rpc.auth with one of the configured tokens first"
        );
        for short in access.tokens.iter().filter(|t| t.token.len() < SHORT_TOKEN) {
            tracing::warn!(
                token = %short.name,
                bytes = short.token.len(),
                "this auth token is short; use at least {SHORT_TOKEN} random bytes (refused off loopback)"
            );
        }
    }
    if !addr.ip().is_loopback() && !config.protected_mode && access.tokens.is_empty() {
        tracing::warn!(%addr, "protected mode is off: TCP is open to the network behind the generated token");
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse();
    if args.man {
        return print_man();
    }
    let (config, print_only, source) = load_config(args)?;
    if print_only {
        print!("{}", config.render());
        return Ok(());
    }
    let log_setter = init_logging(&config)?;
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
    report_access(&config, &server);
    server.enable_reload(source, Some(log_setter));
    watch_signals(
        signals,
        server.shutdown_handle(),
        server.reload_handle(),
        config.shutdown_grace,
    )?;
    server.run().map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// Large allocations (the connection slab, the loop's lists, io_uring's
/// arenas) always get mappings of their own, so that freeing or shrinking
/// one after a burst returns its pages at once. glibc otherwise raises its
/// mmap threshold each time such a block is freed, and the next ones land
/// in the heap, where they stay resident (measured: about 370 B per idle
/// connection of the 5,000 of a burst, docs/benchmarks.md).
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("junctiond: {message}");
            ExitCode::FAILURE
        }
    }
}
