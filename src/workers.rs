//! The worker pool: jobs in through a bounded crossbeam channel, completed
//! frames back through an unbounded one and the loop's single `Waker`.
//!
//! Wake-ups are coalesced: a worker wakes the loop only when the `pending`
//! flag was clear, and the loop clears it before draining, so a burst of
//! completions costs one wake-up, and none is ever lost.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::value::RawValue;

use crate::proto::{Protocol, jsonrpc, mcp1};
use crate::reactor::Waker;
use crate::router::{Call, Context, Method, Params, Reply};
use crate::stats::ClientInfo;

/// Names one connection across slot reuse: a completion for a closed
/// connection whose slab slot was reused carries the old generation and is
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// The slab key (and mio token).
    pub token: usize,
    /// Bumped each time the slot is reused.
    pub generation: u32,
}

/// Params a job owns (the frame they came from is gone by the time it runs).
#[derive(Debug)]
pub enum OwnedParams {
    /// No params.
    None,
    /// JSON params.
    Json(Box<RawValue>),
    /// Raw bytes.
    Raw(Vec<u8>),
}

impl From<Params<'_>> for OwnedParams {
    fn from(params: Params<'_>) -> Self {
        match params {
            Params::None => OwnedParams::None,
            Params::Json(raw) => OwnedParams::Json(raw.to_owned()),
            Params::Raw(bytes) => OwnedParams::Raw(bytes.to_vec()),
        }
    }
}

impl OwnedParams {
    fn borrow(&self) -> Params<'_> {
        match self {
            OwnedParams::None => Params::None,
            OwnedParams::Json(raw) => Params::Json(raw),
            OwnedParams::Raw(bytes) => Params::Raw(bytes),
        }
    }
}

/// How the result of a job is framed, and where it goes on the connection.
#[derive(Debug)]
pub enum ReplyTo {
    /// A JSON-RPC call or notification.
    JsonRpc {
        /// The raw id; None for a notification (run, answer nothing).
        id: Option<Box<RawValue>>,
        /// The pending batch the response belongs to, if any.
        batch: Option<usize>,
    },
    /// An MCP1 request (`id` Some) or notification.
    Mcp1 {
        /// The request id; None for a notification.
        id: Option<u32>,
    },
}

/// A request handed to the pool.
pub struct Job {
    /// The connection that asked.
    pub conn: ConnRef,
    /// The method to run.
    pub method: Arc<Method>,
    /// Its params.
    pub params: OwnedParams,
    /// How to answer.
    pub reply: ReplyTo,
    /// When its frame was decoded (its latency counts from there).
    pub started: std::time::Instant,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("conn", &self.conn)
            .field("method", &self.method.name())
            .field("params", &self.params)
            .field("reply", &self.reply)
            .finish()
    }
}

/// A finished job on its way back to the loop.
#[derive(Debug)]
pub struct Completion {
    /// The connection to answer.
    pub conn: ConnRef,
    /// The protocol the frame is in.
    pub protocol: Protocol,
    /// The batch the frame belongs to, if any.
    pub batch: Option<usize>,
    /// The encoded response (empty for a notification). Single responses end
    /// with their frame terminator; batch entries do not.
    pub frame: Vec<u8>,
    /// True when the frame is an error response.
    pub is_error: bool,
    /// The call's start and counters, recorded when the loop takes it back.
    pub timing: Option<crate::observe::Timing>,
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is at its bound.
    Full(Job),
    /// The pool has shut down.
    Closed(Job),
}

/// The pool of worker threads.
pub struct WorkerPool {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Set when the drain timed out: workers drop the jobs still queued.
    abandoned: Arc<AtomicBool>,
}

/// The loop's end of the completion queue.
pub struct Completions {
    queue: Receiver<Completion>,
    pending: Arc<AtomicBool>,
}

impl Completions {
    /// Takes every completion waiting now; call after each wake-up.
    pub fn drain(&self) -> impl Iterator<Item = Completion> + '_ {
        // Clear first: a completion sent during the drain wakes the loop again.
        self.pending.store(false, Ordering::Release);
        self.queue.try_iter()
    }
}

