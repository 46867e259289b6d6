//! The completion driver: io_uring (Linux).
//!
//! Multishot ACCEPT on each listener. Each connection has one multishot
//! POLL_ADD (POLLIN | POLLRDHUP) posted for its whole life: it holds no
//! buffer, so an idle connection costs no ring memory, and it is not posted
//! again per request. Each time data (or the peer's FIN) arrives it reports
//! an edge, like edge-triggered epoll; a READ or READV with RWF_NOWAIT then
//! goes into the free regions of the connection's ring buffer, and gives
//! EAGAIN rather than waiting with the buffer pinned when the socket is
//! empty. A connection whose input the core holds (max-in-flight,
//! max-output, a parked job) is not read, but its poll still reports a peer
//! that hangs up, at once. An edge that comes while a read is in flight is
//! remembered, and the socket read again when that read ends. Output goes
//! out with WRITEV from the write queue, whose chunks are sealed while the
//! kernel reads them. The pool wakes the loop through an eventfd with a
//! READ posted on it. One `io_uring_enter` per turn submits everything and
//! waits.
//!
//! Buffers the kernel may touch are never moved or freed while an operation
//! is in flight: a closed connection is retired only after every operation
//! it had in flight has completed (or been cancelled).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::io::{Progress, ReadTarget};
use super::{Client, Core, Drain, LoopConfig, Waker};
use crate::net::Listener;
use crate::router::Context;
use crate::workers::{Completions, WorkerPool};
use crate::write_queue::MAX_IOVECS;

/// Submission queue entries; the completion queue gets twice as many.
/// The rings are the kernel's pages mapped into the daemon: a burst that
/// fills them once leaves them resident for good (64 B per submission and
/// 16 B per completion entry: 96 KiB at 1,024, 384 KiB at 4,096, which was
/// 59 B per idle connection after a burst of 5,000). A turn with more
/// entries submits as it goes (`make_room`), and completions past the
/// queue wait in the kernel (IORING_FEAT_NODROP) for the next reap.
const ENTRIES: u32 = 1024;

/// Rounds of [`UringLoop::read_on`] per turn.
const READ_ON_ROUNDS: usize = 4;

/// What a completion is for: the top byte of its user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Wake = 1,
    Accept = 2,
    Poll = 3,
    Read = 4,
    Write = 5,
    Cancel = 6,
}

/// Packs an operation, a connection's generation (low 24 bits) and key.
fn tag(op: Op, generation: u32, key: usize) -> u64 {
    (op as u64) << 56 | u64::from(generation & 0x00FF_FFFF) << 32 | (key as u64 & 0xFFFF_FFFF)
}

fn untag(data: u64) -> (Option<Op>, u32, usize) {
    let op = match (data >> 56) as u8 {
        1 => Some(Op::Wake),
        2 => Some(Op::Accept),
        3 => Some(Op::Poll),
        4 => Some(Op::Read),
        5 => Some(Op::Write),
        6 => Some(Op::Cancel),
        _ => None,
    };
    (
        op,
        (data >> 32) as u32 & 0x00FF_FFFF,
        (data & 0xFFFF_FFFF) as usize,
    )
}

/// The descriptor an operation names: the connection's slot in the ring's
/// table of registered files, or (without one) its plain descriptor.
#[derive(Debug, Clone, Copy)]
enum File {
    Fd(RawFd),
    Fixed(u32),
}

/// Builds an entry on a [`File`]: `$build` sees the descriptor as `$f`,
/// plain or registered.
macro_rules! on_file {
    ($file:expr, |$f:ident| $build:expr) => {
        match $file {
            File::Fd(fd) => {
                let $f = types::Fd(fd);
                $build
            }
            File::Fixed(slot) => {
                let $f = types::Fixed(slot);
                $build
            }
        }
    };
}

/// Why io_uring cannot be used here.
#[derive(Debug, thiserror::Error)]
#[error("io_uring is unavailable: {0}")]
pub struct Unavailable(String);

