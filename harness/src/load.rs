//! The closed-loop load engine behind `throughput` and `latency`.
//!
//! Each thread drives its share of the connections on its own mio poll.
//! A connection writes a block of `pipeline` requests, counts answers by
//! length as they arrive (recording each one's latency from the block's
//! send), and writes the next block once all are in. The loop allocates
//! nothing: blocks are built once, reads land in one per-thread buffer.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use junction::client::Endpoint;
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};

use crate::workload::Workload;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Request and answer bytes.
    pub workload: Workload,
    /// Connections in all.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Generator threads.
    pub threads: usize,
    /// Measured time (after warm-up).
    pub duration: Duration,
    /// Stop after this many answers instead, if set.
    pub requests: Option<u64>,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// The server's pid, to read its CPU over the measured window.
    pub server_pid: Option<u32>,
    /// Connect over TLS (TCP only).
    pub tls: Option<Tls>,
}

/// How to talk TLS to the server: the client configuration and the name to check.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The rustls client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry.
    pub name: rustls::pki_types::ServerName<'static>,
}

impl Tls {
    /// TLS trusting the CA in `ca` and checking `name`.
    pub fn new(ca: &std::path::Path, name: &str) -> Result<Tls, String> {
        let options = junction::client::TlsOptions {
            ca: Some(ca.to_path_buf()),
            server_name: Some(name.to_string()),
            ..Default::default()
        };
        Ok(Tls {
            config: options.client_config().map_err(|e| e.to_string())?,
            name: options.name_for("").map_err(|e| e.to_string())?,
        })
    }
}

/// A nonblocking TLS connection: the socket and the rustls session.
struct TlsConn {
    tcp: TcpStream,
    session: rustls::ClientConnection,
}

impl TlsConn {
    /// Sends what rustls holds; WouldBlock leaves the rest for the next call.
    fn push(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What a run measured.
pub struct LoadResult {
    /// Answers received in the measured window.
    pub requests: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Bytes written and read in the window.
    pub bytes: u64,
    /// Latency of each answer from its block's send, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Connections lost during the run.
    pub errors: u64,
    /// CPU the generator itself used in the window.
    pub client_cpu: Duration,
    /// CPU the server used in the same window (with `server_pid`).
    pub server_cpu: Option<Duration>,
}

/// Flags and counters the threads share with the coordinator.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    answers: AtomicU64,
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<TlsConn>),
}

impl Conn {
    /// Connects, over TLS when `tls` says so (the handshake done blocking).
    fn open(endpoint: &Endpoint, tls: Option<&Tls>) -> io::Result<Conn> {
        let (Some(tls), Endpoint::Tcp(addr)) = (tls, endpoint) else {
            return Self::connect(endpoint);
        };
        let mut stream = std::net::TcpStream::connect(addr.as_str())?;
        stream.set_nodelay(true)?;
        let mut session = rustls::ClientConnection::new(Arc::clone(&tls.config), tls.name.clone())
            .map_err(io::Error::other)?;
        while session.is_handshaking() {
            session.complete_io(&mut stream)?;
        }
        stream.set_nonblocking(true)?;
        let mut conn = TlsConn {
            tcp: TcpStream::from_std(stream),
            session,
        };
        conn.push()?;
        Ok(Conn::Tls(Box::new(conn)))
    }

    fn connect(endpoint: &Endpoint) -> io::Result<Conn> {
        Ok(match endpoint {
            Endpoint::Unix(path) => {
                let stream = std::os::unix::net::UnixStream::connect(path)?;
                stream.set_nonblocking(true)?;
                Conn::Unix(UnixStream::from_std(stream))
            }
            Endpoint::Tcp(addr) => {
                let stream = std::net::TcpStream::connect(addr.as_str())?;
                stream.set_nodelay(true)?;
                stream.set_nonblocking(true)?;
                Conn::Tcp(TcpStream::from_std(stream))
            }
        })
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Conn::Unix(s) => s,
            Conn::Tcp(s) => s,
            Conn::Tls(s) => &mut s.tcp,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
            Conn::Tls(s) => loop {
                match s.session.reader().read(buf) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    done => return done,
                }
                if s.session.read_tls(&mut s.tcp)? == 0 {
                    return Ok(0);
                }
                s.session.process_new_packets().map_err(io::Error::other)?;
                s.push()?;
            },
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
            Conn::Tls(s) => {
                s.push()?;
                let n = s.session.writer().write(buf)?;
                s.push()?;
                if n == 0 {
                    // rustls holds all it takes until the socket drains.
                    return Err(ErrorKind::WouldBlock.into());
                }
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tls(s) => s.push(),
            _ => Ok(()),
        }
    }
}

