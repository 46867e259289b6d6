//! Request heads and chunked bodies, parsed with httparse: bytes in, an
//! owned [`Head`] (only the fields the daemon acts on) or a status out.

/// The methods the daemon tells apart; any other token is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: a GET whose body is left out.
    Head,
    /// POST: JSON-RPC.
    Post,
    /// OPTIONS: a CORS preflight or a capability probe.
    Options,
    /// Anything else (405).
    Other,
}

/// The paths the daemon serves with GET; any other is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// `/healthz`.
    Healthz,
    /// `/metrics`.
    Metrics,
    /// `/stats`.
    Stats,
    /// `/clients`.
    Clients,
    /// Any other path (POST takes any).
    #[default]
    Other,
}

/// What the daemon keeps of a request head: flags and numbers, so that a
/// plain request allocates nothing (only an Origin, a bearer token and a
/// WebSocket key are kept as text).
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// The method.
    pub method: Option<Method>,
    /// The path, without the query.
    pub target: Target,
    /// HTTP/1.1 (true) or HTTP/1.0.
    pub http11: bool,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// The Host header names a host served (see [`super::HttpAccess`]);
    /// true for an HTTP/1.0 request without one.
    pub host_allowed: bool,
    /// The Origin header (sent by browsers).
    pub origin: Option<String>,
    /// The Origin is on the allow-list (false without one).
    pub origin_allowed: bool,
    /// The token of `Authorization: Bearer TOKEN`.
    pub bearer: Option<Vec<u8>>,
    /// An Authorization header of another scheme, or a malformed one.
    pub bad_authorization: bool,
    /// Content-Length.
    pub content_length: Option<u64>,
    /// Transfer-Encoding: chunked.
    pub chunked: bool,
    /// Content-Type is `application/json` (parameters such as charset aside).
    pub json: bool,
    /// Expect: 100-continue.
    pub expect_continue: bool,
    /// Upgrade: websocket with Connection: upgrade.
    pub websocket: bool,
    /// Sec-WebSocket-Key.
    pub ws_key: Option<String>,
    /// Sec-WebSocket-Version.
    pub ws_version: Option<String>,
    /// Bytes the head took, its blank line included.
    pub len: usize,
}

impl Head {
    /// The method (Other when unknown).
    pub fn method(&self) -> Method {
        self.method.unwrap_or(Method::Other)
    }

    /// True when a body follows the head.
    pub fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|n| n > 0)
    }
}

/// Why a head is refused: the status and a line saying why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 431, 501 or 505.
    pub status: u16,
    /// For the response body.
    pub why: &'static str,
}

/// What the front of the input holds.
#[derive(Debug)]
pub enum Parsed {
    /// Not the whole head yet.
    NeedMore,
    /// A whole head.
    Head(Head),
    /// A head the daemon does not take (the connection closes after the answer).
    Refused(Refusal),
}

const fn refusal(status: u16, why: &'static str) -> Parsed {
    Parsed::Refused(Refusal { status, why })
}

/// The header fields the daemon acts on, lowercase.
const KNOWN: [&str; 11] = [
    "host",
    "origin",
    "authorization",
    "content-length",
    "transfer-encoding",
    "content-type",
    "expect",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
];

