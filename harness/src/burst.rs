//! `burst`: many connections opened at once (or at a set rate), each making
//! one request and closing; failures are reported by kind.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use junction::client::Endpoint;
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};

use crate::workload::Workload;

/// What to run.
#[derive(Debug, Clone)]
pub struct BurstSpec {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The one request each connection makes.
    pub workload: Workload,
    /// Connections in all.
    pub connections: usize,
    /// Connections opened per second; 0 = as fast as possible.
    pub rate: f64,
    /// A connection not answered by then counts as a timeout.
    pub timeout: Duration,
    /// Generator threads.
    pub threads: usize,
}

/// Failures by kind.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Failures {
    /// The connect was refused (TCP RST, or a full Unix backlog: EAGAIN).
    pub refused: u64,
    /// The connection was reset or closed before the answer.
    pub reset: u64,
    /// No answer within the timeout.
    pub timeout: u64,
    /// The answer was not the expected bytes.
    pub wrong_answer: u64,
    /// Anything else.
    pub other: u64,
}

impl Failures {
    fn add(&mut self, other: &Failures) {
        self.refused += other.refused;
        self.reset += other.reset;
        self.timeout += other.timeout;
        self.wrong_answer += other.wrong_answer;
        self.other += other.other;
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.wrong_answer + self.other
    }
}

/// What a burst measured.
pub struct BurstResult {
    /// Connections answered correctly.
    pub ok: u64,
    /// Failures by kind.
    pub failures: Failures,
    /// Wall time of the whole burst.
    pub seconds: f64,
    /// From connect() to connected, in nanoseconds.
    pub connect: Histogram<u64>,
    /// From connect() to the whole answer, in nanoseconds.
    pub first_response: Histogram<u64>,
}

/// Connections opened between two looks at the ones in progress.
const OPEN_CHUNK: usize = 64;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

impl BurstResult {
    fn empty() -> Self {
        BurstResult {
            ok: 0,
            failures: Failures::default(),
            seconds: 0.0,
            connect: histogram(),
            first_response: histogram(),
        }
    }
}

