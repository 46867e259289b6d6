//! Who gets a slot, and when it is given back: admission at accept (the
//! allow-list, `max-unauthenticated`, `max-connections`), the move of an
//! authenticated connection to a served slot, and peers that hang up.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::{Client, Core, TimerKind, shared, timers, turn_away};
use crate::access::{Gate, Peer};
use crate::conn::{Connection, Finish};
use crate::error::{ErrorCode, RpcError};
use crate::net::Stream;
use crate::stats::Stats;
use crate::workers::ConnRef;

impl Core {
    /// The driver saw the peer hang up (POLLHUP, POLLERR: it closed its
    /// socket, or reset the connection), so nothing will reach it any more.
    /// A connection whose input is held or ended is closed now (its routed
    /// calls are cancelled, its pooled answers dropped); one that is being
    /// read is closed once its input is read to the end (see [`Core::on_read`]).
    pub fn hung_up(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.hung_up = true;
        if !client.conn.wants_input() || self.starved.contains(&key) {
            self.close_hung_up(key);
        }
    }

    /// True while the core holds a connection's input (max-in-flight,
    /// max-output, a parked job) or it waits for buffer memory: nothing
    /// reads its socket, so the io_uring driver does not follow its poll's
    /// input edges (the core reads it again when it lets go), only hang-ups.
    pub fn not_reading(&self, key: usize) -> bool {
        self.clients
            .get(key)
            .is_some_and(|c| c.conn.is_held() || self.starved.contains(&key))
    }

    /// The driver saw the peer end its input (POLLRDHUP) while it could not
    /// read the EOF (the input is held): a FIN or a half-close, perhaps a
    /// full close. The timeout sweep checks which, while work is pending.
    pub fn read_closed(&mut self, key: usize) {
        if let Some(client) = self.clients.get_mut(key) {
            client.read_closed = true;
        }
    }

    /// Closes a connection whose peer hung up; counted when it still had
    /// work (it would not have closed by itself).
    pub(super) fn close_hung_up(&mut self, key: usize) {
        let Some(client) = self.clients.get(key) else {
            return;
        };
        if client.conn.finish() != Finish::Close {
            Stats::bump(&self.stats().gate.hang_ups);
            tracing::debug!(
                conn = key,
                in_flight = client.conn.in_flight(),
                "closed: the peer hung up with work pending"
            );
        }
        self.close(key);
    }

    /// Takes in an accepted stream, or turns it away at the connection limit.
    /// Returns its key; the driver starts watching it (see [`Core::take_admitted`]).
    pub fn admit(&mut self, mut stream: Stream) -> Option<usize> {
        let transport = stream.transport();
        let peer = stream.identity();
        let gate = self.context.access().gate(&peer);
        if let Some(error) = self.refusal(gate, &peer) {
            // Its protocol is not known yet: one JSON-RPC line says why.
            turn_away(&mut stream, &error);
            return None;
        }
        if !self.socket_recorded[transport as usize] {
            // The first connection of each transport shows what the kernel took.
            self.socket_recorded[transport as usize] = true;
            self.stats()
                .record_socket(transport.name(), stream.read_back());
        }
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        self.next_generation = self.next_generation.wrapping_add(1);
        let id = ConnRef {
            token: key,
            generation: self.next_generation,
        };
        tracing::debug!(conn = key, peer = %peer, "accepted");
        let waiting_auth = gate != Gate::Open;
        entry.insert(Client {
            stream,
            conn: Connection::new(id, peer, gate, self.now)
                .with_rights(self.context.guard().admit(&peer, gate)),
            lingering: false,
            hung_up: false,
            read_closed: false,
            waiting_auth,
            memory_wait: false,
            layer: match peer {
                Peer::Tcp(addr) => self.context.remote().and_then(|r| r.layer_for(addr)),
                Peer::Unix(_) => None,
            },
        });
        let stats = self.stats().transport(transport);
        Stats::bump(&stats.current);
        Stats::bump(&stats.total);
        let now = Instant::now();
        self.add_timer(
            now + self.config.sniff_timeout,
            key,
            id.generation,
            TimerKind::Sniff,
        );
        if waiting_auth {
            self.unauthenticated += 1;
            Stats::bump(&self.stats().gate.unauthenticated);
            if !self.config.auth_timeout.is_zero() {
                let at = now + self.config.auth_timeout;
                self.add_timer(at, key, id.generation, TimerKind::Auth);
            }
        }
        self.admitted.push(key);
        Some(key)
    }

