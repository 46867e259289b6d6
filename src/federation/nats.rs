//! The NATS thread: async-nats on a current-thread tokio runtime of its
//! own. It owns every piece of cluster state (calls routed out and who
//! serves them, calls served here for other daemons, exported names); the
//! loop sees none of it, only [`Inbound`] messages and its waker.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, HeaderMap, Message, StatusCode};
use crossbeam_channel::{Receiver, Sender as CbSender, TrySendError};
use futures_util::StreamExt;
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::{Notify, mpsc};

use super::{Command, FederationConfig, Inbound, NO_HOST, QUEUE, UNREACHABLE, header, subject};
use crate::error::{ErrorCode, RpcError};
use crate::reactor::Waker;
use crate::stats::Stats;

/// Most calls served here for other daemons at once; past it a call is
/// answered -32000 at once.
pub(super) const MAX_SERVED: usize = 65536;
/// How often calls routed out are checked for a serving daemon that left.
const WATCH: Duration = Duration::from_millis(250);
/// A call older than this has its serving daemon checked.
const WATCH_AFTER: Duration = Duration::from_millis(500);
/// Longest wait for acknowledgements to reach NATS before calls go on.
pub(super) const ACK_FLUSH: Duration = Duration::from_secs(1);
/// How long a daemon has to answer the liveness check.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The running thread, to stop at shutdown.
pub(super) struct Thread {
    handle: JoinHandle<()>,
    stop: Arc<Notify>,
}

impl Thread {
    /// Starts the thread and its client (which connects, and reconnects,
    /// in the background).
    pub(super) fn spawn(
        config: FederationConfig,
        connected: Arc<AtomicBool>,
        pending: Arc<AtomicBool>,
        stats: Arc<Stats>,
        waker: Arc<Waker>,
    ) -> std::io::Result<(Thread, mpsc::Sender<Command>, Receiver<Inbound>)> {
        let (commands_tx, commands) = mpsc::channel(QUEUE);
        let (inbound_tx, inbound) = crossbeam_channel::bounded(QUEUE);
        let stop = Arc::new(Notify::new());
        let out = Out {
            inbound: inbound_tx,
            pending,
            waker,
            stats: Arc::clone(&stats),
        };
        let stopped = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("junction-nats".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "nats: cannot start the runtime; federation is off");
                        return;
                    }
                };
                runtime.block_on(run(config, connected, commands, out, stopped));
            })?;
        Ok((Thread { handle, stop }, commands_tx, inbound))
    }

    /// Asks the thread to stop and waits for it at most `bound`.
    pub(super) fn stop(self, bound: Duration) {
        self.stop.notify_one();
        let deadline = Instant::now() + bound;
        while !self.handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.handle.is_finished() {
            let _ = self.handle.join();
        } else {
            tracing::warn!("nats: the client did not stop in time; leaving it");
        }
    }
}

/// The way back to the loop: a bounded channel and the loop's waker,
/// woken once per burst (like the worker pool's completions).
pub(super) struct Out {
    inbound: CbSender<Inbound>,
    pending: Arc<AtomicBool>,
    waker: Arc<Waker>,
    pub(super) stats: Arc<Stats>,
}

impl Out {
    /// Hands a message to the loop; false when its queue is full.
    pub(super) fn push(&self, message: Inbound) -> bool {
        match self.inbound.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                Stats::bump(&self.stats.federation.queue_full);
                return false;
            }
        }
        if !self.pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                tracing::error!(error = %e, "nats: cannot wake the event loop");
            }
        }
        true
    }
}

/// A call routed out, waiting for its answer.
struct OutCall {
    method: Box<str>,
    /// The daemon serving it, once it acknowledged, and that daemon's
    /// connection epoch then.
    server: Option<(String, u64)>,
    since: Instant,
}

/// A call served here for another daemon.
pub(super) struct Served {
    pub(super) reply: String,
    pub(super) call: (String, u32),
}

/// Everything the thread keeps.
pub(super) struct State {
    pub(super) client: Client,
    pub(super) me: String,
    pub(super) prefix: String,
    pub(super) cluster: String,
    pub(super) out: Out,
    calls: HashMap<u32, OutCall>,
    pub(super) served: HashMap<u32, Served>,
    pub(super) served_by_call: HashMap<(String, u32), u32>,
    pub(super) next_token: u32,
    pub(super) exports: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Daemons whose liveness check is under way.
    pub(super) checking: HashMap<String, ()>,
    /// Connections to NATS made so far: an answer published before a
    /// reconnect may be lost, so a call acknowledged under an older epoch
    /// fails when the serving daemon reports a newer one.
    pub(super) epoch: u64,
}