/// Checks that this kernel (and any seccomp filter or sysctl) allows an
/// io_uring with everything the driver needs.
pub fn probe() -> Result<(), Unavailable> {
    // Multishot accept came in 5.19; the opcode probe cannot tell it apart.
    if let Some(release) = kernel_release().filter(|r| *r < (5, 19)) {
        return Err(Unavailable(format!(
            "Linux {}.{} is older than 5.19 (multishot accept)",
            release.0, release.1
        )));
    }
    let ring = IoUring::new(8).map_err(|e| {
        Unavailable(match e.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)".into(),
            Some(libc::EPERM) => {
                "io_uring is not permitted (kernel.io_uring_disabled, or a seccomp filter: EPERM)"
                    .into()
            }
            _ => format!("io_uring_setup failed: {e}"),
        })
    })?;
    let params = ring.params();
    if !params.is_feature_nodrop() || !params.is_feature_submit_stable() {
        return Err(Unavailable(
            "the kernel lacks IORING_FEAT_NODROP or SUBMIT_STABLE (Linux 5.5+)".into(),
        ));
    }
    if !params.is_feature_ext_arg() {
        return Err(Unavailable(
            "the kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11+)".into(),
        ));
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| Unavailable(format!("cannot probe io_uring opcodes: {e}")))?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "ACCEPT"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::Readv::CODE, "READV"),
        (opcode::Writev::CODE, "WRITEV"),
        (opcode::Read::CODE, "READ"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(Unavailable(format!("the kernel lacks IORING_OP_{name}")));
        }
    }
    Ok(())
}

/// The running kernel's major and minor version, if it can be read.
fn kernel_release() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = text.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The eventfd the pool wakes the loop with.
pub fn waker() -> io::Result<Waker> {
    let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    Ok(Waker::EventFd(fd))
}

/// A ring with the flags that suit one thread doing all submissions, or a
/// plain one on kernels without them.
fn new_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(ENTRIES * 2)
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(ENTRIES)
        .or_else(|_| IoUring::builder().setup_cqsize(ENTRIES * 2).build(ENTRIES))
}

/// The operations a connection has in flight.
#[derive(Debug, Clone, Copy, Default)]
struct InFlight {
    generation: u32,
    /// The multishot poll is posted (until a completion without
    /// IORING_CQE_F_MORE ends it).
    poll: bool,
    read: bool,
    write: bool,
    /// The poll reported an edge that no read has followed yet.
    ready: bool,
    /// The poll saw the peer end its input: reads go on to the EOF, since
    /// no later edge will say that more is there.
    eof: bool,
    /// Bytes the posted READV may fill, and the posted WRITEV covers.
    read_room: u32,
    write_total: u32,
    /// Its slot in the table of registered files, if it has one.
    fixed: Option<u32>,
}

impl InFlight {
    fn count(&self) -> usize {
        usize::from(self.poll) + usize::from(self.read) + usize::from(self.write)
    }
}

/// A closed connection whose operations have not all completed yet.
struct Retiring {
    client: Client,
    key: usize,
    ops: InFlight,
}

/// The loop on io_uring.
pub struct UringLoop {
    ring: IoUring,
    /// Slots of the ring's table of registered files.
    fixed: FixedFiles,
    core: Core,
    wake_fd: RawFd,
    /// Keeps the eventfd open for as long as a read may be posted on it.
    _waker: Arc<Waker>,
    /// Where the posted eventfd read lands; leaked, since the kernel may
    /// still write it after the ring is dropped.
    wake_buf: &'static mut u64,
    /// Per connection key.
    ops: Vec<InFlight>,
    retiring: Vec<Retiring>,
    /// iovec arrays of entries not yet submitted; cleared after each submit
    /// (the kernel copies them at submission: IORING_FEAT_SUBMIT_STABLE).
    iovecs: Vec<libc::iovec>,
    /// Whether each listener has a multishot accept posted.
    accepting: Vec<bool>,
    /// Out of descriptors: no accept is posted again before this.
    accept_pause: Option<std::time::Instant>,
    /// The accepts were cancelled for the drain.
    accepts_cancelled: bool,
    /// Connections that want their poll posted at the end of the turn.
    rearm: Vec<usize>,
    /// Completions of this turn, copied out of the queue.
    completed: Vec<(u64, i32, u32)>,
    /// Reads posted this turn because one filled its ring.
    read_again: usize,
}