impl WorkerPool {
    /// Starts `size` workers with a job queue bounded to `queue_bound`.
    pub fn start(
        size: usize,
        queue_bound: usize,
        context: Arc<Context>,
        waker: Arc<Waker>,
    ) -> io::Result<(Self, Completions)> {
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(queue_bound);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Completion>();
        let pending = Arc::new(AtomicBool::new(false));
        let abandoned = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(size);
        for index in 0..size {
            let worker = Worker {
                jobs: job_rx.clone(),
                done: done_tx.clone(),
                pending: Arc::clone(&pending),
                waker: Arc::clone(&waker),
                context: Arc::clone(&context),
                abandoned: Arc::clone(&abandoned),
            };
            let thread = std::thread::Builder::new()
                .name(format!("junction-worker-{index}"))
                .spawn(move || worker.run())?;
            threads.push(thread);
        }
        let pool = WorkerPool {
            jobs: Some(job_tx),
            threads,
            abandoned,
        };
        let completions = Completions {
            queue: done_rx,
            pending,
        };
        Ok((pool, completions))
    }

    /// Queues a job without blocking the loop.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let Some(jobs) = &self.jobs else {
            return Err(SubmitError::Closed(job));
        };
        jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) => SubmitError::Full(job),
            TrySendError::Disconnected(job) => SubmitError::Closed(job),
        })
    }

    /// Stops without waiting: queued jobs are dropped, running handlers end
    /// on their own threads (used when the drain timeout runs out).
    pub fn abandon(&mut self) {
        self.abandoned.store(true, Ordering::Release);
        self.jobs = None;
        self.threads.clear();
    }

    /// Lets the workers finish the queued jobs, then joins them.
    pub fn shutdown(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked outside a handler");
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    jobs: Receiver<Job>,
    done: Sender<Completion>,
    pending: Arc<AtomicBool>,
    waker: Arc<Waker>,
    context: Arc<Context>,
    abandoned: Arc<AtomicBool>,
}

impl Worker {
    fn run(self) {
        for job in self.jobs.iter() {
            if self.abandoned.load(Ordering::Acquire) {
                continue;
            }
            let completion = job.run(&self.context, None);
            if self.done.send(completion).is_err() {
                return; // The loop is gone.
            }
            if !self.pending.swap(true, Ordering::AcqRel) {
                if let Err(e) = self.waker.wake() {
                    tracing::error!(error = %e, "cannot wake the event loop");
                }
            }
        }
    }
}

impl Job {
    /// Runs the job and encodes its response frame: on a worker, or on the
    /// loop for [`crate::router::Mode::Loop`] methods (which see `clients`).
    pub fn run(self, context: &Context, clients: Option<&[ClientInfo]>) -> Completion {
        let job = self;
        let call = Call {
            method: job.method.name(),
            params: job.params.borrow(),
            context,
            clients,
        };
        let run = |reply: &mut Reply<'_>| job.method.invoke(&call, reply);
        let mut done = encode_into(job.conn, &job.reply, Vec::new(), run);
        done.timing = Some(crate::observe::Timing {
            stats: Arc::clone(job.method.stats()),
            started: job.started,
        });
        done
    }
}

/// Encodes into `frame` the response to `reply_to` that `run` writes: a
/// pool job's, or a routed call's answer from its provider.
pub(crate) fn encode_into(
    conn: ConnRef,
    reply_to: &ReplyTo,
    mut frame: Vec<u8>,
    run: impl FnOnce(&mut Reply<'_>) -> Result<(), crate::error::RpcError>,
) -> Completion {
    // `frame` may already hold other frames (the bus encodes into one buffer).
    let start = frame.len();
    let (protocol, batch, sent_error) = match reply_to {
        ReplyTo::JsonRpc {
            id: Some(id),
            batch,
        } => {
            let error = jsonrpc::write_response(&mut frame, Some(id), run);
            if batch.is_none() {
                frame.push(b'\n');
            }
            (Protocol::JsonRpc, *batch, error)
        }
        ReplyTo::Mcp1 { id: Some(id) } => (
            Protocol::Mcp1,
            None,
            mcp1::write_response(&mut frame, *id, run),
        ),
        ReplyTo::JsonRpc { id: None, batch } => {
            // A notification runs for its effect; its result is dropped.
            let _ = run(&mut Reply::new(&mut frame));
            frame.truncate(start);
            (Protocol::JsonRpc, *batch, None)
        }
        ReplyTo::Mcp1 { id: None } => {
            let _ = run(&mut Reply::new(&mut frame));
            frame.truncate(start);
            (Protocol::Mcp1, None, None)
        }
    };
    Completion {
        conn,
        protocol,
        batch,
        frame,
        is_error: sent_error.is_some(),
        timing: None,
    }
}