/// Parses the request head at the front of `bytes` (at most
/// [`super::MAX_HEAD`] of them are looked at by the caller), judging its
/// Host and Origin against `access`.
pub fn parse_head(bytes: &[u8], max: usize, access: &super::HttpAccess) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; super::MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() >= max => {
            return refusal(431, "the request head is too large");
        }
        Ok(httparse::Status::Partial) => return Parsed::NeedMore,
        Err(httparse::Error::TooManyHeaders) => {
            return refusal(431, "too many header fields");
        }
        Err(httparse::Error::Version) => return refusal(505, "only HTTP/1.0 and HTTP/1.1"),
        Err(_) => return refusal(400, "malformed request head"),
    };
    let mut head = Head {
        method: Some(match request.method.unwrap_or("") {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }),
        target: match request
            .path
            .unwrap_or("/")
            .split(['?', '#'])
            .next()
            .unwrap_or("/")
        {
            "/healthz" => Target::Healthz,
            "/metrics" => Target::Metrics,
            "/stats" => Target::Stats,
            "/clients" => Target::Clients,
            _ => Target::Other,
        },
        http11: request.version == Some(1),
        len,
        ..Head::default()
    };
    let mut host = false;
    let mut connection_close = false;
    let mut connection_keep = false;
    let mut connection_upgrade = false;
    let mut upgrade_ws = false;
    for header in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else {
            if header.name.eq_ignore_ascii_case("authorization") {
                head.bad_authorization = true;
            }
            continue; // Only ASCII values matter here.
        };
        let value = value.trim();
        // Matched without lowercasing a copy: no allocation per header.
        let name = KNOWN
            .iter()
            .find(|known| header.name.eq_ignore_ascii_case(known))
            .copied()
            .unwrap_or("");
        match name {
            "host" if host => return refusal(400, "more than one Host header"),
            "host" => {
                host = true;
                head.host_allowed = access.host_allowed(value);
            }
            "origin" => {
                head.origin_allowed = access.origin_allowed(value);
                head.origin = Some(value.to_string());
            }
            "authorization" => match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    head.bearer = Some(token.trim().as_bytes().to_vec());
                }
                _ => head.bad_authorization = true,
            },
            "content-length" => {
                let Ok(n) = value.parse::<u64>() else {
                    return refusal(400, "Content-Length is not a number");
                };
                if head.content_length.is_some_and(|m| m != n) {
                    return refusal(400, "conflicting Content-Length headers");
                }
                head.content_length = Some(n);
            }
            "transfer-encoding" => {
                if !value.eq_ignore_ascii_case("chunked") || head.chunked {
                    return refusal(501, "only Transfer-Encoding: chunked is supported");
                }
                head.chunked = true;
            }
            "content-type" => {
                let essence = value.split(';').next().unwrap_or("").trim();
                head.json = essence.eq_ignore_ascii_case("application/json");
            }
            "expect" => {
                if !value.eq_ignore_ascii_case("100-continue") {
                    return refusal(417, "only Expect: 100-continue is supported");
                }
                head.expect_continue = true;
            }
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    connection_close |= token.eq_ignore_ascii_case("close");
                    connection_keep |= token.eq_ignore_ascii_case("keep-alive");
                    connection_upgrade |= token.eq_ignore_ascii_case("upgrade");
                }
            }
            "upgrade" => {
                upgrade_ws = value
                    .split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("websocket"));
            }
            "sec-websocket-key" => head.ws_key = Some(value.to_string()),
            "sec-websocket-version" => head.ws_version = Some(value.to_string()),
            _ => {}
        }
    }
    if head.chunked && head.content_length.is_some() {
        // Two framings for one body: the classic request-smuggling shape.
        return refusal(400, "both Content-Length and Transfer-Encoding");
    }
    if !host {
        if head.http11 {
            return refusal(400, "HTTP/1.1 requires a Host header");
        }
        head.host_allowed = true;
    }
    head.keep_alive = if head.http11 {
        !connection_close
    } else {
        connection_keep && !connection_close
    };
    head.websocket = upgrade_ws && connection_upgrade;
    Parsed::Head(head)
}

/// What the front of a chunked body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// The size line is not whole yet.
    NeedMore,
    /// A chunk of `size` bytes whose data is not all in yet.
    NeedData {
        /// The chunk's size.
        size: u64,
    },
    /// A whole chunk: data at `start..start + len`; `consumed` with its CRLF.
    Data {
        /// Where the data starts.
        start: usize,
        /// Its length.
        len: usize,
        /// Bytes to consume.
        consumed: usize,
    },
    /// The last chunk and the trailers: `consumed` bytes end the body.
    End {
        /// Bytes to consume.
        consumed: usize,
    },
    /// Not chunked encoding.
    Invalid,
}

/// The longest chunk-size line (with extensions) or trailer section taken.
const MAX_CHUNK_LINE: usize = 1024;