impl UringLoop {
    /// Assembles the loop; listeners must already be bound and `waker` be
    /// the eventfd from [`waker`], shared with the pool.
    pub fn new(
        listeners: Vec<Listener>,
        context: Arc<Context>,
        workers: (WorkerPool, Completions),
        config: LoopConfig,
        shutdown: Arc<AtomicBool>,
        waker: Arc<Waker>,
    ) -> io::Result<Self> {
        let Waker::EventFd(fd) = waker.as_ref() else {
            return Err(io::Error::other("the io_uring loop needs an eventfd waker"));
        };
        let wake_fd = fd.as_fd().as_raw_fd();
        let listener_count = listeners.len();
        let slots = fixed_slots(config.max_connections.saturating_add(config.max_unauthenticated));
        let core = Core::new(listeners, context, workers, config, shutdown);
        let ring = new_ring()?;
        let fixed = FixedFiles::new(&ring, slots);
        let mut this = Self {
            ring,
            fixed,
            core,
            wake_fd,
            _waker: waker,
            wake_buf: Box::leak(Box::new(0)),
            ops: Vec::new(),
            retiring: Vec::new(),
            iovecs: Vec::with_capacity(ENTRIES as usize * MAX_IOVECS),
            accepting: vec![false; listener_count],
            accept_pause: None,
            accepts_cancelled: false,
            rearm: Vec::new(),
            completed: Vec::with_capacity(ENTRIES as usize * 2),
            read_again: 0,
        };
        this.post_wake_read()?;
        for index in 0..listener_count {
            this.post_accept(index)?;
        }
        Ok(this)
    }

    /// Joins the cluster (`--nats`, src/federation/) before running.
    pub(crate) fn with_federation(
        mut self,
        federation: Option<(crate::federation::Uplink, crate::federation::Link)>,
    ) -> Self {
        self.core.attach_federation(federation);
        self
    }

    /// Runs until shutdown is requested and the drain completes.
    pub fn run(mut self) -> io::Result<()> {
        loop {
            self.submit_and_wait()?;
            self.core.begin_turn();
            let carried = self.core.take_unread();
            self.reap()?;
            for key in carried {
                self.start_read(key)?;
            }
            self.read_on()?;
            self.core.after_reads();
            self.flush_dirty()?;
            self.core.fire_timers();
            self.flush_dirty()?;
            if self.core.take_quiet_after_burst() {
                self.renew_arenas();
            }
            let drain = self.core.end_turn();
            // Retire first: a slot closed and reused this turn must not lend
            // the old connection's operations to the new one.
            self.retire_closed()?;
            self.watch_admitted()?;
            self.rearm_polls()?;
            self.rearm_accepts()?;
            if drain != Drain::Running {
                return self.shut_down();
            }
        }
    }

    /// Reads on, within the turn, the connections whose read filled their
    /// ring, as epoll does: a pipelined block bigger than the ring (16 KiB
    /// at first) is then parsed, answered and written in one turn rather
    /// than two, with one write. The reads carry RWF_NOWAIT, so they complete
    /// at submission; a few rounds at most (`READS_PER_TURN` bounds epoll's
    /// reads of one connection the same way), then the rest waits for the
    /// next turn, after the others.
    fn read_on(&mut self) -> io::Result<()> {
        for _ in 0..READ_ON_ROUNDS {
            if self.read_again == 0 {
                break;
            }
            self.read_again = 0;
            match self.ring.submit() {
                // The kernel has copied the iovecs (IORING_FEAT_SUBMIT_STABLE).
                Ok(_) => self.iovecs.clear(),
                // Interrupted, or the completion queue is full: the reads
                // (and their iovecs) wait for the turn's own submit.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => break,
                Err(e) => return Err(e),
            }
            self.reap()?;
        }
        self.read_again = 0;
        Ok(())
    }

    /// Replaces the per-turn arenas with fresh ones of the same capacity
    /// once a burst has passed. They are preallocated so that a busy turn
    /// never grows them (4 MiB of iovecs, 128 KiB of completions), which
    /// costs nothing until a burst touches their pages; a fresh allocation
    /// of that size is a new untouched mapping, and freeing the old one
    /// gives its pages back. Between turns both are empty: the iovecs are
    /// cleared at each submit, the completions after each reap.
    fn renew_arenas(&mut self) {
        if self.iovecs.is_empty() {
            self.iovecs = Vec::new();
            self.iovecs = Vec::with_capacity(ENTRIES as usize * MAX_IOVECS);
        }
        if self.completed.is_empty() {
            self.completed = Vec::new();
            self.completed = Vec::with_capacity(ENTRIES as usize * 2);
        }
    }

