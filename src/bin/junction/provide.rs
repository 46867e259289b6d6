//! `junction provide METHOD... -- COMMAND...`: registers the methods and
//! serves each forwarded call by running COMMAND (see child.rs), up to
//! `--jobs` at a time. A cancel kills the call's command; SIGINT or SIGTERM
//! kill them all and exit 0. Losing the daemon kills the running commands
//! (their callers are gone with it) and connects again, registering the
//! same names (see reconnect.rs); with `--no-reconnect` it exits 3.

use std::collections::{HashMap, VecDeque};
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use junction::client::{Body, Client, ClientError, Incoming, Responder};
use junction::{ErrorCode, RpcError};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::unistd::Pid;

use crate::Failure;
use crate::child::{self, Invocation};
use crate::reconnect::{self, Connect};

/// How `provide` runs its calls.
pub struct Options {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Commands running at once.
    pub jobs: usize,
    /// Calls waiting for a free job before new ones are refused.
    pub max_queued: usize,
    /// Most stdout bytes taken as a result.
    pub max_output: u64,
    /// Text mode: string params as plain text, stdout as a JSON string.
    pub text: bool,
    /// Connect and register again when the daemon goes away.
    pub reconnect: bool,
}

/// One call (or notification) to serve.
struct Job {
    id: Option<u64>,
    method: String,
    params: Option<Body>,
}

/// A job a worker has taken: its child once started, and whether the
/// daemon cancelled it meanwhile.
struct Slot {
    call: Option<u64>,
    child: Option<Child>,
    cancelled: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    running: HashMap<u64, Slot>,
    next_slot: u64,
    closed: bool,
}

/// The queue of calls and the workers' running children.
#[derive(Default)]
struct Pool {
    state: Mutex<State>,
    ready: Condvar,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job; gives it back when the queue is full or closed.
    fn submit(&self, job: Job, max_queued: usize) -> Result<(), Job> {
        let mut state = self.lock();
        if state.closed || state.queue.len() >= max_queued {
            return Err(job);
        }
        state.queue.push_back(job);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job for a worker, with its slot; None once closed.
    fn take(&self) -> Option<(u64, Job)> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(job) = state.queue.pop_front() {
                let slot = state.next_slot;
                state.next_slot += 1;
                let entry = Slot {
                    call: job.id,
                    child: None,
                    cancelled: false,
                };
                state.running.insert(slot, entry);
                return Some((slot, job));
            }
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Hands the slot its child, unless it was cancelled meanwhile (then
    /// the child comes back, killed).
    fn attach(&self, slot: u64, mut child: Child) -> Result<(), Child> {
        let mut state = self.lock();
        match state.running.get_mut(&slot) {
            Some(entry) if !entry.cancelled => {
                entry.child = Some(child);
                Ok(())
            }
            _ => {
                kill(&mut child);
                Err(child)
            }
        }
    }

    /// Takes the child back for reaping (it is no longer killable by id).
    fn detach(&self, slot: u64) -> Option<Child> {
        self.lock().running.get_mut(&slot)?.child.take()
    }

    /// Frees the slot; true if the call was cancelled (no answer is due).
    fn finish(&self, slot: u64) -> bool {
        self.lock()
            .running
            .remove(&slot)
            .is_none_or(|s| s.cancelled)
    }

    /// Drops call `id` if it waits; kills its command if it runs.
    fn cancel(&self, id: u64) -> bool {
        let mut state = self.lock();
        if let Some(at) = state.queue.iter().position(|job| job.id == Some(id)) {
            state.queue.remove(at);
            return true;
        }
        let Some(entry) = state.running.values_mut().find(|s| s.call == Some(id)) else {
            return false;
        };
        entry.cancelled = true;
        if let Some(child) = entry.child.as_mut() {
            kill(child);
        }
        true
    }

    /// Refuses new work and kills every running command.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.queue.clear();
        for entry in state.running.values_mut() {
            entry.cancelled = true;
            if let Some(child) = entry.child.as_mut() {
                kill(child);
            }
        }
        self.ready.notify_all();
    }
}

/// Kills the child's whole process group (it leads one), so that what a
/// shell started dies with it. The child is not reaped yet, so its pid
/// cannot have been reused.
fn kill(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
}

/// Registers `methods` and serves calls until a signal (Ok), or the loss
/// of the daemon (Err) when not reconnecting.
pub fn run(
    connect: Connect<'_>,
    methods: &[String],
    options: Options,
    endpoint: &str,
) -> Result<(), Failure> {
    // Blocked before any thread starts, so every thread inherits the mask
    // and only the signal thread sees them (children get a clean mask).
    let signals = block_signals()?;
    let mut client = connect()?;
    let names = client.register(methods).map_err(register_failure)?;
    client.set_timeout(None).map_err(crate::failure)?;
    let options = Arc::new(options);
    // The pool of the current connection, for the signal thread to close.
    let current = Arc::new(Mutex::new(Arc::new(Pool::default())));
    {
        let current = Arc::clone(&current);
        std::thread::spawn(move || {
            let signal = signals
                .wait()
                .map_or("a signal".to_string(), |s| s.to_string());
            current.lock().unwrap_or_else(|p| p.into_inner()).close();
            eprintln!("junction: {signal}: stopped providing");
            std::process::exit(0);
        });
    }
    eprintln!(
        "junction: providing {} on {endpoint}: each call runs `{}` ({} at a time)",
        names.join(", "),
        child::display(&options.command),
        options.jobs.max(1)
    );
    loop {
        let pool = Arc::new(Pool::default());
        *current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&pool);
        for _ in 0..options.jobs.max(1) {
            let (pool, options, responder) =
                (Arc::clone(&pool), Arc::clone(&options), client.responder());
            std::thread::spawn(move || work(&pool, &options, &responder));
        }
        let lost = serve(&mut client, &pool, &options);
        // Calls in flight died with the connection: kill their commands.
        pool.close();
        if !options.reconnect {
            return Err(Failure::Connection(format!("{lost}; no longer providing")));
        }
        eprintln!("junction: daemon gone ({lost}); reconnecting…");
        let (again, names) = reconnect::again(connect, |c| {
            let names = c.register(methods)?;
            c.set_timeout(None)?;
            Ok(names)
        })
        .map_err(|e| match e {
            Failure::Rpc(message) => {
                Failure::Rpc(format!("junction: cannot provide again: {message}"))
            }
            other => other,
        })?;
        client = again;
        eprintln!(
            "junction: reconnected to {endpoint}; registered {}",
            names.join(", ")
        );
    }
}

