//! The WebSocket frame codec (RFC 6455 section 5), no I/O: client frames
//! parsed and unmasked, server frames written unmasked; the opening
//! handshake's accept key (section 4.2.2). Checked against the RFC's
//! section 5.7 examples in the tests below.

use base64::Engine;
use sha1::Digest;

/// Continuation frame.
pub const CONTINUATION: u8 = 0x0;
/// Text frame (JSON-RPC travels in these).
pub const TEXT: u8 = 0x1;
/// Binary frame (refused: 1003).
pub const BINARY: u8 = 0x2;
/// Close.
pub const CLOSE: u8 = 0x8;
/// Ping.
pub const PING: u8 = 0x9;
/// Pong.
pub const PONG: u8 = 0xA;

/// Close codes (section 7.4.1).
pub mod code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away: the daemon is shutting down (sent by the drain).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data the endpoint does not accept (binary).
    pub const UNSUPPORTED: u16 = 1003;
    /// Text that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (authentication, limits other than size).
    pub const POLICY: u16 = 1008;
    /// A message over max-frame.
    pub const TOO_BIG: u16 = 1009;
}

/// The longest frame header: 2 bytes, 8 of length, 4 of mask.
pub const MAX_HEADER: usize = 14;

/// A client frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Last fragment of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: u8,
    /// The masking key (clients must mask).
    pub mask: [u8; 4],
    /// Payload length.
    pub len: u64,
    /// Header length in bytes.
    pub header_len: usize,
}

impl FrameHead {
    /// True for close, ping and pong.
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// What the front of the input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not the whole header yet.
    NeedMore,
    /// A header (its payload may still be arriving).
    Head(FrameHead),
    /// A frame this endpoint must fail the connection for: close code, why.
    Fail(u16, &'static str),
}

/// Parses a client frame's header from the front of `bytes` (up to
/// [`MAX_HEADER`] bytes are enough).
pub fn parse_head(bytes: &[u8]) -> Parsed {
    let [b0, b1, ..] = *bytes else {
        return Parsed::NeedMore;
    };
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Parsed::Fail(
            code::PROTOCOL,
            "reserved bits set (no extension was agreed)",
        );
    }
    let opcode = b0 & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Parsed::Fail(code::PROTOCOL, "unknown opcode");
    }
    if b1 & 0x80 == 0 {
        return Parsed::Fail(code::PROTOCOL, "client frames must be masked");
    }
    let (len, at) = match b1 & 0x7F {
        126 if bytes.len() >= 4 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        127 if bytes.len() >= 10 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&bytes[2..10]);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Parsed::Fail(code::PROTOCOL, "payload length's top bit set");
            }
            (len, 10)
        }
        126 | 127 => return Parsed::NeedMore,
        n => (u64::from(n), 2),
    };
    if opcode & 0x8 != 0 && (!fin || len > 125) {
        return Parsed::Fail(
            code::PROTOCOL,
            "control frames are single and at most 125 bytes",
        );
    }
    if bytes.len() < at + 4 {
        return Parsed::NeedMore;
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&bytes[at..at + 4]);
    Parsed::Head(FrameHead {
        fin,
        opcode,
        mask,
        len,
        header_len: at + 4,
    })
}