    /// Submits what this turn queued and waits for a completion, a timer,
    /// or (with work already waiting) not at all.
    fn submit_and_wait(&mut self) -> io::Result<()> {
        let result = match self.core.wait_timeout() {
            Some(Duration::ZERO) => self.ring.submit(),
            None => self.ring.submit_and_wait(1),
            Some(timeout) => {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        self.iovecs.clear();
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Makes room for one entry (and `iovecs` iovecs), submitting what is
    /// queued when the submission queue or the iovec arena is full.
    fn make_room(&mut self, iovecs: usize) -> io::Result<()> {
        let full =
            self.ring.submission().is_full() || self.iovecs.len() + iovecs > self.iovecs.capacity();
        if full {
            self.ring.submit()?;
            self.iovecs.clear();
        }
        Ok(())
    }

    /// Queues an entry whose buffers stay valid until it completes.
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        self.make_room(0)?;
        // SAFETY: every entry built here points at memory that outlives the
        // operation: the loop's own wake buffer, iovecs in the arena (copied
        // by the kernel at submission, IORING_FEAT_SUBMIT_STABLE), and ring
        // or write-queue memory of a connection that is neither moved nor
        // freed until the operation's completion has been reaped.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    fn post_wake_read(&mut self) -> io::Result<()> {
        let buf = std::ptr::from_mut::<u64>(self.wake_buf).cast::<u8>();
        let entry = opcode::Read::new(types::Fd(self.wake_fd), buf, 8)
            .build()
            .user_data(tag(Op::Wake, 0, 0));
        self.push(entry)
    }

    fn post_accept(&mut self, index: usize) -> io::Result<()> {
        let Some(listener) = self.core.listeners_mut().get(index) else {
            return Ok(());
        };
        let entry = opcode::AcceptMulti::new(types::Fd(listener.raw_fd()))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(tag(Op::Accept, 0, index));
        self.push(entry)?;
        self.accepting[index] = true;
        Ok(())
    }

    /// Multishot accepts end on errors (EMFILE among them): post them again,
    /// unless the listeners are gone (draining).
    fn rearm_accepts(&mut self) -> io::Result<()> {
        if self.core.draining() {
            return self.cancel_accepts();
        }
        if self
            .accept_pause
            .is_some_and(|until| std::time::Instant::now() < until)
        {
            return Ok(());
        }
        for index in 0..self.accepting.len() {
            if !self.accepting[index] {
                self.post_accept(index)?;
            }
        }
        Ok(())
    }

    /// The drain closed the listeners, but a posted accept holds its socket
    /// open in the kernel: cancel them so no connection is taken any more.
    fn cancel_accepts(&mut self) -> io::Result<()> {
        if self.accepts_cancelled {
            return Ok(());
        }
        self.accepts_cancelled = true;
        for index in 0..self.accepting.len() {
            if self.accepting[index] {
                let entry = opcode::AsyncCancel::new(tag(Op::Accept, 0, index))
                    .build()
                    .user_data(tag(Op::Cancel, 0, index));
                self.push(entry)?;
            }
        }
        Ok(())
    }

    fn in_flight(&mut self, key: usize) -> &mut InFlight {
        if self.ops.len() <= key {
            self.ops.resize(key + 1, InFlight::default());
        }
        &mut self.ops[key]
    }

    /// Handles every completion waiting in the queue.
    fn reap(&mut self) -> io::Result<()> {
        let mut completed = std::mem::take(&mut self.completed);
        completed.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, result, flags) in &completed {
            let (op, generation, key) = untag(data);
            match op {
                Some(Op::Wake) => self.post_wake_read()?,
                Some(Op::Accept) => self.accepted(key, result, flags),
                Some(Op::Poll) => {
                    let ended = !cqueue::more(flags);
                    if self.settle_op(key, generation, Op::Poll, ended) {
                        self.polled(key, result, ended)?;
                    }
                }
                Some(Op::Read) => {
                    let room = self.ops.get(key).map_or(0, |o| o.read_room as usize);
                    if self.settle_op(key, generation, Op::Read, true) {
                        self.read_done(key, result, room)?;
                    }
                }
                Some(Op::Write) => {
                    let total = self.ops.get(key).map_or(0, |o| o.write_total as usize);
                    if self.settle_op(key, generation, Op::Write, true) {
                        self.write_done(key, result, total);
                    }
                }
                Some(Op::Cancel) | None => {}
            }
        }
        completed.clear();
        self.completed = completed;
        Ok(())
    }

    /// Records that an operation completed (`ended`: a multishot poll's
    /// completion may not be its last). True when it belongs to a live
    /// connection; a retired connection's last completion releases it.
    fn settle_op(&mut self, key: usize, generation: u32, op: Op, ended: bool) -> bool {
        let live = self
            .core
            .client_mut(key)
            .is_some_and(|c| c.conn.id().generation & 0x00FF_FFFF == generation);
        if live {
            if ended {
                clear(self.in_flight(key), op);
            }
            return true;
        }
        if !ended {
            return false;
        }
        // Closed this turn and not retired yet: its operations are still
        // counted in the slot. (A slot emptied by retiring has none, and a
        // generation that wrapped to 0 must not match it.)
        if let Some(ops) = self
            .ops
            .get_mut(key)
            .filter(|o| o.generation == generation && o.count() > 0)
        {
            clear(ops, op);
            return false;
        }
        let Some(pos) = self
            .retiring
            .iter()
            .position(|r| r.key == key && r.ops.generation == generation)
        else {
            return false;
        };
        clear(&mut self.retiring[pos].ops, op);
        if self.retiring[pos].ops.count() == 0 {
            let retired = self.retiring.swap_remove(pos);
            self.release(retired.client, retired.ops.fixed);
        }
        false
    }

    /// Gives a closed connection's buffers back once nothing in flight
    /// points into them, and its registered file's slot: the table holds a
    /// reference to the socket, which stays open until the slot is cleared.
    fn release(&mut self, client: Client, fixed: Option<u32>) {
        if let Some(slot) = fixed {
            self.fixed.unregister(&self.ring, slot);
        }
        self.core.release(client);
    }

    /// Registers the socket of a connection just accepted, if a slot is
    /// free: its operations then skip the kernel's descriptor lookup (and
    /// reference counting) on every submission.
    fn register_file(&mut self, key: usize) {
        let Some(client) = self.core.client_mut(key) else {
            return;
        };
        let (fd, generation) = (client.stream.as_raw_fd(), client.conn.id().generation & 0x00FF_FFFF);
        if self.ops.get(key).is_some_and(|o| o.fixed.is_some()) {
            // Registered already: never take a second slot.
            return;
        }
        let slot = self.fixed.register(&self.ring, key, fd);
        let ops = self.in_flight(key);
        ops.generation = generation;
        ops.fixed = slot;
    }

    fn accepted(&mut self, index: usize, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            if let Some(armed) = self.accepting.get_mut(index) {
                *armed = false;
            }
        }
        if result >= 0 {
            // SAFETY: a successful accept completion carries a new descriptor
            // that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            let options = self.core.config.sockets;
            if let Some(listener) = self.core.listeners_mut().get(index) {
                let stream = listener.adopt(fd, &options);
                self.core.admit(stream);
            }
            return;
        }
        match -result {
            libc::EMFILE | libc::ENFILE => {
                while self.core.shed_one(index) {}
                // Post the accept again only once descriptors may be free;
                // the timer wakes the loop then.
                let retry = std::time::Instant::now() + super::timers::ACCEPT_RETRY;
                self.accept_pause = Some(retry);
                self.core
                    .add_timer(retry, index, 0, super::TimerKind::AcceptRetry);
            }
            libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::ECANCELED => {}
            errno => {
                crate::stats::Stats::bump(&self.core.stats().accept_errors);
                tracing::warn!(error = %io::Error::from_raw_os_error(errno), "accept failed");
            }
        }
    }

