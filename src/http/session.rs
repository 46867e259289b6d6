//! A connection that speaks HTTP/1.1 (`Phase::Http`): requests answered one
//! at a time and in order, and the WebSocket it may upgrade to.
//!
//! A child module of `conn.rs` (included from src/http/ with `#[path]`),
//! so that it works on the connection's own ring and output. JSON-RPC that
//! arrives by POST or in WebSocket messages goes to the same dispatcher as
//! a line's; the dispatcher writes its answers into [`HttpState::staging`]
//! instead of the output, and this module frames them: a POST's whole
//! answer becomes one response with its Content-Length once the request has
//! nothing left in flight; a WebSocket's lines (answers, forwarded calls,
//! events) each become a text message as soon as they are written.

use std::borrow::Cow;
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;

use super::{Connection, Input};
use crate::access::Gate;
use crate::dispatch::{Dispatcher, Shared};
use crate::error::{ErrorCode, RpcError};
use crate::http::request::{self, Chunk, Head, Method, Parsed, Target};
use crate::http::response::{self, Response};
use crate::http::{MAX_HEAD, metrics, ws};
use crate::proto::jsonrpc;
use crate::stats::Stats;
use crate::write_queue::{ChunkPool, MAX_IOVECS, WriteQueue};

/// What a request being answered asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    /// A JSON-RPC POST.
    Rpc,
    /// GET /stats.
    Stats,
    /// GET /metrics.
    Metrics,
    /// GET /clients.
    Clients,
}

/// Where the request at the front stands.
#[derive(Debug, Default)]
enum Stage {
    /// Waiting for a request head.
    #[default]
    Head,
    /// A POST whose body is arriving; a chunked one is gathered in `body`.
    Body { head: Head, body: Vec<u8> },
    /// Dispatched: the response goes out once nothing is in flight.
    Answering { head: Head, kind: Exchange },
}

/// A WebSocket's codec state.
#[derive(Debug, Default)]
struct Socket {
    /// The text message being gathered from its fragments.
    message: Vec<u8>,
    /// True while a fragmented message is open.
    fragmented: bool,
    /// The close frame went out.
    close_sent: bool,
    /// The code the close frame will carry, and why.
    close: Option<(u16, Cow<'static, str>)>,
}

/// The HTTP side of a connection.
#[derive(Debug, Default)]
pub(crate) struct HttpState {
    /// Where the dispatcher writes, to be framed.
    pub(crate) staging: WriteQueue,
    stage: Stage,
    socket: Option<Box<Socket>>,
}

impl HttpState {
    /// True once upgraded to a WebSocket (the daemon may push to it).
    pub(crate) fn is_websocket(&self) -> bool {
        self.socket.is_some()
    }

    /// Where bytes the daemon originates go: a WebSocket's staging; None
    /// over plain HTTP, which has no way to carry them.
    pub(crate) fn push_sink(&mut self) -> Option<&mut WriteQueue> {
        self.socket.is_some().then_some(&mut self.staging)
    }
}

/// The reason a WebSocket's Close frame gives when the daemon shuts down.
pub(crate) const GOING_AWAY_REASON: &str = "server shutting down";

/// Moves everything `staging` holds into `into`.
fn take_staged(staging: &mut WriteQueue, chunks: &mut ChunkPool, into: &mut Vec<u8>) {
    while !staging.is_empty() {
        let taken = {
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let used = staging.iovecs(&mut iov);
            iov[..used].iter().fold(0, |n, slice| {
                into.extend_from_slice(slice);
                n + slice.len()
            })
        };
        if taken == 0 {
            break;
        }
        staging.advance(taken, chunks);
    }
}

impl Connection {
    /// Becomes an HTTP connection (the sniffer saw a request line).
    pub(super) fn start_http(&mut self, shared: &mut Shared<'_>) {
        self.http = Some(Box::default());
        Stats::bump(&shared.stats().http.connections);
    }

    /// True while a request's body is owed: the frame clock keeps running
    /// even when the ring is empty (a head whose body never comes).
    pub(super) fn http_mid_request(&self) -> bool {
        self.http
            .as_deref()
            .is_some_and(|h| matches!(h.stage, Stage::Body { .. }))
    }