/// Messages from the thread's own tasks to its main task.
enum Internal {
    /// The client connected (true) or lost its connection.
    Connection(bool),
    /// A liveness check ended: the daemon is gone (None) or answered with
    /// its epoch (Some), or did not answer in time (Some(0)).
    Alive(String, Option<u64>),
}

/// A random id for this daemon's run: 16 hex digits.
fn daemon_id() -> String {
    let seed = RandomState::new().hash_one((std::process::id(), Instant::now()));
    format!("{seed:016x}")
}

/// The delay before reconnect attempt `attempts`: 0 at once, then doubling
/// from 50 ms up to 5 s.
fn backoff(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(7);
    Duration::from_millis((50u64 << exp).min(5000))
}

async fn connect(
    config: &FederationConfig,
    me: &str,
    connected: Arc<AtomicBool>,
    internal: mpsc::UnboundedSender<Internal>,
    stats: Arc<Stats>,
) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .name(format!("junctiond {me}"))
        .no_echo()
        .retry_on_initial_connect()
        .retain_servers_order()
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(5))
        .reconnect_delay_callback(backoff)
        .event_callback(move |event| {
            let connected = Arc::clone(&connected);
            let internal = internal.clone();
            let stats = Arc::clone(&stats);
            async move {
                match event {
                    Event::Connected => {
                        connected.store(true, Ordering::Release);
                        stats.federation.connected.store(1, Ordering::Relaxed);
                        Stats::bump(&stats.federation.connects);
                        tracing::info!("nats: connected");
                        let _ = internal.send(Internal::Connection(true));
                    }
                    Event::Disconnected => {
                        connected.store(false, Ordering::Release);
                        stats.federation.connected.store(0, Ordering::Relaxed);
                        Stats::bump(&stats.federation.disconnects);
                        tracing::warn!("nats: disconnected; reconnecting with backoff");
                        let _ = internal.send(Internal::Connection(false));
                    }
                    other => tracing::info!(event = %other, "nats: event"),
                }
            }
        });
    if let Some(path) = &config.credentials {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?;
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.tls_required {
        options = options.require_tls(true);
    }
    options
        .connect(config.urls.as_slice())
        .await
        .map_err(|e| e.to_string())
}

async fn run(
    config: FederationConfig,
    connected: Arc<AtomicBool>,
    mut commands: mpsc::Receiver<Command>,
    out: Out,
    stop: Arc<Notify>,
) {
    let me = daemon_id();
    let prefix = subject::prefix(&config.cluster);
    let (internal_tx, mut internal) = mpsc::unbounded_channel();
    let (calls_tx, mut calls) = mpsc::unbounded_channel::<Message>();
    let client = match connect(
        &config,
        &me,
        connected,
        internal_tx.clone(),
        Arc::clone(&out.stats),
    )
    .await
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "nats: cannot set up the client; federation is off");
            return;
        }
    };
    tracing::info!(daemon = %me, cluster = %config.cluster, urls = ?config.urls, "nats: federation on");
    let subscribe = |subject: String| {
        let client = client.clone();
        async move { client.subscribe(subject).await }
    };
    let (replies, cancels, alive, events) = match tokio::try_join!(
        subscribe(format!("{prefix}.reply.{me}.*")),
        subscribe(format!("{prefix}.cancel.{me}")),
        subscribe(format!("{prefix}.alive.{me}")),
        subscribe(format!("{prefix}.event.>")),
    ) {
        Ok(subs) => subs,
        Err(e) => {
            tracing::error!(error = %e, "nats: cannot subscribe; federation is off");
            return;
        }
    };
    let (mut replies, mut cancels, mut alive, mut events) = (replies, cancels, alive, events);
    let mut state = State {
        client,
        me,
        prefix,
        cluster: config.cluster.clone(),
        out,
        calls: HashMap::default(),
        served: HashMap::default(),
        served_by_call: HashMap::default(),
        next_token: 0,
        exports: HashMap::default(),
        checking: HashMap::default(),
        epoch: 0,
    };
    let mut watch = tokio::time::interval(WATCH);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.notified() => break,
            command = commands.recv() => match command {
                Some(command) => state.command(command, &calls_tx).await,
                None => break,
            },
            Some(message) = replies.next() => state.reply(message),
            Some(message) = cancels.next() => state.cancel(&message),
            Some(message) = alive.next() => {
                if let Some(reply) = message.reply {
                    let epoch = state.epoch.to_string().into_bytes();
                    let _ = state.client.publish(reply, epoch.into()).await;
                }
            }
            Some(message) = events.next() => state.event(message),
            Some(message) = calls.recv() => state.serve_batch(message, &mut calls).await,
            Some(message) = internal.recv() => match message {
                Internal::Connection(true) => state.epoch += 1,
                Internal::Connection(false) => state.lost(),
                Internal::Alive(daemon, gone) => state.alive(daemon, gone),
            },
            _ = watch.tick() => state.watch(&internal_tx),
        }
    }
    for (_, task) in state.exports.drain() {
        task.abort();
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), state.client.flush()).await;
}

