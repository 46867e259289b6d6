//! From decoded request to response bytes: routes each request to an inline
//! handler (run here, answered straight into the write queue) or to the
//! worker pool, assembles batch responses, and takes completions back.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::value::RawValue;
use slab::Slab;

use crate::buffer::RingPool;
use crate::error::{ErrorCode, RpcError};
use crate::proto::Protocol;
use crate::proto::jsonrpc::{self, Entry, Message};
use crate::router::{Call, Context, Mode, Params, Reply};
use crate::stats::Stats;
use crate::workers::{Completion, ConnRef, Job, OwnedParams, ReplyTo, SubmitError, WorkerPool};
use crate::write_queue::{ChunkPool, WriteQueue};

/// Limits every connection applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame (a JSON-RPC line, without its newline) in bytes.
    pub max_frame: usize,
    /// Most entries in one JSON-RPC batch.
    pub max_batch: usize,
}

/// What connections borrow from the loop while they run.
pub struct Shared<'a> {
    /// Methods and counters.
    pub context: &'a Arc<Context>,
    /// The pool pooled methods run on.
    pub workers: &'a WorkerPool,
    /// Ring storage.
    pub rings: &'a mut RingPool,
    /// Output chunks.
    pub chunks: &'a mut ChunkPool,
    /// Limits.
    pub limits: Limits,
}

impl Shared<'_> {
    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        self.context.stats()
    }
}

/// A batch whose responses are still being collected.
#[derive(Debug, Default)]
pub struct PendingBatch {
    body: Vec<u8>,
    waiting: usize,
}

impl PendingBatch {
    fn push_entry(&mut self, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        self.body
            .push(if self.body.is_empty() { b'[' } else { b',' });
        write(&mut self.body)
    }
}

/// The parts of a connection that answering touches.
pub struct Dispatcher<'c, 's, 'a> {
    /// Which connection this is (for jobs).
    pub conn: ConnRef,
    /// Its output.
    pub out: &'c mut WriteQueue,
    /// Its batches still waiting on workers.
    pub batches: &'c mut Slab<PendingBatch>,
    /// Its jobs at the pool.
    pub in_flight: &'c mut usize,
    /// The loop's shared state.
    pub shared: &'s mut Shared<'a>,
}

impl Dispatcher<'_, '_, '_> {
    /// Handles one JSON-RPC line.
    pub fn jsonrpc_line(&mut self, line: &[u8]) {
        let stats = self.shared.stats().protocol(Protocol::JsonRpc);
        stats.frames.fetch_add(1, Relaxed);
        match jsonrpc::parse_line(line, self.shared.limits.max_batch) {
            Message::Blank => {}
            Message::Invalid(error) => self.respond(None, |buf| {
                jsonrpc::write_error(buf, None, &error);
                true
            }),
            Message::Single(entry) => self.jsonrpc_entry(entry, None),
            Message::Batch(entries) => {
                let key = self.batches.insert(PendingBatch::default());
                for raw in entries {
                    self.jsonrpc_entry(jsonrpc::parse_entry(raw), Some(key));
                }
                self.finish_batch_if_done(key);
            }
        }
    }

    fn jsonrpc_entry(&mut self, entry: Entry<'_>, batch: Option<usize>) {
        let (id, method, params) = match entry {
            Entry::Request { id, method, params } => (id, method, params),
            Entry::Invalid { id, error } => {
                return self.respond(batch, |buf| {
                    jsonrpc::write_error(buf, id, &error);
                    true
                });
            }
            Entry::Response { id } => {
                // Nothing the daemon sent is waiting for an answer yet.
                tracing::debug!(
                    id = id.map_or("null", RawValue::get),
                    "unsolicited response dropped"
                );
                self.count_error();
                return;
            }
        };
        let Some(handler) = self.shared.context.router().get(&method).cloned() else {
            if id.is_some() {
                self.respond(batch, |buf| {
                    jsonrpc::write_error(buf, id, &RpcError::method_not_found(&method));
                    true
                });
            }
            return;
        };
        if handler.mode() == Mode::Pooled {
            let job = Job {
                conn: self.conn,
                method: handler,
                params: params.map_or(OwnedParams::None, |p| OwnedParams::Json(p.to_owned())),
                reply: ReplyTo::JsonRpc {
                    id: id.map(ToOwned::to_owned),
                    batch,
                },
            };
            return self.submit(job, id, batch);
        }
        let context = Arc::clone(self.shared.context);
        let call = Call {
            method: &method,
            params: params.map_or(Params::None, Params::Json),
            context: &context,
        };
        match id {
            Some(id) => self.respond(batch, |buf| {
                jsonrpc::write_response(buf, Some(id), |r| handler.invoke(&call, r)).is_some()
            }),
            None => {
                // A notification runs for its effect; nothing is answered.
                self.out.append(self.shared.chunks, |buf| {
                    let start = buf.len();
                    let _ = handler.invoke(&call, &mut Reply::new(buf));
                    buf.truncate(start);
                });
            }
        }
    }

    fn submit(&mut self, job: Job, id: Option<&RawValue>, batch: Option<usize>) {
        let error = match self.shared.workers.submit(job) {
            Ok(()) => {
                *self.in_flight += 1;
                if let Some(b) = batch.and_then(|key| self.batches.get_mut(key)) {
                    b.waiting += 1;
                }
                return;
            }
            Err(SubmitError::Full(_)) => {
                Stats::bump(&self.shared.stats().rejected_busy);
                RpcError::with(
                    ErrorCode::ServerBusy,
                    "the worker queue is full; retry later",
                )
            }
            Err(SubmitError::Closed(_)) => {
                RpcError::with(ErrorCode::ServerBusy, "the daemon is shutting down")
            }
        };
        if id.is_some() {
            self.respond(batch, |buf| {
                jsonrpc::write_error(buf, id, &error);
                true
            });
        }
    }

    /// Writes one response: a line of its own, or an entry of a batch.
    fn respond(&mut self, batch: Option<usize>, write: impl FnOnce(&mut Vec<u8>) -> bool) {
        let is_error = match batch.and_then(|key| self.batches.get_mut(key)) {
            Some(pending) => pending.push_entry(write),
            None => self.out.append(self.shared.chunks, |buf| {
                let is_error = write(buf);
                buf.push(b'\n');
                is_error
            }),
        };
        if is_error {
            self.count_error();
        }
    }

    fn count_error(&self) {
        let stats = self.shared.stats().protocol(Protocol::JsonRpc);
        stats.errors.fetch_add(1, Relaxed);
    }

    fn finish_batch_if_done(&mut self, key: usize) {
        if self.batches.get(key).is_some_and(|b| b.waiting == 0) {
            let mut done = self.batches.remove(key);
            if !done.body.is_empty() {
                // A batch of notifications only gets no response at all.
                done.body.extend_from_slice(b"]\n");
                self.out.push_frame(done.body, self.shared.chunks);
            }
        }
    }

    /// Takes back a job the pool finished.
    pub fn complete(&mut self, done: Completion) {
        *self.in_flight = self.in_flight.saturating_sub(1);
        if done.is_error {
            self.count_error();
        }
        match done.batch {
            None => self.out.push_frame(done.frame, self.shared.chunks),
            Some(key) => {
                if let Some(pending) = self.batches.get_mut(key) {
                    if !done.frame.is_empty() {
                        pending.push_entry(|buf| {
                            buf.extend_from_slice(&done.frame);
                            false
                        });
                    }
                    pending.waiting = pending.waiting.saturating_sub(1);
                }
                self.finish_batch_if_done(key);
            }
        }
    }
}