/// Connects and sends the workload's handshake (a WebSocket upgrade), if
/// any, reading its answer.
fn open(endpoint: &Endpoint, workload: &Workload, tls: Option<&Tls>) -> Result<Conn, String> {
    let mut conn =
        Conn::open(endpoint, tls).map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    let Some((handshake, answer)) = &workload.handshake else {
        return Ok(conn);
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    write_all(&mut conn, handshake, deadline)?;
    let mut got = vec![0u8; *answer];
    let mut filled = 0;
    while filled < got.len() {
        match conn.read(&mut got[filled..]) {
            Ok(0) => return Err("closed during the handshake".into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(format!("handshake: {e}")),
        }
    }
    Ok(conn)
}

/// Sends one request and checks the answer byte for byte, blocking.
pub fn probe(endpoint: &Endpoint, workload: &Workload, tls: Option<&Tls>) -> Result<(), String> {
    let mut conn = open(endpoint, workload, tls)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    write_all(&mut conn, &workload.request, deadline)?;
    let expected = &workload.response;
    let mut got = vec![0u8; expected.len()];
    let unexpected = |got: &[u8], why: &str| {
        format!(
            "unexpected answer from {endpoint} ({why}):\n  expected {:?}\n  got      {:?}",
            String::from_utf8_lossy(expected),
            String::from_utf8_lossy(got)
        )
    };
    let mut filled = 0;
    while filled < got.len() {
        match conn.read(&mut got[filled..]) {
            Ok(0) => return Err(unexpected(&got[..filled], "closed early")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(unexpected(&got[..filled], &e.to_string())),
        }
        // Fail on the first wrong byte rather than waiting for bytes that never come.
        if got[..filled] != expected[..filled] {
            return Err(unexpected(&got[..filled], "different bytes"));
        }
    }
    Ok(())
}

fn write_all(conn: &mut Conn, mut bytes: &[u8], deadline: Instant) -> Result<(), String> {
    while !bytes.is_empty() {
        match conn.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(format!("write failed: {e}")),
        }
    }
    Ok(())
}

/// Runs the load and measures it. `progress` is called about once a second
/// with the answers counted so far in the measured window.
pub fn run(spec: &LoadSpec, progress: &mut dyn FnMut(f64, u64)) -> Result<LoadResult, String> {
    probe(&spec.endpoint, &spec.workload, spec.tls.as_ref())?;
    let shared = Arc::new(Shared::default());
    let block: Arc<[u8]> = spec.workload.block(spec.pipeline).into();
    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let share = spec.connections / threads + usize::from(t < spec.connections % threads);
        let mut conns = Vec::with_capacity(share);
        for _ in 0..share {
            conns.push(open(&spec.endpoint, &spec.workload, spec.tls.as_ref())?);
        }
        let worker = Driver {
            watching: conns.iter().map(|c| matches!(c, Conn::Tls(_))).collect(),
            registry: None,
            conns,
            block: Arc::clone(&block),
            answer_len: spec.workload.response.len(),
            pipeline: spec.pipeline,
            shared: Arc::clone(&shared),
        };
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || worker.run())
            .map_err(|e| format!("cannot start a generator thread: {e}"))?;
        handles.push(handle);
    }
    std::thread::sleep(spec.warmup);
    let server_cpu_start = spec.server_pid.and_then(crate::sys::process_cpu);
    let cpu_start = crate::sys::own_cpu();
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Release);
    let mut next_report = started + Duration::from_secs(1);
    loop {
        std::thread::sleep(Duration::from_millis(50).min(spec.duration));
        let elapsed = started.elapsed();
        let answers = shared.answers.load(Ordering::Relaxed);
        let done = match spec.requests {
            Some(n) => answers >= n,
            None => elapsed >= spec.duration,
        };
        if done || handles.iter().all(|h| h.is_finished()) {
            break;
        }
        if Instant::now() >= next_report {
            progress(elapsed.as_secs_f64(), answers);
            next_report += Duration::from_secs(1);
        }
    }
    shared.stop.store(true, Ordering::Release);
    let seconds = started.elapsed().as_secs_f64();
    let client_cpu = crate::sys::own_cpu().saturating_sub(cpu_start);
    let server_cpu = spec
        .server_pid
        .and_then(crate::sys::process_cpu)
        .zip(server_cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    let mut latency = new_histogram();
    let (mut bytes, mut errors) = (0, 0);
    for handle in handles {
        let tally = handle
            .join()
            .map_err(|_| "a generator thread panicked".to_string())??;
        latency
            .add(&tally.latency)
            .map_err(|e| format!("histogram: {e}"))?;
        bytes += tally.bytes;
        errors += tally.errors;
    }
    Ok(LoadResult {
        requests: shared.answers.load(Ordering::Relaxed),
        seconds,
        bytes,
        latency,
        errors,
        client_cpu,
        server_cpu,
    })
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant figures; these bounds are valid, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

/// One thread's measurements.
struct Tally {
    latency: Histogram<u64>,
    bytes: u64,
    errors: u64,
}

/// Per-connection progress through its current block.
struct Round {
    written: usize,
    received: usize,
    answered: usize,
    sent_at: Instant,
    alive: bool,
}

impl Round {
    /// The connection is gone (closed or failed): count it and stop using it.
    fn lose(&mut self, tally: &mut Tally) {
        self.alive = false;
        tally.errors += 1;
    }
}

struct Driver {
    conns: Vec<Conn>,
    /// Which connections are watched for writability: only plain ones whose
    /// block did not fit in the socket, and TLS ones (rustls may hold
    /// records). A plain socket watched all the time would have the server
    /// wake this thread with a write-space event every time it reads a
    /// block (Unix sockets signal every read), at the server's expense.
    watching: Vec<bool>,
    registry: Option<mio::Registry>,
    block: Arc<[u8]>,
    answer_len: usize,
    pipeline: usize,
    shared: Arc<Shared>,
}

impl Driver {
    fn run(mut self) -> Result<Tally, String> {
        let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        for (i, conn) in self.conns.iter_mut().enumerate() {
            let interest = if self.watching[i] {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            poll.registry()
                .register(conn.source(), Token(i), interest)
                .map_err(|e| format!("register: {e}"))?;
        }
        self.registry = Some(
            poll.registry()
                .try_clone()
                .map_err(|e| format!("poll: {e}"))?,
        );
        let now = Instant::now();
        let mut rounds: Vec<Round> = (0..self.conns.len())
            .map(|_| Round {
                written: 0,
                received: 0,
                answered: 0,
                sent_at: now,
                alive: true,
            })
            .collect();
        let mut tally = Tally {
            latency: new_histogram(),
            bytes: 0,
            errors: 0,
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut events = Events::with_capacity(1024);
        for (i, round) in rounds.iter_mut().enumerate() {
            self.write(i, round, &mut tally);
        }
        while !self.shared.stop.load(Ordering::Acquire) {
            if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(20))) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {e}"));
            }
            for event in events.iter() {
                let i = event.token().0;
                if !rounds[i].alive {
                    continue;
                }
                if event.is_readable() || event.is_read_closed() {
                    self.read(i, &mut rounds[i], &mut buf, &mut tally);
                }
                if event.is_writable() && rounds[i].alive {
                    self.write(i, &mut rounds[i], &mut tally);
                }
            }
        }
        Ok(tally)
    }

    fn measuring(&self) -> bool {
        self.shared.measuring.load(Ordering::Relaxed) && !self.shared.stop.load(Ordering::Relaxed)
    }

    fn write(&mut self, i: usize, round: &mut Round, tally: &mut Tally) {
        // TLS records left over when the socket was full go first.
        if self.conns[i].flush().is_err() {
            return round.lose(tally);
        }
        while round.written < self.block.len() {
            match self.conns[i].write(&self.block[round.written..]) {
                Ok(n) => {
                    round.written += n;
                    if self.measuring() {
                        tally.bytes += n as u64;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return self.watch_writable(i, true, round, tally);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return round.lose(tally),
            }
        }
        if !matches!(self.conns[i], Conn::Tls(_)) {
            self.watch_writable(i, false, round, tally);
        }
    }

    /// Watches connection `i` for writability, or stops, if not already so.
    fn watch_writable(&mut self, i: usize, on: bool, round: &mut Round, tally: &mut Tally) {
        if self.watching[i] == on {
            return;
        }
        let Some(registry) = &self.registry else {
            return;
        };
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if registry
            .reregister(self.conns[i].source(), Token(i), interest)
            .is_err()
        {
            return round.lose(tally);
        }
        self.watching[i] = on;
    }

    fn read(&mut self, i: usize, round: &mut Round, buf: &mut [u8], tally: &mut Tally) {
        loop {
            match self.conns[i].read(buf) {
                Ok(0) => return round.lose(tally),
                Ok(n) => {
                    round.received += n;
                    let measuring = self.measuring();
                    if measuring {
                        tally.bytes += n as u64;
                    }
                    let complete = round.received / self.answer_len;
                    if complete > round.answered {
                        if measuring {
                            let nanos = round.sent_at.elapsed().as_nanos() as u64;
                            let fresh = (complete - round.answered) as u64;
                            let _ = tally.latency.record_n(nanos.max(1), fresh);
                            self.shared.answers.fetch_add(fresh, Ordering::Relaxed);
                        }
                        round.answered = complete;
                    }
                    if round.answered >= self.pipeline {
                        // The whole block is answered: start the next one.
                        *round = Round {
                            written: 0,
                            received: 0,
                            answered: 0,
                            sent_at: Instant::now(),
                            alive: true,
                        };
                        self.write(i, round, tally);
                    }
                    // A short read of a plain stream emptied the socket, and the
                    // edge-triggered poll reports bytes that arrive later, so
                    // asking again would only cost a read that finds nothing (as
                    // servers do). rustls may still hold decrypted bytes: TLS
                    // reads on until it blocks.
                    if n < buf.len() && !matches!(self.conns[i], Conn::Tls(_)) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return round.lose(tally),
            }
        }
    }
}