    /// Starts a READV into the connection's ring, if it wants input now;
    /// with one in flight, remembers to read again when it ends.
    fn start_read(&mut self, key: usize) -> io::Result<()> {
        if let Some(ops) = self.ops.get_mut(key).filter(|o| o.read) {
            ops.ready = true;
            return Ok(());
        }
        let Some(generation) = self.generation_of(key) else {
            return Ok(());
        };
        self.make_room(2)?;
        let start = self.iovecs.len();
        let (fd, room) = match self.core.read_target(key) {
            ReadTarget::Read {
                stream,
                iov,
                used,
                room,
            } => {
                for slice in &iov[..used] {
                    self.iovecs.push(libc::iovec {
                        iov_base: slice.as_ptr() as *mut libc::c_void,
                        iov_len: slice.len(),
                    });
                }
                (stream.as_raw_fd(), room)
            }
            ReadTarget::NotNow => return Ok(()),
        };
        let file = self.file_of(key, fd);
        let entry = single_or_vectored(file, &self.iovecs[start..], false).user_data(tag(
            Op::Read,
            generation,
            key,
        ));
        self.push(entry)?;
        let ops = self.in_flight(key);
        ops.generation = generation & 0x00FF_FFFF;
        ops.read = true;
        // The read sees everything that arrived before it runs.
        ops.ready = false;
        ops.read_room = room as u32;
        Ok(())
    }

