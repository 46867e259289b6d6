//! Which protocol a connection speaks, told from its first bytes.

use serde::Serialize;

/// The magic that opens every MCP1 frame.
pub const MCP1_MAGIC: &[u8; 4] = b"MCP1";

/// How many leading whitespace bytes a JSON-RPC client may send before its
/// first `{` or `[`; more and the connection is not JSON-RPC.
pub const MAX_LEADING_WHITESPACE: usize = 60;

/// Bytes the sniffer may need to see.
pub const SNIFF_WINDOW: usize = MAX_LEADING_WHITESPACE + 4;

/// The first byte of a TLS handshake record: a ClientHello starts with it
/// (then the record's version, `0x03 0x0N`). No JSON-RPC or MCP1 client
/// sends it first, so on a listener with TLS the first byte alone tells a
/// TLS client from a plaintext one, before the protocols are sniffed in the
/// decrypted bytes (`net::tls`, `reactor/layer.rs`).
pub const TLS_HANDSHAKE: u8 = 0x16;

/// True when `first` (at least one byte) opens a TLS handshake.
pub fn is_tls_handshake(first: &[u8]) -> bool {
    first.first() == Some(&TLS_HANDSHAKE)
}

/// The two protocols a connection can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// JSON-RPC 2.0, one JSON value per line.
    JsonRpc = 0,
    /// MCP1 binary framing.
    Mcp1 = 1,
}

impl Protocol {
    /// The name used in logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::JsonRpc => "jsonrpc",
            Protocol::Mcp1 => "mcp1",
        }
    }
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// Not enough bytes to decide yet.
    NeedMore,
    /// The connection speaks this protocol.
    Detected(Protocol),
    /// An HTTP/1.1 request line (src/http/).
    Http,
    /// The bytes match no protocol.
    Unknown,
}

/// The request methods that make a connection HTTP, with their space: none
/// starts with `M` (MCP1's magic), `{`, `[` or whitespace (JSON-RPC).
pub const HTTP_METHODS: [&[u8]; 7] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"OPTIONS ",
    b"PUT ",
    b"DELETE ",
    b"PATCH ",
];

/// The one line sent to a client that speaks neither protocol, before closing.
pub const UNKNOWN_PROTOCOL_REPLY: &[u8] = b"junctiond: unrecognised protocol. This socket speaks \
JSON-RPC 2.0 (one JSON object per line, e.g. {\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}) \
and MCP1 (binary frames starting with the magic \"MCP1\"); see proto/ in the Junction sources.\n";

/// Decides the protocol from the first bytes a client sent.
///
/// JSON-RPC when the first non-whitespace byte is `{` or `[` (decided on that
/// byte, so `{}` alone is enough); MCP1 when the first 4 bytes are the magic;
/// HTTP when they are a request method and its space ([`HTTP_METHODS`]).
pub fn sniff(first: &[u8]) -> Sniff {
    let start = first
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(first.len());
    if start > MAX_LEADING_WHITESPACE {
        // Decided on the count alone, however the bytes were split into reads.
        return Sniff::Unknown;
    }
    if start == first.len() {
        return Sniff::NeedMore;
    }
    match first[start] {
        b'{' | b'[' => Sniff::Detected(Protocol::JsonRpc),
        _ if start == 0 && first.len() >= 4 && &first[..4] == MCP1_MAGIC => {
            Sniff::Detected(Protocol::Mcp1)
        }
        _ if start == 0 && MCP1_MAGIC.starts_with(first) => Sniff::NeedMore,
        b'A'..=b'Z' if start == 0 => sniff_http(first),
        _ => Sniff::Unknown,
    }
}

/// HTTP when `first` opens with a request method and a space.
fn sniff_http(first: &[u8]) -> Sniff {
    let mut partial = false;
    for method in HTTP_METHODS {
        if first.starts_with(method) {
            return Sniff::Http;
        }
        partial |= method.starts_with(first);
    }
    if partial {
        Sniff::NeedMore
    } else {
        Sniff::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_decided_on_its_first_brace() {
        assert_eq!(sniff(b"{"), Sniff::Detected(Protocol::JsonRpc));
        assert_eq!(sniff(b"[{}]"), Sniff::Detected(Protocol::JsonRpc));
        assert_eq!(sniff(b" \r\n\t{"), Sniff::Detected(Protocol::JsonRpc));
        assert_eq!(sniff(b"\n\n"), Sniff::NeedMore);
        assert_eq!(sniff(&[b' '; MAX_LEADING_WHITESPACE + 1]), Sniff::Unknown);
        let mut late = vec![b' '; MAX_LEADING_WHITESPACE + 1];
        late.push(b'{');
        assert_eq!(
            sniff(&late),
            Sniff::Unknown,
            "same answer in one read as in two"
        );
    }

    #[test]
    fn mcp1_needs_all_four_magic_bytes() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
        assert_eq!(sniff(b"M"), Sniff::NeedMore);
        assert_eq!(sniff(b"MCP"), Sniff::NeedMore);
        assert_eq!(sniff(b"MCP1"), Sniff::Detected(Protocol::Mcp1));
        assert_eq!(sniff(b"MCP1\x01\x00"), Sniff::Detected(Protocol::Mcp1));
        assert_eq!(sniff(b"MCP2"), Sniff::Unknown);
        assert_eq!(sniff(b" MCP1"), Sniff::Unknown);
    }

    #[test]
    fn a_tls_client_hello_is_neither_protocol() {
        let hello = b"\x16\x03\x01\x02\x00\x01";
        assert!(is_tls_handshake(hello));
        assert_eq!(sniff(hello), Sniff::Unknown, "only the TLS layer takes it");
        assert!(!is_tls_handshake(b"{"));
        assert!(!is_tls_handshake(b"MCP1"));
        assert!(!is_tls_handshake(b""));
    }

    #[test]
    fn http_needs_a_method_and_its_space() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::Http);
        assert_eq!(sniff(b"POST "), Sniff::Http);
        assert_eq!(sniff(b"OPTIONS * HTTP/1.1"), Sniff::Http);
        assert_eq!(sniff(b"G"), Sniff::NeedMore);
        assert_eq!(sniff(b"OPTION"), Sniff::NeedMore);
        assert_eq!(sniff(b"GETX"), Sniff::Unknown);
        assert_eq!(sniff(b"get / HTTP/1.1"), Sniff::Unknown);
        for method in HTTP_METHODS {
            assert!(!method.starts_with(b"M") && method[0].is_ascii_uppercase());
        }
    }

    #[test]
    fn anything_else_is_unknown() {
        assert_eq!(sniff(b"GET/ HTTP/1.1"), Sniff::Unknown);
        assert_eq!(sniff(b"PING"), Sniff::Unknown);
        assert_eq!(sniff(b"MOVE / HTTP/1.1"), Sniff::Unknown);
        assert_eq!(sniff(b" GET / HTTP/1.1"), Sniff::Unknown);
        assert_eq!(sniff(b"\x00\x01"), Sniff::Unknown);
        assert_eq!(sniff(b"  x"), Sniff::Unknown);
    }
}
