//! Reload without a restart (SIGHUP, `rpc.reload`): the configuration file
//! is read again and its reloadable part applied while connections stay open.
//!
//! Reloaded: the access policy (`allow-uids`, `allow-gids`, `allow`,
//! `deny`, `[[policy]]`, `tcp-anonymous`), the TCP tokens (`auth-token-file`, read again) and the
//! log filter (`log`). Everything else (listeners, backend, workers, limits,
//! timeouts, socket options, `bus-allow`) is read by the loop once at start:
//! a change to it is reported as needing a restart and otherwise ignored.
//!
//! The new policy is swapped in whole ([`Swappable`]); the loop sees the
//! generation move at the start of its next turn and judges every open
//! connection again: it gets the rights the new policy gives its identity,
//! or is closed when that identity is no longer let in at all (a Unix peer
//! off the allow-list, a TCP connection whose token was removed, an
//! anonymous one once `tcp-anonymous` is off). A file that does not parse,
//! or a policy the listeners cannot run with, changes nothing: the old
//! configuration stays and the reason is logged (and answered to `rpc.reload`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde::Serialize;

use crate::access::{Access, NamedToken};
use crate::config::Config;
use crate::policy::Guard;
use crate::router::Context;

/// The policy in force, swapped whole by a reload; readers take an `Arc`
/// of it, so a call under way keeps the policy it started with.
#[derive(Debug)]
pub struct Swappable {
    current: RwLock<(Arc<Access>, Arc<Guard>)>,
    generation: AtomicU64,
    reloader: OnceLock<Reloader>,
}

impl Default for Swappable {
    fn default() -> Self {
        Self {
            current: RwLock::new((Arc::default(), Arc::default())),
            generation: AtomicU64::new(0),
            reloader: OnceLock::new(),
        }
    }
}

impl Swappable {
    /// The access configuration in force.
    pub fn access(&self) -> Arc<Access> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current.0),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().0),
        }
    }

    /// The guard compiled from it.
    pub fn guard(&self) -> Arc<Guard> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current.1),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().1),
        }
    }

    /// Puts `access` in force (with the `bus-allow` rules `legacy`) and
    /// moves the generation, so that the loop judges open connections again.
    pub fn set(&self, access: Access, legacy: &crate::bus::policy::Policy) {
        let guard = Guard::new(&access, legacy);
        guard.carry_over(&self.guard());
        let next = (Arc::new(access), Arc::new(guard));
        match self.current.write() {
            Ok(mut current) => *current = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Moves on each swap; the loop compares it with the one it last applied.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Installs the reloader (once; later calls are ignored).
    pub fn install(&self, reloader: Reloader) {
        let _ = self.reloader.set(reloader);
    }
}

/// Where a reload reads the configuration from: the file again, under the
/// same flags and environment (which still win over it).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Applies a new log filter (checked first; an invalid one is an error).
pub type LogSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Re-reads the configuration and applies its reloadable part.
pub struct Reloader {
    source: ConfigSource,
    log: Option<LogSetter>,
    /// The TCP address listened on, whose rules (protected mode) a new policy must pass.
    tcp: Option<SocketAddr>,
    /// The token the server generated at start (no token configured).
    generated: Option<NamedToken>,
    /// The configuration last applied, to report what needs a restart.
    applied: Mutex<Config>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader reading `source`, setting the log filter with `log`;
    /// `tcp`, `generated` and `applied` come from the server (see
    /// `Server::enable_reload`).
    pub(crate) fn new(
        source: ConfigSource,
        log: Option<LogSetter>,
        tcp: Option<SocketAddr>,
        generated: Option<NamedToken>,
        applied: Config,
    ) -> Self {
        Self {
            source,
            log,
            tcp,
            generated,
            applied: Mutex::new(applied),
        }
    }
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The daemon was started without a way to read its configuration again.
    #[error("reload is not enabled on this server (no configuration source)")]
    Disabled,
    /// The file (or the tokens, or the policy) could not be read or is invalid.
    #[error("the configuration was not reloaded (the old one stays in force): {0}")]
    Invalid(String),
}

/// What a reload did: answered by `rpc.reload`, logged for SIGHUP.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// What was applied.
    pub reloaded: Vec<&'static str>,
    /// Settings that changed in the file but are only read at start.
    pub restart_needed: Vec<String>,
    /// The policy generation now in force.
    pub generation: u64,
}