pub(super) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, *value);
    }
    map
}

pub(super) fn get<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
}

impl State {
    async fn command(&mut self, command: Command, calls: &mpsc::UnboundedSender<Message>) {
        match command {
            Command::Export(name) => self.export(name, calls).await,
            Command::Unexport(name) => {
                if let Some(task) = self.exports.remove(&name) {
                    task.abort(); // Dropping the subscriber unsubscribes.
                    tracing::debug!(name, "nats: name no longer served");
                }
            }
            Command::Call {
                id,
                method,
                payload,
                raw,
                identity,
            } => self.call(id, method, payload, raw, &identity).await,
            Command::Cancel { id, reason } => {
                let Some(call) = self.calls.remove(&id) else {
                    return;
                };
                if let Some((server, _)) = call.server {
                    let me_call = format!("{}.{id}", self.me);
                    let map = headers(&[(header::CALL, &me_call), (header::REASON, reason)]);
                    let subject = format!("{}.cancel.{server}", self.prefix);
                    let _ = self
                        .client
                        .publish_with_headers(subject, map, Vec::new().into())
                        .await;
                }
            }
            Command::Publish {
                topic,
                data,
                identity,
            } => {
                let map = headers(&[
                    (header::ORIGIN, &self.me),
                    (header::IDENTITY, &identity),
                    (header::TOPIC, &topic),
                ]);
                let subject = subject::event(&self.prefix, &topic);
                let payload = data.get().as_bytes().to_vec();
                match self
                    .client
                    .publish_with_headers(subject, map, payload.into())
                    .await
                {
                    Ok(()) => Stats::bump(&self.out.stats.federation.events_out),
                    Err(e) => {
                        Stats::bump(&self.out.stats.federation.events_dropped);
                        tracing::debug!(error = %e, "nats: event not published");
                    }
                }
            }
            Command::Reply { token, frame } => {
                let Some(served) = self.served.remove(&token) else {
                    return;
                };
                self.served_by_call.remove(&served.call);
                let _ = self.client.publish(served.reply, frame.into()).await;
            }
        }
    }