    /// The connection's poll reported an edge (or ended: `ended`). A peer
    /// that is gone is closed by the core, or read to the end if its input
    /// is not held; one that only ended its input while held is left to the
    /// core's sweep. Whatever arrived is read now, or once the read in
    /// flight ends; a held connection is read when the core lets it go.
    fn polled(&mut self, key: usize, result: i32, ended: bool) -> io::Result<()> {
        if result < 0 && result != -libc::ECANCELED {
            tracing::debug!(conn = key, error = %io::Error::from_raw_os_error(-result), "poll failed");
            self.core.close(key);
            return Ok(());
        }
        if ended {
            // Ended by the kernel (a full completion queue): post it again,
            // and read, since an edge may have gone by unreported.
            self.rearm.push(key);
        }
        let ended_input = result > 0
            && result & i32::from(libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
        if ended_input {
            self.in_flight(key).eof = true;
        }
        if !self.core.not_reading(key) {
            // May find no memory to read into: then it waits (not reading).
            self.start_read(key)?;
        }
        if hung_up(result) {
            // Closed now if nothing reads it to the end.
            self.core.hung_up(key);
        } else if ended_input && self.core.not_reading(key) {
            self.core.read_closed(key);
        }
        Ok(())
    }

    fn file_of(&self, key: usize, fd: RawFd) -> File {
        match self.ops.get(key).and_then(|o| o.fixed) {
            Some(slot) => File::Fixed(slot),
            None => File::Fd(fd),
        }
    }

    fn generation_of(&mut self, key: usize) -> Option<u32> {
        self.core.client_mut(key).map(|c| c.conn.id().generation)
    }

    fn read_done(&mut self, key: usize, result: i32, room: usize) -> io::Result<()> {
        let result = if result >= 0 {
            Ok(result as usize)
        } else {
            Err(io::Error::from_raw_os_error(-result))
        };
        let (ready, eof) = self.ops.get(key).map_or((false, false), |o| (o.ready, o.eof));
        let progress = self.core.on_read(key, result, room, eof);
        // Whatever was read is answered this turn.
        self.core.end_read(key, false);
        match progress {
            // The ring filled, or an edge came meanwhile: there may be more,
            // read within this turn (see `read_on`).
            Progress::Again => {
                self.read_again += 1;
                self.start_read(key)
            }
            Progress::Stop if ready => self.start_read(key),
            // The socket is empty; its poll reports the next edge.
            Progress::Stop => Ok(()),
        }
    }

    fn write_done(&mut self, key: usize, result: i32, total: usize) {
        let result = if result >= 0 {
            Ok(result as usize)
        } else {
            Err(io::Error::from_raw_os_error(-result))
        };
        if self.core.on_write(key, result, total) == Progress::Again {
            self.core.mark_dirty(key);
        } else if self
            .core
            .client_mut(key)
            .is_some_and(|c| c.layer.is_some() || !c.conn.output().is_empty())
        {
            // A short write: the socket is full. Write again once it drains.
            // (Drained: nothing to flush until new output marks it dirty.)
            self.core.mark_dirty(key);
        }
        self.core.end_write(key);
    }

    /// Posts a WRITEV for each dirty connection with output and no write in
    /// flight; connections with nothing to write are settled.
    fn flush_dirty(&mut self) -> io::Result<()> {
        let dirty = self.core.take_dirty();
        for &key in &dirty {
            if self.ops.get(key).is_some_and(|o| o.write) {
                continue; // Its completion marks it dirty again.
            }
            self.make_room(MAX_IOVECS)?;
            let start = self.iovecs.len();
            let mut iov = [io::IoSlice::new(&[]); MAX_IOVECS];
            let target = self
                .core
                .write_target(key, &mut iov)
                .map(|(stream, used, total)| (stream.as_raw_fd(), used, total));
            let Some((fd, used, total)) = target else {
                self.core.end_write(key);
                continue;
            };
            self.iovecs.extend(iov[..used].iter().map(|s| libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            }));
            let Some(client) = self.core.client_mut(key) else {
                continue;
            };
            client.conn.seal_output();
            let generation = client.conn.id().generation;
            let file = self.file_of(key, fd);
            let entry = single_or_vectored(file, &self.iovecs[start..], true)
                .user_data(tag(Op::Write, generation, key));
            self.push(entry)?;
            let ops = self.in_flight(key);
            ops.generation = generation & 0x00FF_FFFF;
            ops.write = true;
            ops.write_total = total as u32;
        }
        self.core.return_dirty(dirty);
        Ok(())
    }