fn block_signals() -> Result<SigSet, Failure> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()
        .map_err(|e| Failure::Connection(format!("cannot block SIGINT/SIGTERM: {e}")))?;
    Ok(set)
}

fn register_failure(error: ClientError) -> Failure {
    let hint = match &error {
        ClientError::Rpc(e) if e.code == ErrorCode::MethodNotFound.code() => {
            "\nhint: this junctiond has no service bus (no bus.register): it is older than `junction`"
        }
        _ => "",
    };
    match crate::failure(error) {
        Failure::Rpc(message) => Failure::Rpc(format!("junction: cannot provide: {message}{hint}")),
        other => other,
    }
}

/// The reading loop: queue calls, pass on cancels, until the daemon goes;
/// returns how it went.
fn serve(client: &mut Client, pool: &Pool, options: &Options) -> String {
    let responder = client.responder();
    loop {
        let message = match client.next_message() {
            Ok(message) => message,
            Err(e) => return lost(e),
        };
        match message {
            Incoming::Request(call) => {
                let job = Job {
                    id: Some(call.id),
                    method: call.method,
                    params: call.params,
                };
                if let Err(job) = pool.submit(job, options.max_queued) {
                    refuse(&responder, &job, options);
                }
            }
            Incoming::Notification { method, params } => {
                // Forwarded notifications run too; nobody hears the answer.
                let _ = pool.submit(
                    Job {
                        id: None,
                        method,
                        params,
                    },
                    options.max_queued,
                );
            }
            Incoming::Cancel { id, .. } => {
                pool.cancel(id);
            }
            Incoming::Response(response) => {
                if let Err(e) = response.result {
                    eprintln!("junction: the daemon says: error {}: {}", e.code, e.message);
                }
            }
            Incoming::Event(_) => {}
        }
    }
}

/// What ended a connection, for messages.
pub fn lost(error: ClientError) -> String {
    match error {
        ClientError::Closed(why) => {
            let why = why.map(|w| format!(": {w}")).unwrap_or_default();
            format!("the daemon closed the connection{why}")
        }
        e => e.to_string(),
    }
}

fn refuse(responder: &Responder, job: &Job, options: &Options) {
    if let Some(id) = job.id {
        let error = RpcError::with(
            ErrorCode::ServerBusy,
            format_args!(
                "the provider has {} calls waiting for one of its {} jobs",
                options.max_queued,
                options.jobs.max(1)
            ),
        );
        let _ = responder.respond(id, Err(error));
    }
}

/// A worker: runs jobs until the pool closes.
fn work(pool: &Pool, options: &Options, responder: &Responder) {
    while let Some((slot, job)) = pool.take() {
        let result = execute(pool, slot, &job, options);
        let cancelled = pool.finish(slot);
        if let (Some(id), false) = (job.id, cancelled) {
            // A failed write means the daemon is gone: the reader sees it.
            let _ = responder.respond(id, result);
        }
    }
}

fn execute(pool: &Pool, slot: u64, job: &Job, options: &Options) -> Result<Body, RpcError> {
    let invocation = Invocation {
        command: &options.command,
        method: &job.method,
        id: job.id,
        params: job.params.as_ref(),
        text: options.text,
    };
    let (child, pipes) = child::start(&invocation)?;
    if let Err(mut child) = pool.attach(slot, child) {
        let _ = child.wait();
        return Err(RpcError::new(child::COMMAND_FAILED, "cancelled"));
    }
    let output = pipes.collect(options.max_output);
    let status = match pool.detach(slot) {
        Some(mut child) => child.wait(),
        None => return Err(RpcError::new(child::COMMAND_FAILED, "cancelled")),
    };
    child::answer(&options.command, status, &output, options.text)
}