    async fn export(&mut self, name: String, calls: &mpsc::UnboundedSender<Message>) {
        if self.exports.contains_key(&name) {
            return;
        }
        let subject = subject::call(&self.prefix, &name);
        let mut subscriber = match self
            .client
            .queue_subscribe(subject.clone(), subject.clone())
            .await
        {
            Ok(subscriber) => subscriber,
            Err(e) => {
                tracing::warn!(name, error = %e, "nats: cannot serve the name to the cluster");
                return;
            }
        };
        let calls = calls.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                if calls.send(message).is_err() {
                    return;
                }
            }
        });
        tracing::debug!(name, subject, "nats: name served to the cluster");
        self.exports.insert(name, task);
    }

    async fn call(
        &mut self,
        id: Option<u32>,
        method: Box<str>,
        payload: Vec<u8>,
        raw: bool,
        identity: &str,
    ) {
        let subject = subject::call(&self.prefix, &method);
        let mut pairs = vec![
            (header::ORIGIN, self.me.as_str()),
            (header::IDENTITY, identity),
            (header::METHOD, &*method),
        ];
        if raw {
            pairs.push((header::RAW, "1"));
        }
        let Some(id) = id else {
            pairs.push((header::NOTIFY, "1"));
            let map = headers(&pairs);
            let _ = self
                .client
                .publish_with_headers(subject, map, payload.into())
                .await;
            Stats::bump(&self.out.stats.federation.calls_out);
            return;
        };
        let map = headers(&pairs);
        let reply = format!("{}.reply.{}.{id}", self.prefix, self.me);
        let sent = self
            .client
            .publish_with_reply_and_headers(subject, reply, map, payload.into())
            .await;
        if let Err(e) = sent {
            Stats::bump(&self.out.stats.federation.unreachable);
            let error = RpcError::new(
                UNREACHABLE,
                format!("Cluster unreachable: the call of {method} could not be sent to NATS: {e}"),
            );
            self.out.push(Inbound::Fail { id, error });
            return;
        }
        Stats::bump(&self.out.stats.federation.calls_out);
        self.calls.insert(
            id,
            OutCall {
                method,
                server: None,
                since: Instant::now(),
            },
        );
    }

    /// An acknowledgement, an answer, or NATS saying no one serves the name.
    fn reply(&mut self, message: Message) {
        let Some(id) = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            return;
        };
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            let Some(call) = self.calls.remove(&id) else {
                return;
            };
            Stats::bump(&self.out.stats.federation.no_host);
            let error = RpcError::new(
                NO_HOST,
                format!(
                    "No host provides it: no daemon of cluster {:?} provides {}",
                    self.cluster, call.method
                ),
            );
            self.out.push(Inbound::Fail { id, error });
            return;
        }
        if let Some(server) = get(&message, header::ACK) {
            let epoch = get(&message, header::EPOCH)
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            if let Some(call) = self.calls.get_mut(&id) {
                call.server = Some((server.to_string(), epoch));
            }
            return;
        }
        if self.calls.remove(&id).is_none() {
            Stats::bump(&self.out.stats.federation.late_answers);
            return;
        }
        Stats::bump(&self.out.stats.federation.answers_in);
        let frame = message.payload.to_vec();
        if !self.out.push(Inbound::Answer { id, frame }) {
            tracing::warn!(id, "nats: an answer was dropped: the loop's queue is full");
        }
    }

    /// The connection was lost: calls routed out will get no answer.
    fn lost(&mut self) {
        if !self.calls.is_empty() {
            Stats::add(
                &self.out.stats.federation.unreachable,
                self.calls.len() as u64,
            );
            self.calls.clear();
            self.out.push(Inbound::Lost);
        }
        self.checking.clear();
    }

    /// Starts a liveness check of each daemon serving a call routed out for
    /// a while; a daemon gone from NATS fails its calls (-32022).
    fn watch(&mut self, internal: &mpsc::UnboundedSender<Internal>) {
        let now = Instant::now();
        let mut servers: Vec<String> = self
            .calls
            .values()
            .filter(|c| now.duration_since(c.since) >= WATCH_AFTER)
            .filter_map(|c| c.server.as_ref().map(|(s, _)| s.clone()))
            .collect();
        servers.sort_unstable();
        servers.dedup();
        for server in servers {
            if self.checking.insert(server.clone(), ()).is_some() {
                continue;
            }
            let client = self.client.clone();
            let subject = format!("{}.alive.{server}", self.prefix);
            let internal = internal.clone();
            tokio::spawn(async move {
                let answer =
                    tokio::time::timeout(ALIVE_TIMEOUT, client.request(subject, Vec::new().into()))
                        .await;
                let status = match &answer {
                    Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => None,
                    Ok(Ok(reply)) => Some(
                        std::str::from_utf8(&reply.payload)
                            .ok()
                            .and_then(|e| e.parse().ok())
                            .unwrap_or(0),
                    ),
                    _ => Some(0),
                };
                let _ = internal.send(Internal::Alive(server, status));
            });
        }
    }

    /// A liveness check's result: a daemon gone from NATS fails the calls
    /// it serves (-32022); one that reconnected since it acknowledged a
    /// call may have lost its answer, which fails too (-32041).
    fn alive(&mut self, daemon: String, status: Option<u64>) {
        self.checking.remove(&daemon);
        let lost = |acked: u64| match status {
            None => true,
            Some(0) => false, // No answer in time: no news.
            Some(now) => now > acked,
        };
        let ids: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.server
                    .as_ref()
                    .is_some_and(|(s, acked)| *s == daemon && lost(*acked))
            })
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        tracing::warn!(
            daemon,
            gone = status.is_none(),
            calls = ids.len(),
            "nats: a daemon serving calls left the cluster or reconnected; its calls fail"
        );
        for id in ids {
            let Some(call) = self.calls.remove(&id) else {
                continue;
            };
            let error = if status.is_none() {
                Stats::bump(&self.out.stats.federation.provider_gone);
                RpcError::with(
                    ErrorCode::ProviderGone,
                    format_args!(
                        "the daemon serving {} left the cluster with the call pending",
                        call.method
                    ),
                )
            } else {
                Stats::bump(&self.out.stats.federation.unreachable);
                RpcError::new(
                    UNREACHABLE,
                    format!(
                        "Cluster unreachable: the daemon serving {} lost its connection to NATS with the call pending; its answer may be lost",
                        call.method
                    ),
                )
            };
            self.out.push(Inbound::Fail { id, error });
        }
    }
}