    /// Parses and answers what the ring holds, one request at a time.
    pub(super) fn parse_http(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) {
        loop {
            let Some(http) = self.http.as_deref() else {
                return;
            };
            if http.socket.is_some() {
                return self.parse_ws(shared, scratch);
            }
            let at_head = matches!(http.stage, Stage::Head);
            if matches!(http.stage, Stage::Answering { .. }) {
                if self.in_flight > 0 || !self.batches.is_empty() {
                    // Read again (after_answer) once the answer is in.
                    self.saturated = true;
                    return;
                }
                self.answer(shared);
                continue;
            }
            if self.input != Input::Open || self.must_wait(shared) {
                return;
            }
            let progress = if at_head {
                self.http_head(shared, scratch)
            } else {
                self.http_body(shared, scratch)
            };
            if !progress {
                return;
            }
        }
    }

    /// Parses the head at the front of the ring and acts on it.
    fn http_head(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) -> bool {
        let seen = self.ring.len().min(MAX_HEAD);
        if seen == 0 {
            return false;
        }
        let access = shared.context.access();
        let parsed = request::parse_head(self.ring.frame(0, seen, scratch), MAX_HEAD, &access.http);
        drop(access);
        match parsed {
            Parsed::NeedMore => false,
            Parsed::Refused(refusal) => {
                Stats::bump(&shared.stats().http.requests);
                self.fail(refusal.status, refusal.why, shared);
                false
            }
            Parsed::Head(head) => {
                Stats::bump(&shared.stats().http.requests);
                self.ring.consume(head.len);
                self.route(head, shared);
                true
            }
        }
    }

    /// Answers `status` with `why`, then closes (the input is not read further).
    fn fail(&mut self, status: u16, why: &str, shared: &mut Shared<'_>) {
        let body = format!("{why}\n");
        self.write_response(
            &Response {
                close: true,
                ..Response::text(status, &body)
            },
            shared,
        );
        self.refuse(shared, b"");
    }

    /// Writes a response, counting errors; closes after it when asked to.
    fn write_response(&mut self, response: &Response<'_>, shared: &mut Shared<'_>) {
        if response.status >= 400 {
            Stats::bump(&shared.stats().http.errors);
        }
        self.out.append(shared.chunks, |buf| response.write(buf));
        if response.close && self.input == Input::Open {
            self.refuse(shared, b"");
        }
    }

    /// Answers a request: the connection closes after it unless the request
    /// keeps it alive; a browser's allowed Origin gets the CORS headers.
    fn respond(&mut self, head: &Head, response: Response<'_>, shared: &mut Shared<'_>) {
        let draining = shared.stats().draining.load(Relaxed);
        let close = response.close || !head.keep_alive || draining;
        let head_only = head.method() == Method::Head;
        let Some(origin) = head.origin.as_deref() else {
            let response = Response {
                close,
                head_only,
                ..response
            };
            return self.write_response(&response, shared);
        };
        let mut extra: Vec<(&str, &str)> = response.extra.to_vec();
        extra.push(("Access-Control-Allow-Origin", origin));
        extra.push(("Vary", "Origin"));
        let response = Response {
            close,
            head_only,
            extra: &extra,
            ..response
        };
        self.write_response(&response, shared);
    }

