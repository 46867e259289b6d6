//! `junction-echo`: a raw echo server, the ceiling of this machine.
//!
//! One thread, one mio (epoll, edge-triggered) loop, no parsing: every byte
//! read from a connection is written straight back. What junctiond does on
//! top of moving bytes (framing, parsing, dispatch) is measured against it.
//!
//! Each connection owns a fixed 64 KiB buffer. When a write is partial the
//! rest is kept and the connection is not read again until it has drained,
//! so a slow reader holds back only its own writer.
//!
//! Usage: `junction-echo [--unix PATH] [--tcp HOST:PORT]` (one or both;
//! port 0 picks a free port). One line per listener goes to stderr:
//! `listening on unix PATH` / `listening on tcp ADDR`. SIGTERM or SIGINT
//! stops it (exit 0, the socket file removed).

use std::io::{self, ErrorKind, Read, Write};
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, Signal};

/// Bytes buffered per connection.
const BUF: usize = 64 * 1024;
/// The signal thread wakes the loop through this token.
const WAKE: Token = Token(0);
/// The listeners.
const UNIX: Token = Token(1);
const TCP: Token = Token(2);
/// Connection `i` is registered as `Token(FIRST + i)`.
const FIRST: usize = 3;

/// An accepted socket of either kind.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One client: its socket and the bytes read but not yet written back.
struct Conn {
    stream: Stream,
    buf: Box<[u8]>,
    /// `buf[start..end]` is still to be written.
    start: usize,
    end: usize,
    /// WRITABLE is registered: only while a write is pending, so that a
    /// drained connection is not woken each time its peer reads.
    writable: bool,
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

impl Conn {
    /// Serves a readiness event, then asks for WRITABLE exactly while a
    /// write is pending. `Ok(false)` means the peer is gone.
    fn drive(&mut self, registry: &Registry, token: Token) -> io::Result<bool> {
        let open = self.pump()?;
        let pending = self.start < self.end;
        if open && pending != self.writable {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(self.stream.source(), token, interest)?;
            self.writable = pending;
        }
        Ok(open)
    }

    /// Does all the work the socket allows now: drain what is pending, then
    /// read and echo until the socket would block. Edge-triggered, so it
    /// must not stop early. `Ok(false)` means the peer is gone.
    fn pump(&mut self) -> io::Result<bool> {
        loop {
            while self.start < self.end {
                match self.stream.write(&self.buf[self.start..self.end]) {
                    Ok(0) => return Ok(false),
                    Ok(n) => self.start += n,
                    // Wait for WRITABLE; reading stays paused until then.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => (self.start, self.end) = (0, n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The raw echo server: the ceiling of this machine.
#[derive(clap::Parser)]
#[command(name = "junction-echo")]
#[command(group(clap::ArgGroup::new("listen").args(["unix", "tcp"]).required(true).multiple(true)))]
struct Args {
    /// Unix socket to listen on
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// TCP address to listen on (port 0 picks a free port)
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<String>,
}

/// Removes the socket file when the server stops, however it stops.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Raises the soft open-file limit to the hard limit.
fn raise_fd_limit() -> Result<(), String> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit(NOFILE): {e}"))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|e| format!("setrlimit(NOFILE, {hard}): {e}"))?;
    }
    Ok(())
}

/// Blocks SIGINT/SIGTERM in this thread (and so in every thread spawned
/// after) and takes them with sigwait on a thread of their own, which wakes
/// the loop. Must run before any other thread starts.
fn watch_signals(waker: Waker) -> Result<(), String> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    std::thread::Builder::new()
        .name("echo-signals".into())
        .spawn(move || {
            while set.wait().is_ok() {
                if waker.wake().is_err() {
                    std::process::exit(1);
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}

fn run() -> Result<(), String> {
    let args = <Args as clap::Parser>::parse();
    raise_fd_limit()?;
    let mut poll = Poll::new().map_err(|e| format!("epoll_create: {e}"))?;
    let waker = Waker::new(poll.registry(), WAKE).map_err(|e| format!("waker: {e}"))?;
    watch_signals(waker)?;

    let registry = poll.registry();
    let mut unix = match args.unix {
        Some(path) => {
            let mut l = UnixListener::bind(&path)
                .map_err(|e| format!("cannot listen on unix {}: {e}", path.display()))?;
            let file = SocketFile(path);
            registry
                .register(&mut l, UNIX, Interest::READABLE)
                .map_err(|e| format!("register unix listener: {e}"))?;
            eprintln!("listening on unix {}", file.0.display());
            Some((l, file))
        }
        None => None,
    };
    let mut tcp = match args.tcp {
        Some(text) => {
            let addr = text
                .to_socket_addrs()
                .map_err(|e| format!("bad --tcp address {text:?}: {e}"))?
                .next()
                .ok_or(format!("--tcp {text:?} resolves to no address"))?;
            let mut l =
                TcpListener::bind(addr).map_err(|e| format!("cannot listen on tcp {addr}: {e}"))?;
            let bound = l.local_addr().map_err(|e| format!("getsockname: {e}"))?;
            registry
                .register(&mut l, TCP, Interest::READABLE)
                .map_err(|e| format!("register tcp listener: {e}"))?;
            eprintln!("listening on tcp {bound}");
            Some(l)
        }
        None => None,
    };

    let mut conns = Conns::default();
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}"));
        }
        for event in events.iter() {
            match event.token() {
                // SIGTERM/SIGINT; the socket file goes with `unix`.
                WAKE => return Ok(()),
                // A listener is ready: accept until WouldBlock.
                UNIX => {
                    if let Some((l, _)) = &mut unix {
                        conns.accept_all(poll.registry(), || {
                            l.accept().map(|(s, _)| Stream::Unix(s))
                        });
                    }
                }
                TCP => {
                    if let Some(l) = &mut tcp {
                        conns.accept_all(poll.registry(), || {
                            let (s, _) = l.accept()?;
                            let _ = s.set_nodelay(true);
                            Ok(Stream::Tcp(s))
                        });
                    }
                }
                Token(t) => conns.drive(poll.registry(), t - FIRST),
            }
        }
    }
}

/// The open connections, indexed by token; freed slots are reused.
#[derive(Default)]
struct Conns {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Conns {
    /// Accepts with `accept` until it would block, registering each socket.
    fn accept_all(&mut self, registry: &Registry, mut accept: impl FnMut() -> io::Result<Stream>) {
        loop {
            let mut stream = match accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the rest wait in the backlog.
                    eprintln!("junction-echo: accept: {e}");
                    return;
                }
            };
            let i = self.free.pop().unwrap_or_else(|| {
                self.slots.push(None);
                self.slots.len() - 1
            });
            let token = Token(FIRST + i);
            if let Err(e) = registry.register(stream.source(), token, Interest::READABLE) {
                eprintln!("junction-echo: register connection: {e}");
                self.free.push(i);
                continue;
            }
            let buf = vec![0u8; BUF].into_boxed_slice();
            self.slots[i] = Some(Conn {
                stream,
                buf,
                start: 0,
                end: 0,
                writable: false,
            });
        }
    }

    /// Serves connection `i`; closes it when the peer is gone or failed.
    fn drive(&mut self, registry: &Registry, i: usize) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        let token = Token(FIRST + i);
        let alive = slot
            .as_mut()
            .is_some_and(|c| c.drive(registry, token).unwrap_or(false));
        if !alive && slot.take().is_some() {
            // Dropping the socket closes it, which also removes it from epoll.
            self.free.push(i);
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("junction-echo: {message}");
            ExitCode::FAILURE
        }
    }
}