/// The settings a reload applies, as the file names them.
pub const RELOADABLE: &[&str] = &[
    "allow-uids",
    "allow-gids",
    "allow",
    "deny",
    "policy",
    "tcp-anonymous",
    "auth-token-file",
    "log",
    "slowlog-threshold",
    "slowlog-max-len",
];

/// Reads the configuration again and applies its reloadable part; on any
/// error the old configuration stays in force and the reason is returned.
pub fn reload(context: &Context) -> Result<ReloadReport, ReloadError> {
    let result = apply(context);
    match &result {
        Ok(report) => {
            tracing::info!(
                generation = report.generation,
                restart_needed = ?report.restart_needed,
                "configuration reloaded (policy, tokens, log filter); open connections judged again"
            );
            context.notifier().status("Configuration reloaded");
        }
        Err(e) => tracing::error!("{e}"),
    }
    result
}

fn apply(context: &Context) -> Result<ReloadReport, ReloadError> {
    let swappable = context.policy();
    let reloader = swappable.reloader.get().ok_or(ReloadError::Disabled)?;
    let mut config = (reloader.source)().map_err(ReloadError::Invalid)?;
    let configured = !config.access.tokens.is_empty() || config.access.tcp_anonymous;
    match &reloader.generated {
        // The generated token stands while no token is configured, as at start.
        Some(owner) if !configured => config.access.tokens.push(owner.clone()),
        Some(_) => {}
        None if reloader.tcp.is_some() && !configured => {
            return Err(ReloadError::Invalid(
                "the new configuration has no auth token, so no TCP client could authenticate; \
                 keep at least one token (or restart to have one generated)"
                    .into(),
            ));
        }
        None => {}
    }
    if let Some(addr) = reloader.tcp {
        crate::server::check_tcp_access(addr, &config)
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
    }
    let mut applied = match reloader.applied.lock() {
        Ok(applied) => applied,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(set_log) = &reloader.log {
        if config.log != applied.log {
            set_log(&config.log)
                .map_err(|e| ReloadError::Invalid(format!("invalid log filter: {e}")))?;
        }
    }
    let restart_needed = restart_needed(&applied, &config);
    for key in &restart_needed {
        tracing::warn!(
            setting = %key,
            "this setting changed in the configuration but is only read at start; restart to apply it"
        );
    }
    swappable.set(config.access.clone(), &context.bus_config().policy);
    let slowlog = &context.observe().slowlog;
    slowlog.configure(config.slowlog_threshold, config.slowlog_max_len);
    *applied = config;
    Ok(ReloadReport {
        reloaded: RELOADABLE.to_vec(),
        restart_needed,
        generation: swappable.generation(),
    })
}

/// The settings other than the reloadable ones that differ between `old`
/// and `new`, by the lines of their rendered TOML.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut new = new.clone();
    new.access = old.access.clone();
    new.auth_token_file.clone_from(&old.auth_token_file);
    new.log.clone_from(&old.log);
    new.slowlog_threshold = old.slowlog_threshold;
    new.slowlog_max_len = old.slowlog_max_len;
    if &new == old {
        return Vec::new();
    }
    let before = old.render();
    let after = new.render();
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
    let mut keys: Vec<String> = after
        .lines()
        .filter(|line| !before.lines().any(|b| b == *line))
        .chain(
            before
                .lines()
                .filter(|line| !after.lines().any(|a| a == *line)),
        )
        .map(key)
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with('['))
        .collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        keys.push("(a setting only read at start)".into());
    }
    keys
}

/// Installs `reloader` on `context` (see `Server::enable_reload`).
pub(crate) fn install(context: &Arc<Context>, reloader: Reloader) {
    context.policy().install(reloader);
}