    /// Posts the poll of connections accepted this turn.
    fn watch_admitted(&mut self) -> io::Result<()> {
        let mut admitted: Vec<usize> = self.core.take_admitted().collect();
        // A key taken twice this turn (closed and reused) is one connection now.
        admitted.sort_unstable();
        admitted.dedup();
        for key in admitted {
            if let Some(ops) = self.ops.get_mut(key) {
                // A fresh connection in a reused slot starts with nothing in
                // flight (a retiring one took its operations and file along).
                if ops.count() == 0 {
                    *ops = InFlight::default();
                }
            }
            self.register_file(key);
            self.rearm.push(key);
        }
        Ok(())
    }

    /// Posts the multishot poll of each connection that has none: new
    /// ones, and those whose poll the kernel ended. POLLHUP and POLLERR are
    /// always reported.
    fn rearm_polls(&mut self) -> io::Result<()> {
        let mut rearm = std::mem::take(&mut self.rearm);
        rearm.sort_unstable();
        rearm.dedup();
        for &key in &rearm {
            let Some(client) = self.core.client_mut(key) else {
                continue;
            };
            let fd = client.stream.as_raw_fd();
            let generation = client.conn.id().generation;
            if self.in_flight(key).poll {
                continue;
            }
            let events = (libc::POLLIN | libc::POLLRDHUP) as u32;
            let entry = on_file!(self.file_of(key, fd), |f| opcode::PollAdd::new(f, events)
                .multi(true)
                .build())
                .user_data(tag(Op::Poll, generation, key));
            self.push(entry)?;
            let ops = self.in_flight(key);
            ops.generation = generation & 0x00FF_FFFF;
            ops.poll = true;
        }
        rearm.clear();
        self.rearm = rearm;
        Ok(())
    }

    /// Retires connections the core closed: at once when no read or write
    /// is in flight (a poll holds no buffer: it is cancelled, and its
    /// completion, of an old generation, is ignored), else after cancelling
    /// what is and reaping the completions.
    fn retire_closed(&mut self) -> io::Result<()> {
        for client in self.core.take_closed() {
            let key = client.conn.id().token;
            let generation = client.conn.id().generation & 0x00FF_FFFF;
            let ops = match self.ops.get_mut(key) {
                Some(ops) if ops.generation == generation => std::mem::take(ops),
                _ => {
                    self.core.release(client);
                    continue;
                }
            };
            for (on, op) in [
                (ops.poll, Op::Poll),
                (ops.read, Op::Read),
                (ops.write, Op::Write),
            ] {
                if on {
                    let entry = opcode::AsyncCancel::new(tag(op, generation, key))
                        .build()
                        .user_data(tag(Op::Cancel, generation, key));
                    self.push(entry)?;
                }
            }
            if ops.read || ops.write {
                self.retiring.push(Retiring { client, key, ops });
            } else {
                self.release(client, ops.fixed);
            }
        }
        Ok(())
    }

    /// Stops: cancels what is still in flight and waits (briefly) for the
    /// kernel to let go of every buffer before they are dropped.
    fn shut_down(mut self) -> io::Result<()> {
        for key in 0..self.ops.len() {
            if self.core.client_mut(key).is_some() {
                self.core.close(key);
            }
        }
        self.retire_closed()?;
        for _ in 0..100 {
            if self.retiring.is_empty() {
                break;
            }
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(e) => return Err(e),
            }
            self.reap()?;
        }
        if !self.retiring.is_empty() {
            // Never free memory the kernel may still write: leak it instead.
            tracing::warn!(
                connections = self.retiring.len(),
                "io_uring operations still in flight at exit"
            );
            std::mem::forget(std::mem::take(&mut self.retiring));
        }
        Ok(())
    }
}