/// Appends `payload` unmasked with `mask` to `out`.
pub fn unmask_into(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// Appends a server frame header (FIN set, unmasked) for `len` bytes.
pub fn write_head(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Appends a close frame with `code` and a reason (cut to fit 125 bytes).
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    write_head(out, CLOSE, 2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// Calls `each` with every JSON-RPC message in `lines`: JSON values the
/// daemon wrote one after the other, each ended by a newline. A newline
/// inside a value (whitespace in params a provider or an MCP1 peer sent
/// pretty-printed) does not end it: only one outside strings at depth 0.
pub fn each_message(lines: &[u8], mut each: impl FnMut(&[u8])) {
    let (mut depth, mut in_string, mut escaped, mut start) = (0usize, false, false, 0);
    for (i, &b) in lines.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'\n' if depth == 0 => {
                if lines[start..i].iter().any(|b| !b.is_ascii_whitespace()) {
                    each(&lines[start..i]);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if lines[start..].iter().any(|b| !b.is_ascii_whitespace()) {
        each(&lines[start..]);
    }
}

/// The Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
pub fn accept_key(key: &str) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = sha1::Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// True when a Sec-WebSocket-Key is 16 bytes in base64, as section 4.1 asks.
pub fn key_is_valid(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|k| k.len() == 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> FrameHead {
        match parse_head(bytes) {
            Parsed::Head(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accept_key_of_the_rfc() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(key_is_valid("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!key_is_valid("c2hvcnQ="));
    }

    #[test]
    fn rfc_5_7_masked_text_and_pong() {
        // A single-frame masked text message "Hello" and a masked pong.
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = head(&frame);
        assert_eq!((h.fin, h.opcode, h.len, h.header_len), (true, TEXT, 5, 6));
        let mut text = Vec::new();
        unmask_into(&mut text, &frame[h.header_len..], h.mask);
        assert_eq!(text, b"Hello");
        let mut pong = frame;
        pong[0] = 0x8a;
        let h = head(&pong);
        assert!(h.is_control() && h.opcode == PONG);
        for cut in 0..6 {
            assert_eq!(parse_head(&frame[..cut]), Parsed::NeedMore, "{cut}");
        }
    }

    #[test]
    fn rfc_5_7_server_frames() {
        // Unmasked "Hello", the ping, and the 256-byte and 64-KiB binary headers.
        let mut out = Vec::new();
        write_head(&mut out, TEXT, 5);
        out.extend_from_slice(b"Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let mut out = Vec::new();
        write_head(&mut out, PING, 5);
        assert_eq!(out, [0x89, 0x05]);
        let mut out = Vec::new();
        write_head(&mut out, BINARY, 256);
        assert_eq!(out, [0x82, 0x7E, 0x01, 0x00]);
        let mut out = Vec::new();
        write_head(&mut out, BINARY, 65536);
        assert_eq!(out, [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn rfc_5_7_fragments_and_lengths_from_clients() {
        // The fragmented "Hel" + "lo", masked as a client must.
        let first = head(&[0x01, 0x83, 1, 2, 3, 4]);
        assert_eq!((first.fin, first.opcode, first.len), (false, TEXT, 3));
        let last = head(&[0x80, 0x82, 1, 2, 3, 4]);
        assert_eq!((last.fin, last.opcode, last.len), (true, CONTINUATION, 2));
        let h = head(&[0x82, 0xFE, 0x01, 0x00, 9, 9, 9, 9]);
        assert_eq!((h.len, h.header_len), (256, 8));
        let h = head(&[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9]);
        assert_eq!((h.len, h.header_len), (65536, 14));
    }

    #[test]
    fn frames_that_fail_the_connection() {
        let fail = |bytes: &[u8]| matches!(parse_head(bytes), Parsed::Fail(..));
        assert!(fail(&[0x81, 0x05]), "unmasked client frame");
        assert!(fail(&[0xC1, 0x85]), "RSV1 without an extension");
        assert!(fail(&[0x83, 0x85]), "opcode 3");
        assert!(fail(&[0x09, 0x80]), "fragmented ping");
        assert!(fail(&[0x89, 0xFE, 0, 126]), "ping of 126 bytes");
        assert!(
            fail(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            "length top bit"
        );
    }

    #[test]
    fn messages_split_at_newlines_outside_values() {
        let mut seen = Vec::new();
        each_message(b"{\"a\":\"x\\\"\\n}\"}\n[1,\n2]\n\n{\"b\":{\n}}\n", |m| {
            seen.push(String::from_utf8_lossy(m).into_owned())
        });
        assert_eq!(seen, ["{\"a\":\"x\\\"\\n}\"}", "[1,\n2]", "{\"b\":{\n}}"]);
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        write_close(&mut out, code::NORMAL, "bye");
        assert_eq!(out, [0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
        let mut out = Vec::new();
        write_close(&mut out, code::POLICY, &"é".repeat(100));
        assert!(out.len() <= 2 + 125 && out[1] as usize == out.len() - 2);
    }
}