    /// Connections being served: every open one but those still waiting to
    /// authenticate.
    fn served(&self) -> usize {
        self.clients.len() - self.unauthenticated
    }

    /// Why a new connection at `gate` is turned away at accept, if it is: a
    /// peer the allow-list refuses (it never takes a slot), the cap on
    /// connections waiting to authenticate, or the connection limit.
    fn refusal(&mut self, gate: Gate, peer: &Peer) -> Option<RpcError> {
        if gate == Gate::Denied {
            Stats::bump(&self.stats().access_denied);
            self.warn_denied(peer);
            return Some(RpcError::with(
                ErrorCode::AccessDenied,
                "this user may not use the daemon's socket (see allow-uids / allow-gids)",
            ));
        }
        if gate == Gate::AuthRequired && self.unauthenticated >= self.config.max_unauthenticated {
            Stats::bump(&self.stats().gate.refused_unauthenticated);
            self.warn_crowd();
            return Some(RpcError::with(
                ErrorCode::TooManyConnections,
                format_args!(
                    "{} connections are already waiting to authenticate (max-unauthenticated); retry shortly",
                    self.config.max_unauthenticated
                ),
            ));
        }
        if self.served() >= self.config.max_connections {
            Stats::bump(&self.stats().refused_max_connections);
            tracing::warn!(
                limit = self.config.max_connections,
                "connection refused: limit reached"
            );
            return Some(self.too_many());
        }
        None
    }

    /// The error a connection past `max-connections` gets.
    fn too_many(&self) -> RpcError {
        RpcError::with(
            ErrorCode::TooManyConnections,
            format_args!(
                "the daemon serves at most {} connections",
                self.config.max_connections
            ),
        )
    }

    /// A connection that was waiting to authenticate and now has: it
    /// leaves the unauthenticated count and takes a served slot, or is told
    /// there is none and closed (when the slots filled while it authenticated).
    pub(super) fn check_authenticated(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if !client.waiting_auth || !client.conn.is_authenticated() {
            return;
        }
        client.waiting_auth = false;
        self.unauthenticated -= 1;
        self.stats().gate.unauthenticated.fetch_sub(1, Relaxed);
        // It now counts among the served ones.
        if self.served() > self.config.max_connections {
            Stats::bump(&self.stats().refused_max_connections);
            let error = self.too_many();
            let mut shared = shared!(self);
            if let Some(client) = self.clients.get_mut(key) {
                client.conn.end_with(&error, &mut shared);
            }
            self.dirty.push(key);
        }
    }

    /// Logs a connection refused at `max-unauthenticated`, at most once per
    /// [`timers::WARNING_EVERY`] with a count of the rest.
    fn warn_crowd(&mut self) {
        let now = self.now;
        let limit = self.config.max_unauthenticated;
        let (last, count) = &mut self.crowd_warning;
        *count += 1;
        if last.is_none_or(|at| now.duration_since(at) >= timers::WARNING_EVERY) {
            tracing::warn!(
                limit,
                refused = *count,
                "connection refused: too many connections waiting to authenticate (max-unauthenticated)"
            );
            *last = Some(now);
            *count = 0;
        }
    }

    /// Logs a peer refused by the allow-list, at most once per
    /// [`timers::WARNING_EVERY`] with a count of the rest.
    fn warn_denied(&mut self, peer: &Peer) {
        let now = self.now;
        let (last, count) = &mut self.denial_warning;
        *count += 1;
        if last.is_none_or(|at| now.duration_since(at) >= timers::WARNING_EVERY) {
            tracing::warn!(
                peer = %peer,
                refused = *count,
                "connection refused: peer not on the allow-list (allow-uids / allow-gids)"
            );
            *last = Some(now);
            *count = 0;
        }
    }
}