/// At most this many connections have a registered file; the rest use
/// their plain descriptor. The kernel keeps a table entry per slot (and
/// refuses more slots than RLIMIT_NOFILE).
const MAX_FIXED: u32 = 1 << 16;

/// How many slots to ask for: one per connection the daemon serves, within
/// the descriptor limit.
fn fixed_slots(max_connections: usize) -> u32 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which outlives the call.
    let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    };
    let wanted = u64::try_from(max_connections).unwrap_or(u64::MAX);
    u32::try_from(wanted.min(nofile).min(u64::from(MAX_FIXED))).unwrap_or(MAX_FIXED)
}

/// The ring's table of registered files. A connection's slot is its key,
/// taken at accept and given back once the connection's last operation has
/// completed: a connection that reuses the key of one still retiring (whose
/// submitted operations must keep naming the old socket) uses its plain
/// descriptor instead.
struct FixedFiles {
    /// Slots in the table; 0 when the kernel refused the table.
    capacity: u32,
    /// One bit per slot in use (8 KiB for the most slots).
    busy: Vec<u64>,
}

impl FixedFiles {
    fn new(ring: &IoUring, capacity: u32) -> Self {
        let capacity = match ring.submitter().register_files_sparse(capacity) {
            Ok(()) => capacity,
            Err(e) => {
                tracing::debug!(error = %e, "no registered files: plain descriptors");
                0
            }
        };
        Self {
            capacity,
            busy: vec![0; capacity.div_ceil(64) as usize],
        }
    }

    /// Puts `fd` in the slot of connection `key`; None (plain descriptor)
    /// when that slot is taken or out of range, or the kernel refuses.
    fn register(&mut self, ring: &IoUring, key: usize, fd: RawFd) -> Option<u32> {
        let slot = u32::try_from(key).ok().filter(|&s| s < self.capacity)?;
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        if self.busy[word] & bit != 0 {
            return None;
        }
        match ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => {
                self.busy[word] |= bit;
                Some(slot)
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot register a connection's socket");
                None
            }
        }
    }

    /// Empties `slot`, dropping the table's reference to its socket.
    fn unregister(&mut self, ring: &IoUring, slot: u32) {
        match ring.submitter().register_files_update(slot, &[-1]) {
            Ok(_) => self.busy[slot as usize / 64] &= !(1u64 << (slot % 64)),
            // Left busy, never reused: it still refers to the old socket.
            Err(e) => tracing::warn!(error = %e, slot, "cannot clear a registered file"),
        }
    }
}

fn clear(ops: &mut InFlight, op: Op) {
    match op {
        Op::Poll => ops.poll = false,
        Op::Read => ops.read = false,
        Op::Write => ops.write = false,
        Op::Wake | Op::Accept | Op::Cancel => {}
    }
}

/// Whether a poll result says the peer is gone (closed, or reset).
fn hung_up(result: i32) -> bool {
    result > 0 && result & i32::from(libc::POLLHUP | libc::POLLERR) != 0
}

/// A READ or WRITE for one region, a READV or WRITEV for several (`iov`
/// stays in place until the completion): one buffer spares the kernel the
/// import of an iovec array, the common case of a ring that does not wrap
/// and an answer queue of one chunk. Reads are RWF_NOWAIT: on an empty
/// socket they complete with EAGAIN instead of waiting with the ring
/// pinned, as the poll reports the next edge.
fn single_or_vectored(file: File, iov: &[libc::iovec], write: bool) -> squeue::Entry {
    on_file!(file, |fd| match (iov, write) {
        ([one], false) => opcode::Read::new(fd, one.iov_base.cast(), one.iov_len as u32)
            .rw_flags(libc::RWF_NOWAIT)
            .build(),
        ([one], true) => opcode::Write::new(fd, one.iov_base.cast(), one.iov_len as u32).build(),
        (_, false) => opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32)
            .rw_flags(libc::RWF_NOWAIT)
            .build(),
        (_, true) => opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32).build(),
    })
}
