//! The loop's side of a connection's layer (`net::tls`): the PROXY header
//! and TLS under the protocol sniffer, for both drivers.
//!
//! A layered connection reads into its layer's input buffer instead of its
//! ring ([`Core::layered_read_target`]); what was read is taken apart here
//! ([`Core::advance_layer`]): a PROXY header sets the peer's address, the
//! first byte after it starts TLS or hands the bytes to the ring as
//! plaintext (the layer is then dropped), and TLS records are decrypted
//! into the ring ([`Core::pump_tls`]), where the connection sniffs and
//! frames them as it would on a plain socket. Output is encrypted from the
//! connection's write queue when the driver asks what to write
//! ([`Core::layered_write_target`]), so a write in flight (io_uring) never
//! sees its buffer change.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::time::Instant;

use super::io::{Progress, ReadTarget};
use super::{Core, TimerKind, shared};
use crate::access::{Gate, Peer};
use crate::net::Stream;
use crate::net::proxy::{self, Parsed};
use crate::net::tls::{Stage, TLS_REQUIRED_REPLY};
use crate::stats::Stats;
use crate::write_queue::MAX_IOVECS;

impl Core {
    /// Where a layered connection reads next: its layer's input buffer,
    /// once what the layer already holds has been handed on.
    pub(super) fn layered_read_target(&mut self, key: usize) -> ReadTarget<'_> {
        self.advance_layer(key);
        if self.clients.get(key).is_some_and(|c| c.layer.is_none()) {
            // Decided plaintext meanwhile: read into the ring from now on.
            return self.read_target(key);
        }
        let Some(client) = self.clients.get_mut(key) else {
            return ReadTarget::NotNow;
        };
        if !client.conn.wants_input() {
            return ReadTarget::NotNow;
        }
        let Some(layer) = client.layer.as_deref_mut() else {
            return ReadTarget::NotNow;
        };
        let room = layer.room(&mut self.tls_spare);
        if room.is_empty() {
            // rustls holds plaintext the connection cannot take yet: it is
            // handed on when the connection's input is no longer held.
            return ReadTarget::NotNow;
        }
        let size = room.len();
        ReadTarget::Read {
            stream: &mut client.stream,
            iov: [IoSliceMut::new(room), IoSliceMut::new(&mut [])],
            used: 1,
            room: size,
        }
    }

    /// Takes `n` bytes read into a layered connection's buffer.
    pub(super) fn on_layered_read(
        &mut self,
        key: usize,
        n: usize,
        room: usize,
        to_the_end: bool,
    ) -> Progress {
        let quickack = self.config.sockets.tcp_quickack;
        let Some(client) = self.clients.get_mut(key) else {
            return Progress::Stop;
        };
        if quickack {
            client.stream.rearm_quickack();
        }
        let Some(layer) = client.layer.as_deref_mut() else {
            return Progress::Stop;
        };
        layer.filled(n);
        self.advance_layer(key);
        if let Some(layer) = self
            .clients
            .get_mut(key)
            .and_then(|c| c.layer.as_deref_mut())
        {
            layer.shed(&mut self.tls_spare);
        }
        if n < room && !to_the_end {
            Progress::Stop
        } else {
            Progress::Again
        }
    }

    /// Handles what the layer holds: the PROXY header, the TLS-or-plaintext
    /// decision, TLS records.
    fn advance_layer(&mut self, key: usize) {
        loop {
            let Some(client) = self.clients.get_mut(key) else {
                return;
            };
            let Some(layer) = client.layer.as_deref_mut() else {
                return;
            };
            match layer.stage {
                Stage::Proxy => match proxy::parse(layer.pending()) {
                    Parsed::NeedMore if layer.full() => {
                        self.refuse_layered(key, "a PROXY header longer than the buffer".into());
                        return;
                    }
                    Parsed::NeedMore => return,
                    Parsed::Absent => layer.stage = Stage::Sniff,
                    Parsed::Header { len, source } => {
                        layer.consume(len);
                        layer.stage = Stage::Sniff;
                        Stats::bump(&self.stats().remote.proxy_headers);
                        if let Some(source) = source {
                            self.proxied(key, source);
                        }
                    }
                    Parsed::Invalid(why) => {
                        self.refuse_layered(key, why);
                        return;
                    }
                },
                Stage::Sniff => {
                    if layer.pending().is_empty() {
                        return;
                    }
                    let generation = client.conn.id().generation;
                    let remote = self.context.remote().cloned();
                    let Some(remote) = remote else {
                        return;
                    };
                    if crate::proto::is_tls_handshake(layer.pending())
                        && layer.start_tls(&remote, &mut self.tls_spare)
                    {
                        if !self.config.auth_timeout.is_zero() {
                            let at = Instant::now() + self.config.auth_timeout;
                            self.add_timer(at, key, generation, TimerKind::Handshake);
                        }
                        continue;
                    }
                    if !remote.serves_plaintext() {
                        client.layer = None;
                        Stats::bump(&self.stats().remote.tls_plaintext_refused);
                        let mut shared = shared!(self);
                        if let Some(client) = self.clients.get_mut(key) {
                            client.conn.refuse_with(TLS_REQUIRED_REPLY, &mut shared);
                        }
                        self.dirty.push(key);
                        return;
                    }
                    self.plaintext(key);
                    return;
                }
                Stage::Tls => {
                    self.pump_tls(key);
                    return;
                }
            }
        }
    }

    /// The connection is plaintext: the bytes the layer read go to the ring
    /// and the layer is dropped.
    fn plaintext(&mut self, key: usize) {
        let (now, mut shared) = (self.now, shared!(self));
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Some(mut layer) = client.layer.take() else {
            return;
        };
        while !layer.pending().is_empty() {
            let Some(ring) = client.conn.read_space(&mut shared) else {
                // Out of buffer memory: the connection waits like any other.
                client.layer = Some(layer);
                self.starved_at = shared.buffer_memory();
                self.starved.push(key);
                return;
            };
            let mut iov = [IoSliceMut::new(&mut []), IoSliceMut::new(&mut [])];
            let used = ring.space_iovecs(&mut iov);
            let bytes = layer.pending();
            let mut n = 0;
            for slice in &mut iov[..used] {
                let take = slice.len().min(bytes.len() - n);
                slice[..take].copy_from_slice(&bytes[n..n + take]);
                n += take;
            }
            if n == 0 {
                break;
            }
            // Taken off the layer as it goes, so that a wait for memory
            // half way resumes where it stopped.
            layer.consume(n);
            client.conn.received(n, now, &mut shared, &mut self.scratch);
        }
    }

    /// Decrypts what the layer holds into the connection's ring, as far as
    /// the connection takes input; completes the handshake's bookkeeping.
    fn pump_tls(&mut self, key: usize) {
        loop {
            let (now, mut shared) = (self.now, shared!(self));
            let Some(client) = self.clients.get_mut(key) else {
                return;
            };
            let Some(layer) = client.layer.as_deref_mut() else {
                return;
            };
            if layer.failed {
                layer.consume(layer.pending().len());
                return;
            }
            let before = layer.pending().len();
            let state = match layer.feed() {
                Ok(state) => state,
                Err(e) => {
                    layer.failed = true;
                    layer.consume(layer.pending().len());
                    Stats::bump(&shared.stats().remote.tls_failures);
                    tracing::debug!(conn = key, peer = %client.conn.peer(), error = %e, "TLS failed; closing");
                    client.conn.refuse_with(b"", &mut shared);
                    self.dirty.push(key);
                    return;
                }
            };
            let Some(tls) = layer.tls.as_mut() else {
                return;
            };
            if tls.wants_write() {
                self.dirty.push(key);
            }
            if !layer.handshaken && !tls.is_handshaking() {
                layer.handshaken = true;
                let name = layer.peer_name();
                self.established(key, name);
                continue;
            }
            // Plaintext to the ring while the connection takes input.
            let mut moved = 0;
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 && client.conn.wants_input() {
                let Some(ring) = client.conn.read_space(&mut shared) else {
                    self.starved_at = shared.buffer_memory();
                    self.starved.push(key);
                    return;
                };
                let mut iov = [IoSliceMut::new(&mut []), IoSliceMut::new(&mut [])];
                let used = ring.space_iovecs(&mut iov);
                let Some(slice) = iov[..used].iter_mut().find(|s| !s.is_empty()) else {
                    break;
                };
                let n = match tls.reader().read(slice) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(_) => 0,
                };
                if n == 0 {
                    break;
                }
                client.conn.received(n, now, &mut shared, &mut self.scratch);
                left = left.saturating_sub(n);
                moved += n;
            }
            if state.peer_has_closed() && left == 0 && client.conn.wants_input() {
                // close_notify: the peer's end of input, as a FIN on plain TCP.
                client.conn.end_of_input(&mut shared, &mut self.scratch);
                layer.consume(layer.pending().len());
                return;
            }
            if moved > 0 {
                self.dirty.push(key);
            }
            // Again while ciphertext is left that rustls could not take
            // because its plaintext buffer was full, and that buffer drained.
            let fed = before - layer.pending().len();
            if left > 0 || layer.pending().is_empty() || (fed == 0 && moved == 0) {
                return;
            }
        }
    }

    /// The handshake completed: a verified client certificate authenticates
    /// the connection as `cert:NAME`.
    fn established(&mut self, key: usize, name: Option<String>) {
        let stats = &self.context.stats().remote;
        Stats::bump(&stats.tls_handshakes);
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        tracing::debug!(conn = key, peer = %client.conn.peer(), certificate = ?name, "TLS established");
        let Some(name) = name else {
            return;
        };
        Stats::bump(&stats.tls_client_certs);
        let rights = self.context.guard().certificate(&name, client.conn.peer());
        client.conn.authenticate_as(rights);
        self.check_authenticated(key);
    }

    /// A trusted proxy said who the client is.
    fn proxied(&mut self, key: usize, source: std::net::SocketAddr) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let peer = Peer::Tcp(Some(source));
        tracing::debug!(conn = key, proxy = %client.conn.peer(), client = %source, "PROXY header");
        client.conn.set_peer(peer);
        if client.conn.gate() == Gate::Open {
            // Rights that depend on the address (tcp-anonymous) are made again.
            let rights = self.context.guard().admit(&peer, Gate::Open);
            client.conn.authenticate_as(rights);
        }
    }

    /// Refuses a connection whose PROXY header is malformed.
    fn refuse_layered(&mut self, key: usize, why: String) {
        Stats::bump(&self.stats().remote.proxy_refused);
        let mut shared = shared!(self);
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        tracing::debug!(conn = key, peer = %client.conn.peer(), "refused: {why}");
        client.layer = None;
        let line = format!("junctiond: {why}\n");
        client.conn.refuse_with(line.as_bytes(), &mut shared);
        self.dirty.push(key);
    }

    /// What a layered connection writes next: TLS records made from its
    /// write queue. Called only when no write of it is in flight.
    pub(super) fn layered_write_target<'a>(
        &'a mut self,
        key: usize,
        iov: &mut [IoSlice<'a>; MAX_IOVECS],
    ) -> Option<(&'a mut Stream, usize, usize)> {
        let (now, mut shared) = (self.now, shared!(self));
        let client = self.clients.get_mut(key)?;
        let layer = client.layer.as_deref_mut()?;
        if layer.handshaken && !layer.failed && !layer.closing {
            if let Some(tls) = layer.tls.as_mut() {
                while !client.conn.output().is_empty() {
                    let mut plain = [IoSlice::new(&[]); MAX_IOVECS];
                    let used = client.conn.output().iovecs(&mut plain);
                    let n = tls.writer().write_vectored(&plain[..used]).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    client.conn.wrote(n, now, &mut shared);
                }
            }
        }
        let out = layer.output();
        if out.is_empty() {
            return None;
        }
        let total = out.len();
        iov[0] = IoSlice::new(out);
        self.written += total.min(super::output::WRITE_ESTIMATE);
        Some((&mut client.stream, 1, total))
    }

    /// `n` bytes of the records went out.
    pub(super) fn on_layered_write(&mut self, key: usize, n: usize, total: usize) -> Progress {
        let now = self.now;
        let Some(client) = self.clients.get_mut(key) else {
            return Progress::Stop;
        };
        if let Some(layer) = client.layer.as_deref_mut() {
            layer.sent(n);
        }
        if n > 0 {
            client.conn.touch(now);
        }
        if n < total {
            Progress::Stop
        } else {
            Progress::Again
        }
    }

    /// True while a layered connection that is done must wait for its
    /// records (or its close_notify, queued here) to go out before it closes.
    pub(super) fn layer_holds_close(&mut self, key: usize) -> bool {
        let Some(layer) = self
            .clients
            .get_mut(key)
            .and_then(|c| c.layer.as_deref_mut())
        else {
            return false;
        };
        if layer.stage != Stage::Tls {
            return false;
        }
        if !layer.closing && !layer.failed {
            layer.closing = true;
            if let Some(tls) = layer.tls.as_mut() {
                tls.send_close_notify();
            }
            self.dirty.push(key);
            return true;
        }
        layer.has_output()
    }

    /// The handshake timer fired: a TLS connection still handshaking is closed.
    pub(super) fn handshake_timed_out(&mut self, key: usize) {
        let handshaking = self
            .clients
            .get(key)
            .and_then(|c| c.layer.as_deref())
            .is_some_and(|l| l.stage == Stage::Tls && !l.handshaken && !l.failed);
        if handshaking {
            Stats::bump(&self.stats().remote.tls_handshake_timeouts);
            tracing::debug!(
                conn = key,
                "closed: TLS handshake not done within auth-timeout"
            );
            self.close(key);
        }
    }
}
