//! Response heads: status line, the daemon's fixed headers, Content-Length.

use std::io::Write;

/// The reason phrase of the statuses the daemon sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// JSON bodies.
pub const JSON: &str = "application/json";
/// Plain text bodies (errors, health).
pub const TEXT: &str = "text/plain; charset=utf-8";
/// The Prometheus text exposition format.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One response to write.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// The status code.
    pub status: u16,
    /// The body's media type (none for an empty body).
    pub content_type: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
    /// HEAD: the headers of the body, not the body.
    pub head_only: bool,
    /// The connection closes after it.
    pub close: bool,
    /// More header fields.
    pub extra: &'a [(&'a str, &'a str)],
}

/// The header fields of the 101 answer to a WebSocket upgrade whose
/// `Sec-WebSocket-Accept` is `accept` (see [`Response::switching_protocols`]).
pub fn websocket_upgrade(accept: &str) -> [(&'static str, &str); 3] {
    [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept),
    ]
}

impl<'a> Response<'a> {
    /// 101 Switching Protocols with these header fields (for a WebSocket:
    /// [`websocket_upgrade`]); the daemon's answer and the harness's
    /// expectation of it are written by this one function.
    pub fn switching_protocols(extra: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            status: 101,
            content_type: None,
            body: &[],
            head_only: false,
            close: false,
            extra,
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: &'a str) -> Self {
        Self {
            status,
            content_type: Some(TEXT),
            body: body.as_bytes(),
            head_only: false,
            close: false,
            extra: &[],
        }
    }

    /// Appends the response to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        self.write_head(buf, self.body.len());
        if !self.head_only && self.status != 204 {
            buf.extend_from_slice(self.body);
        }
    }

    /// Appends the status line and headers for a body of `len` bytes (the
    /// caller appends the body).
    pub fn write_head(&self, buf: &mut Vec<u8>, len: usize) {
        let _ = write!(
            buf,
            "HTTP/1.1 {} {}\r\nServer: junctiond\r\n",
            self.status,
            reason(self.status)
        );
        if self.status >= 200 && self.status != 204 {
            if let Some(kind) = self.content_type {
                let _ = write!(buf, "Content-Type: {kind}\r\n");
            }
            let _ = write!(buf, "Content-Length: {len}\r\n");
            buf.extend_from_slice(b"Cache-Control: no-store\r\n");
        }
        for (name, value) in self.extra {
            let _ = write!(buf, "{name}: {value}\r\n");
        }
        if self.close {
            buf.extend_from_slice(b"Connection: close\r\n");
        }
        buf.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_bodies() {
        let mut buf = Vec::new();
        Response {
            close: true,
            extra: &[("Allow", "POST")],
            ..Response::text(405, "no\n")
        }
        .write(&mut buf);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nServer: junctiond\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\nCache-Control: no-store\r\nAllow: POST\r\nConnection: close\r\n\r\nno\n"
        );
        let mut buf = Vec::new();
        Response {
            head_only: true,
            ..Response::text(200, "ok\n")
        }
        .write(&mut buf);
        assert!(buf.ends_with(b"Content-Length: 3\r\nCache-Control: no-store\r\n\r\n"));
        let mut buf = Vec::new();
        Response::text(204, "").write(&mut buf);
        assert_eq!(buf, b"HTTP/1.1 204 No Content\r\nServer: junctiond\r\n\r\n");
    }
}