    /// Decides what a request is: checks Host, Origin and the bearer
    /// token, then serves it, dispatches it, or refuses it.
    fn route(&mut self, head: Head, shared: &mut Shared<'_>) {
        if !head.host_allowed {
            Stats::bump(&shared.stats().http.refused_origin);
            return self.fail(403, "this Host is not served (see http-hosts)", shared);
        }
        if head.origin.is_some() && !head.origin_allowed {
            Stats::bump(&shared.stats().http.refused_origin);
            return self.fail(403, "this Origin is not allowed (see http-origins)", shared);
        }
        if head.bad_authorization {
            return self.fail(401, "Authorization must be \"Bearer TOKEN\"", shared);
        }
        if let Some(token) = head.bearer.as_deref()
            && let Err(why) = self.bearer(token, shared)
        {
            crate::access::warn_auth_failure(self.id.token, &self.peer);
            return self.fail(401, &why, shared);
        }
        if head.method() != Method::Post && head.has_body() {
            return self.fail(400, "this request takes no body", shared);
        }
        if head.websocket {
            return self.upgrade(&head, shared);
        }
        match (head.method(), head.target) {
            (Method::Get | Method::Head, Target::Healthz) => {
                let (status, body) = if shared.stats().draining.load(Relaxed) {
                    (503, "draining\n")
                } else {
                    (200, "ok\n")
                };
                self.respond(&head, Response::text(status, body), shared);
            }
            (Method::Get | Method::Head, Target::Metrics | Target::Stats | Target::Clients) => {
                let kind = match head.target {
                    Target::Metrics => Exchange::Metrics,
                    Target::Stats => Exchange::Stats,
                    _ => Exchange::Clients,
                };
                if !self.is_authenticated() {
                    return self.unauthorized(&head, shared);
                }
                if kind == Exchange::Clients && !self.rights.admin() {
                    let body = "GET /clients is for admins (docs/security.md)\n";
                    return self.respond(&head, Response::text(403, body), shared);
                }
                let request: &[u8] = if kind == Exchange::Clients {
                    br#"{"jsonrpc":"2.0","id":0,"method":"rpc.clients"}"#
                } else {
                    br#"{"jsonrpc":"2.0","id":0,"method":"rpc.stats"}"#
                };
                dispatcher!(self, shared).jsonrpc_line(request);
                self.set_stage(Stage::Answering { head, kind });
            }
            (_, target) if target != Target::Other => {
                let response = Response {
                    extra: &[("Allow", "GET, HEAD")],
                    ..Response::text(405, "use GET\n")
                };
                self.respond(&head, response, shared);
            }
            (Method::Post, _) => self.post(head, shared),
            (Method::Options, _) => {
                let mut response = Response::text(204, "");
                response.extra = &[
                    ("Allow", "GET, HEAD, POST, OPTIONS"),
                    ("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS"),
                    (
                        "Access-Control-Allow-Headers",
                        "authorization, content-type",
                    ),
                    ("Access-Control-Max-Age", "600"),
                ];
                self.respond(&head, response, shared);
            }
            (Method::Get | Method::Head, _) => {
                let body = "not found: GET /healthz, /metrics, /stats, /clients; POST JSON-RPC; or a WebSocket upgrade\n";
                self.respond(&head, Response::text(404, body), shared);
            }
            _ => {
                let response = Response {
                    extra: &[("Allow", "GET, HEAD, POST, OPTIONS")],
                    ..Response::text(405, "method not allowed\n")
                };
                self.respond(&head, response, shared);
            }
        }
    }

    /// 401 with the scheme to use; the connection stays open for a retry
    /// (the auth timeout still applies to it).
    fn unauthorized(&mut self, head: &Head, shared: &mut Shared<'_>) {
        let response = Response {
            extra: &[("WWW-Authenticate", "Bearer")],
            close: head.has_body(),
            ..Response::text(
                401,
                "authentication required: Authorization: Bearer TOKEN\n",
            )
        };
        self.respond(head, response, shared);
    }

    fn set_stage(&mut self, stage: Stage) {
        if let Some(http) = self.http.as_deref_mut() {
            http.stage = stage;
        }
    }