/// Runs the burst.
pub fn run(spec: &BurstSpec) -> Result<BurstResult, String> {
    let started = Instant::now();
    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let share = spec.connections / threads + usize::from(t < spec.connections % threads);
            let spec = spec.clone();
            std::thread::spawn(move || run_thread(&spec, share, spec.rate / threads as f64))
        })
        .collect();
    let mut result = BurstResult::empty();
    for handle in handles {
        let part = handle
            .join()
            .map_err(|_| "a burst thread panicked".to_string())??;
        result.ok += part.ok;
        result.failures.add(&part.failures);
        result
            .connect
            .add(&part.connect)
            .map_err(|e| e.to_string())?;
        result
            .first_response
            .add(&part.first_response)
            .map_err(|e| e.to_string())?;
    }
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }

    fn take_error(&self) -> std::io::Result<Option<std::io::Error>> {
        match self {
            Stream::Unix(s) => s.take_error(),
            Stream::Tcp(s) => s.take_error(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Attempt {
    stream: Stream,
    started: Instant,
    connected: bool,
    written: usize,
    received: Vec<u8>,
}

fn classify(error: &std::io::Error, failures: &mut Failures) {
    match error.kind() {
        ErrorKind::ConnectionRefused | ErrorKind::WouldBlock => failures.refused += 1,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            failures.reset += 1
        }
        ErrorKind::TimedOut => failures.timeout += 1,
        _ => failures.other += 1,
    }
}

fn open(endpoint: &Endpoint) -> std::io::Result<Stream> {
    match endpoint {
        Endpoint::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        Endpoint::Tcp(addr) => {
            let addr = addr.parse().map_err(|_| {
                std::io::Error::new(ErrorKind::InvalidInput, "burst needs an IP:PORT address")
            })?;
            TcpStream::connect(addr).map(Stream::Tcp)
        }
    }
}

fn run_thread(spec: &BurstSpec, count: usize, rate: f64) -> Result<BurstResult, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut live: HashMap<usize, Attempt> = HashMap::new();
    let mut result = BurstResult::empty();
    let begin = Instant::now();
    let mut opened = 0usize;
    let expected = &spec.workload.response;
    let mut buf = vec![0u8; 64 * 1024];
    while opened < count || !live.is_empty() {
        // Open what the rate allows now (everything at once when rate is 0).
        // As fast as possible still means independent clients: open a chunk,
        // then serve what finished, so answered clients close as they would.
        let due = if rate > 0.0 {
            ((begin.elapsed().as_secs_f64() * rate) as usize + 1).min(count)
        } else {
            count
        }
        .min(opened + OPEN_CHUNK);
        while opened < due {
            let token = opened;
            opened += 1;
            let started = Instant::now();
            match open(&spec.endpoint) {
                Ok(mut stream) => {
                    if let Err(e) = poll.registry().register(
                        stream.source(),
                        Token(token),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        classify(&e, &mut result.failures);
                        continue;
                    }
                    live.insert(
                        token,
                        Attempt {
                            stream,
                            started,
                            connected: false,
                            written: 0,
                            received: Vec::new(),
                        },
                    );
                }
                Err(e) => classify(&e, &mut result.failures),
            }
        }
        let wait = match (opened < count, rate > 0.0) {
            (true, false) => Duration::ZERO,
            (true, true) => Duration::from_millis(1),
            (false, _) => Duration::from_millis(50),
        };
        if let Err(e) = poll.poll(&mut events, Some(wait))
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(format!("poll: {e}"));
        }
        for event in events.iter() {
            let token = event.token().0;
            let Some(attempt) = live.get_mut(&token) else {
                continue;
            };
            let outcome = step(
                attempt,
                &spec.workload.request,
                expected,
                &mut buf,
                &mut result,
            );
            if let Some(failure) = outcome {
                if let Some(mut done) = live.remove(&token) {
                    let _ = poll.registry().deregister(done.stream.source());
                }
                if let Some(error) = failure {
                    classify(&error, &mut result.failures);
                }
            }
        }
        let expired: Vec<usize> = live
            .iter()
            .filter(|(_, a)| a.started.elapsed() > spec.timeout)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(mut attempt) = live.remove(&token) {
                let _ = poll.registry().deregister(attempt.stream.source());
                result.failures.timeout += 1;
            }
        }
    }
    Ok(result)
}

/// Advances one attempt: None while it goes on, Some(None) when it was
/// answered correctly, Some(Some(error)) when it failed.
fn step(
    attempt: &mut Attempt,
    request: &[u8],
    expected: &[u8],
    buf: &mut [u8],
    result: &mut BurstResult,
) -> Option<Option<std::io::Error>> {
    if !attempt.connected {
        match attempt.stream.take_error() {
            Ok(Some(e)) | Err(e) => return Some(Some(e)),
            Ok(None) => {}
        }
        attempt.connected = true;
        let _ = result
            .connect
            .record((attempt.started.elapsed().as_nanos() as u64).max(1));
    }
    while attempt.written < request.len() {
        match attempt.stream.write(&request[attempt.written..]) {
            Ok(n) => attempt.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::NotConnected => return None,
            Err(e) => return Some(Some(e)),
        }
    }
    loop {
        match attempt.stream.read(buf) {
            Ok(0) => {
                return Some(Some(std::io::Error::new(
                    ErrorKind::ConnectionReset,
                    "closed before the answer",
                )));
            }
            Ok(n) => {
                attempt.received.extend_from_slice(&buf[..n]);
                if attempt.received.len() >= expected.len() {
                    if attempt.received[..expected.len()] != *expected {
                        result.failures.wrong_answer += 1;
                        return Some(None);
                    }
                    result.ok += 1;
                    let _ = result
                        .first_response
                        .record((attempt.started.elapsed().as_nanos() as u64).max(1));
                    return Some(None);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) => return Some(Some(e)),
        }
    }
}