/// Parses the chunk at the front of `bytes` (a chunked body, after the head).
pub fn next_chunk(bytes: &[u8]) -> Chunk {
    match httparse::parse_chunk_size(bytes) {
        Ok(httparse::Status::Complete((start, 0))) => {
            let mut trailers = [httparse::EMPTY_HEADER; 8];
            match httparse::parse_headers(&bytes[start..], &mut trailers) {
                Ok(httparse::Status::Complete((n, _))) => Chunk::End {
                    consumed: start + n,
                },
                Ok(httparse::Status::Partial) if bytes.len() - start < MAX_CHUNK_LINE => {
                    Chunk::NeedMore
                }
                _ => Chunk::Invalid,
            }
        }
        Ok(httparse::Status::Complete((start, size))) => {
            let Ok(len) = usize::try_from(size) else {
                return Chunk::Invalid;
            };
            let Some(end) = start.checked_add(len).and_then(|e| e.checked_add(2)) else {
                return Chunk::Invalid;
            };
            if bytes.len() < end {
                return Chunk::NeedData { size };
            }
            if &bytes[end - 2..end] != b"\r\n" {
                return Chunk::Invalid;
            }
            Chunk::Data {
                start,
                len,
                consumed: end,
            }
        }
        Ok(httparse::Status::Partial) if bytes.len() < MAX_CHUNK_LINE => Chunk::NeedMore,
        _ => Chunk::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        let access = super::super::HttpAccess::default();
        match parse_head(text.as_bytes(), super::super::MAX_HEAD, &access) {
            Parsed::Head(h) => h,
            other => panic!("{other:?}"),
        }
    }

    fn refused(text: &[u8]) -> u16 {
        match parse_head(text, 64, &super::super::HttpAccess::default()) {
            Parsed::Refused(r) => r.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads_keep_what_the_daemon_acts_on() {
        let h = head(
            "POST /rpc?x=1 HTTP/1.1\r\nHost: localhost:7710\r\nAuthorization: Bearer s3cret\r\n\
             Content-Type: Application/JSON; charset=utf-8\r\nContent-Length: 42\r\n\r\n{",
        );
        assert_eq!(h.method(), Method::Post);
        assert_eq!(h.target, Target::Other);
        assert!(h.host_allowed && !h.origin_allowed && h.json);
        assert!(h.http11 && h.keep_alive && h.has_body());
        assert_eq!(h.bearer.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(h.content_length, Some(42));
        let h = head(
            "GET /metrics?x HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://a\r\nContent-Type: text/json\r\n\r\n",
        );
        assert_eq!(h.target, Target::Metrics);
        assert!(!h.host_allowed && !h.json && h.origin.is_some() && !h.origin_allowed);
        assert_eq!(h.len, h.len.min(200));
        let h = head("GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive && !h.http11 && h.host_allowed);
        let h = head(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        assert!(h.websocket);
        assert_eq!(h.ws_key.as_deref(), Some("abc"));
        assert!(
            head("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eA==\r\n\r\n")
                .bad_authorization
        );
    }

    #[test]
    fn bad_heads_get_their_status() {
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 64, &Default::default()),
            Parsed::NeedMore
        ));
        assert_eq!(refused(b"G\x01T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            refused(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            431
        );
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            refused(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n"),
            400
        );
    }

    #[test]
    fn chunks() {
        assert_eq!(next_chunk(b"5"), Chunk::NeedMore);
        assert_eq!(next_chunk(b"5\r\nab"), Chunk::NeedData { size: 5 });
        assert_eq!(
            next_chunk(b"5;ext=1\r\nabcde\r\n0\r\n"),
            Chunk::Data {
                start: 9,
                len: 5,
                consumed: 16
            }
        );
        assert_eq!(next_chunk(b"5\r\nabcdeXY"), Chunk::Invalid);
        assert_eq!(next_chunk(b"0\r\n"), Chunk::NeedMore);
        assert_eq!(next_chunk(b"0\r\n\r\n"), Chunk::End { consumed: 5 });
        assert_eq!(
            next_chunk(b"0\r\nX-T: 1\r\n\r\nGET"),
            Chunk::End { consumed: 13 }
        );
        assert_eq!(next_chunk(b"zz\r\n"), Chunk::Invalid);
        assert_eq!(next_chunk(b"ffffffffffffffffff\r\n"), Chunk::Invalid);
    }
}