    /// Judges `Authorization: Bearer TOKEN` as `rpc.auth` is judged.
    fn bearer(&mut self, token: &[u8], shared: &mut Shared<'_>) -> Result<(), Cow<'static, str>> {
        let open = self.gate == Gate::Open;
        dispatcher!(self, shared).authenticate_bearer(open, token)?;
        self.gate = Gate::Open;
        Ok(())
    }

    /// A JSON-RPC POST: checks its framing and type, then waits for its body.
    fn post(&mut self, head: Head, shared: &mut Shared<'_>) {
        if !self.is_authenticated() {
            return self.unauthorized(&head, shared);
        }
        if !head.json {
            let body = "Content-Type: application/json is required\n";
            let response = Response {
                close: head.has_body(),
                ..Response::text(415, body)
            };
            return self.respond(&head, response, shared);
        }
        if !head.chunked && head.content_length.is_none() {
            return self.fail(
                411,
                "Content-Length or chunked encoding is required",
                shared,
            );
        }
        let limit = self.frame_limit(shared) as u64;
        if head.content_length.is_some_and(|n| n > limit) {
            let why = format!("the body exceeds max-frame ({limit} bytes)");
            return self.fail(413, &why, shared);
        }
        if head.expect_continue {
            self.out.append(shared.chunks, |buf| {
                buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            });
        }
        self.set_stage(Stage::Body {
            head,
            body: Vec::new(),
        });
    }

    /// Takes in a POST's body; dispatches it once whole.
    fn http_body(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) -> bool {
        let Some(http) = self.http.as_deref_mut() else {
            return false;
        };
        let Stage::Body { head, mut body } = std::mem::take(&mut http.stage) else {
            return false;
        };
        let limit = self.frame_limit(shared);
        if !head.chunked {
            let len = head.content_length.unwrap_or(0) as usize;
            if self.ring.len() < len {
                self.set_stage(Stage::Body { head, body });
                return false;
            }
            let bytes = self.ring.frame(0, len, scratch);
            if bytes.iter().all(u8::is_ascii_whitespace) {
                self.blank_post(shared);
            } else {
                dispatcher!(self, shared).jsonrpc_line(bytes);
            }
            self.ring.consume(len);
            self.set_stage(Stage::Answering {
                head,
                kind: Exchange::Rpc,
            });
            return true;
        }
        loop {
            let view = self.ring.frame(0, self.ring.len(), scratch);
            match request::next_chunk(view) {
                Chunk::NeedMore => break,
                Chunk::NeedData { size } if body.len() as u64 + size <= limit as u64 => break,
                Chunk::NeedData { .. } => {
                    let why = format!("the body exceeds max-frame ({limit} bytes)");
                    self.fail(413, &why, shared);
                    return false;
                }
                Chunk::Data {
                    start,
                    len,
                    consumed,
                } => {
                    if body.len() + len > limit {
                        let why = format!("the body exceeds max-frame ({limit} bytes)");
                        self.fail(413, &why, shared);
                        return false;
                    }
                    body.extend_from_slice(&view[start..start + len]);
                    self.ring.consume(consumed);
                }
                Chunk::End { consumed } => {
                    self.ring.consume(consumed);
                    if body.iter().all(u8::is_ascii_whitespace) {
                        self.blank_post(shared);
                    } else {
                        dispatcher!(self, shared).jsonrpc_line(&body);
                    }
                    self.set_stage(Stage::Answering {
                        head,
                        kind: Exchange::Rpc,
                    });
                    return true;
                }
                Chunk::Invalid => {
                    self.fail(400, "malformed chunked body", shared);
                    return false;
                }
            }
        }
        self.set_stage(Stage::Body { head, body });
        false
    }

    /// An empty body is no JSON at all: a parse error (a blank line
    /// would get nothing).
    fn blank_post(&mut self, shared: &mut Shared<'_>) {
        let error = RpcError::parse_error("the request body is empty");
        Stats::bump(
            &shared
                .stats()
                .protocol(crate::proto::Protocol::JsonRpc)
                .errors,
        );
        if let Some(http) = self.http.as_deref_mut() {
            http.staging
                .append(shared.chunks, |buf| jsonrpc::write_error(buf, None, &error));
        }
    }

    /// Sends the response of the request being answered.
    fn answer(&mut self, shared: &mut Shared<'_>) {
        let Some(http) = self.http.as_deref_mut() else {
            return;
        };
        let Stage::Answering { head, kind } = std::mem::take(&mut http.stage) else {
            return;
        };
        if kind == Exchange::Rpc && head.origin.is_none() && self.answer_in_place(&head, shared) {
            return;
        }
        let Some(http) = self.http.as_deref_mut() else {
            return;
        };
        let mut body = Vec::new();
        take_staged(&mut http.staging, shared.chunks, &mut body);
        while body.last() == Some(&b'\n') {
            body.pop();
        }
        if kind == Exchange::Rpc {
            let response = if body.is_empty() {
                Response::text(204, "") // Notifications only: nothing to say.
            } else {
                Response {
                    content_type: Some(response::JSON),
                    body: &body,
                    ..Response::text(200, "")
                }
            };
            return self.respond(&head, response, shared);
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(result) = answer.get("result") else {
            let error = answer.get("error");
            let code = error.and_then(|e| e.get("code")).and_then(|c| c.as_i64());
            let message = error
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str())
                .unwrap_or("no answer");
            let status = if code == Some(i64::from(ErrorCode::Forbidden.code())) {
                403
            } else {
                500
            };
            let text = format!("{message}\n");
            return self.respond(&head, Response::text(status, &text), shared);
        };
        let (text, kind) = if kind == Exchange::Metrics {
            let mut text = String::with_capacity(8 * 1024);
            metrics::render(result, &mut text);
            (text.into_bytes(), response::PROMETHEUS)
        } else {
            let mut text = serde_json::to_vec(result).unwrap_or_default();
            text.push(b'\n');
            (text, response::JSON)
        };
        let response = Response {
            content_type: Some(kind),
            body: &text,
            ..Response::text(200, "")
        };
        self.respond(&head, response, shared);
    }

    /// The usual POST answer, written without a copy of its own: the head
    /// with the staged answer's length, then the staged bytes straight into
    /// the output (its final newline left out). False when the staged
    /// output does not have that shape (empty, or in more chunks than one
    /// gather holds): the caller takes the general path.
    fn answer_in_place(&mut self, head: &Head, shared: &mut Shared<'_>) -> bool {
        let Some(http) = self.http.as_deref_mut() else {
            return false;
        };
        let total = http.staging.len();
        let close = !head.keep_alive || shared.stats().draining.load(Relaxed);
        {
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let used = http.staging.iovecs(&mut iov);
            let gathered: usize = iov[..used].iter().map(|s| s.len()).sum();
            let ends_in_newline = iov[..used].last().is_some_and(|s| s.last() == Some(&b'\n'));
            if total < 2 || gathered != total || !ends_in_newline {
                return false;
            }
            let response = Response {
                status: 200,
                content_type: Some(response::JSON),
                body: &[],
                head_only: head.method() == Method::Head,
                close,
                extra: &[],
            };
            let mut left = total - 1;
            self.out.append(shared.chunks, |buf| {
                response.write_head(buf, left);
                for slice in &iov[..used] {
                    let take = slice.len().min(left);
                    buf.extend_from_slice(&slice[..take]);
                    left -= take;
                }
            });
        }
        http.staging.advance(total, shared.chunks);
        if close {
            self.refuse(shared, b"");
        }
        true
    }

    /// The opening handshake: 101 and the WebSocket from here on.
    fn upgrade(&mut self, head: &Head, shared: &mut Shared<'_>) {
        if head.method() != Method::Get {
            return self.fail(400, "a WebSocket opens with GET", shared);
        }
        if head.ws_version.as_deref() != Some("13") {
            let response = Response {
                extra: &[("Sec-WebSocket-Version", "13")],
                close: true,
                ..Response::text(426, "WebSocket version 13 is required\n")
            };
            self.write_response(&response, shared);
            return;
        }
        let Some(key) = head.ws_key.as_deref().filter(|k| ws::key_is_valid(k)) else {
            return self.fail(400, "Sec-WebSocket-Key must be 16 bytes in base64", shared);
        };
        let accept = ws::accept_key(key);
        let headers = response::websocket_upgrade(&accept);
        self.write_response(&Response::switching_protocols(&headers), shared);
        Stats::bump(&shared.stats().http.upgrades);
        if let Some(http) = self.http.as_deref_mut() {
            http.socket = Some(Box::default());
        }
    }

    /// Parses WebSocket frames: text messages are JSON-RPC (the first one
    /// `rpc.auth` when the connection must still authenticate).
    fn parse_ws(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) {
        while self.input == Input::Open {
            if self.must_wait(shared) {
                return;
            }
            let mut first = [0u8; ws::MAX_HEADER];
            let seen = self.ring.len().min(ws::MAX_HEADER);
            self.ring.peek(&mut first[..seen]);
            let frame = match ws::parse_head(&first[..seen]) {
                ws::Parsed::NeedMore => return,
                ws::Parsed::Fail(code, why) => return self.ws_close(code, why.into(), shared),
                ws::Parsed::Head(frame) => frame,
            };
            let limit = self.frame_limit(shared);
            if frame.len > limit as u64 {
                let why = format!("a message exceeds max-frame ({limit} bytes)");
                return self.ws_close(ws::code::TOO_BIG, why.into(), shared);
            }
            let len = frame.len as usize;
            let total = frame.header_len + len;
            if self.ring.len() < total {
                return;
            }
            let payload = self.ring.frame(frame.header_len, len, scratch);
            let Some(socket) = self
                .http
                .as_deref_mut()
                .and_then(|h| h.socket.as_deref_mut())
            else {
                return;
            };
            if frame.is_control() {
                let mut data = Vec::with_capacity(len);
                ws::unmask_into(&mut data, payload, frame.mask);
                self.ring.consume(total);
                self.ws_control(frame.opcode, &data, shared);
                continue;
            }
            let starts = frame.opcode != ws::CONTINUATION;
            if starts == socket.fragmented {
                let why = if starts {
                    "a new message inside a fragmented one"
                } else {
                    "a continuation frame with no message to continue"
                };
                return self.ws_close(ws::code::PROTOCOL, why.into(), shared);
            }
            if frame.opcode == ws::BINARY {
                let why = "binary messages are not taken: send JSON-RPC as text";
                return self.ws_close(ws::code::UNSUPPORTED, why.into(), shared);
            }
            if socket.message.len() + len > limit {
                let why = format!("a message exceeds max-frame ({limit} bytes)");
                return self.ws_close(ws::code::TOO_BIG, why.into(), shared);
            }
            ws::unmask_into(&mut socket.message, payload, frame.mask);
            self.ring.consume(total);
            socket.fragmented = !frame.fin;
            if frame.fin {
                let message = std::mem::take(&mut socket.message);
                self.ws_message(&message, shared);
                if let Some(socket) = self
                    .http
                    .as_deref_mut()
                    .and_then(|h| h.socket.as_deref_mut())
                    && message.capacity() <= crate::buffer::RING_MIN
                {
                    socket.message = message;
                    socket.message.clear();
                }
            }
        }
    }

    /// One whole text message: JSON-RPC.
    fn ws_message(&mut self, message: &[u8], shared: &mut Shared<'_>) {
        if std::str::from_utf8(message).is_err() {
            return self.ws_close(
                ws::code::INVALID_DATA,
                "a text message is not UTF-8".into(),
                shared,
            );
        }
        Stats::bump(&shared.stats().http.ws_messages_in);
        if self.gate == Gate::Open {
            dispatcher!(self, shared).jsonrpc_line(message);
        } else {
            let outcome = dispatcher!(self, shared).authenticate_jsonrpc(message);
            self.after_auth(outcome, shared);
        }
    }

    /// Ping, pong, close.
    fn ws_control(&mut self, opcode: u8, data: &[u8], shared: &mut Shared<'_>) {
        match opcode {
            ws::PING => self.out.append(shared.chunks, |buf| {
                ws::write_head(buf, ws::PONG, data.len());
                buf.extend_from_slice(data);
            }),
            ws::CLOSE => {
                // Echo the peer's code (a valid one), then close.
                let code = match data {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => ws::code::NORMAL,
                };
                let code =
                    if (1000..=4999).contains(&code) && ![1004, 1005, 1006, 1015].contains(&code) {
                        code
                    } else {
                        ws::code::PROTOCOL
                    };
                self.ws_close(code, "".into(), shared);
            }
            _ => {} // A pong: nothing to do.
        }
    }

    /// Ends the WebSocket with a close frame (sent after what is staged).
    fn ws_close(&mut self, code: u16, why: Cow<'static, str>, shared: &mut Shared<'_>) {
        if let Some(socket) = self
            .http
            .as_deref_mut()
            .and_then(|h| h.socket.as_deref_mut())
            && socket.close.is_none()
        {
            socket.close = Some((code, why));
        }
        self.refuse(shared, b"");
    }

    /// Frames what the dispatcher and the bus wrote (a WebSocket's text
    /// messages, one per JSON-RPC line), and the close frame once the
    /// conversation is over. Called on every output change.
    pub(super) fn http_flush(&mut self, shared: &mut Shared<'_>) {
        let Some(http) = self.http.as_deref_mut() else {
            return;
        };
        let Some(socket) = http.socket.as_deref_mut() else {
            return;
        };
        if !http.staging.is_empty() {
            let mut staged = Vec::new();
            take_staged(&mut http.staging, shared.chunks, &mut staged);
            let mut sent = 0;
            self.out.append(shared.chunks, |buf| {
                ws::each_message(&staged, |message| {
                    ws::write_head(buf, ws::TEXT, message.len());
                    buf.extend_from_slice(message);
                    sent += 1;
                });
            });
            Stats::add(&shared.stats().http.ws_messages_out, sent);
        }
        // A refusal, or the drain's going away (input ended with a close
        // code set), once the answers still owed are out: no message may
        // follow a close frame (RFC 6455 section 5.5.1).
        let closing = match self.input {
            Input::Refused => true,
            Input::Ended => socket.close.is_some(),
            Input::Open => false,
        };
        let owed = self.in_flight > 0 || !self.batches.is_empty();
        if closing && !owed && !socket.close_sent {
            socket.close_sent = true;
            let (code, why) = socket
                .close
                .take()
                .unwrap_or((ws::code::POLICY, Cow::Borrowed("")));
            self.out
                .append(shared.chunks, |buf| ws::write_close(buf, code, &why));
        }
    }

    /// The daemon is shutting down (the drain, after
    /// [`Connection::stop_input`]): a WebSocket gets a Close frame with
    /// 1001, going away (RFC 6455 section 7.4.1), once the answers it is
    /// owed are out, so that its client knows the end is deliberate and
    /// not a network failure. Nothing when a close is already under way;
    /// other connections just close as before.
    pub(crate) fn go_away(&mut self, shared: &mut Shared<'_>) {
        let Some(socket) = self
            .http
            .as_deref_mut()
            .and_then(|h| h.socket.as_deref_mut())
        else {
            return;
        };
        if socket.close_sent || socket.close.is_some() {
            return;
        }
        socket.close = Some((ws::code::GOING_AWAY, Cow::Borrowed(GOING_AWAY_REASON)));
        self.account_output(shared);
    }

    /// Ends an HTTP conversation with `error` (a timeout, a limit, a
    /// reload that no longer lets the peer in): a WebSocket gets the
    /// JSON-RPC error and a close frame; between requests a connection is
    /// just closed; a request in progress gets its status.
    pub(super) fn http_end(&mut self, error: &RpcError, shared: &mut Shared<'_>) {
        let Some(http) = self.http.as_deref_mut() else {
            return;
        };
        if http.socket.is_some() {
            http.staging.append(shared.chunks, |buf| {
                jsonrpc::write_error(buf, None, error);
                buf.push(b'\n');
            });
            let code = if error.code == ErrorCode::FrameTooLarge.code() {
                ws::code::TOO_BIG
            } else {
                ws::code::POLICY
            };
            return self.ws_close(code, error.message.clone(), shared);
        }
        if matches!(http.stage, Stage::Head) && self.ring.is_empty() {
            return self.refuse(shared, b"");
        }
        let status = match error.code {
            c if c == ErrorCode::FrameTimeout.code() => 408,
            c if c == ErrorCode::Unauthorized.code() => 401,
            c if c == ErrorCode::AccessDenied.code() => 403,
            _ => 503,
        };
        let why = error.message.clone();
        self.fail(status, &why, shared);
    }
}
