//! HTTP/1.1 on the daemon's own sockets: a third sniffed protocol beside
//! line JSON-RPC and MCP1 (docs/design.md, "HTTP on the same port").
//!
//! Everything here is I/O-free, like the other codecs: [`request`] parses a
//! request head (with httparse) and chunked bodies, [`response`] writes
//! status lines and headers, [`metrics`] renders `rpc.stats` in the
//! Prometheus text format, [`ws`] is the RFC 6455 frame codec. The
//! connection's side (what a request does, keep-alive, pipelining, the
//! WebSocket upgrade) lives in `session.rs`, a child of `conn.rs` so that it
//! works on the connection's own buffers.
//!
//! One HTTP request is answered at a time, in order: a pipelined request
//! waits in the ring until the one before it has its response. JSON-RPC
//! carried by POST or by WebSocket messages goes through the same dispatcher
//! as a line connection's, so the policy, the limits and the counters are
//! the same; only the framing differs.

internal!(metrics, request, response, ws);

use std::net::{IpAddr, SocketAddr};

/// The longest request head (request line and headers) accepted; longer
/// gets 431. It fits the smallest ring, so a head never needs more memory
/// than a connection that has not authenticated may hold.
pub const MAX_HEAD: usize = 8 * 1024;

/// The most header fields a request may carry (more: 431).
pub const MAX_HEADERS: usize = 48;

/// Bus methods that need a connection the daemon can write to unasked
/// (forwarded calls, events): refused over plain HTTP POST.
pub const NEEDS_PUSH: [&str; 2] = ["bus.register", "bus.subscribe"];

/// Host names every HTTP request may name: a page can only make a browser
/// send these when it is served from the machine itself.
const LOOPBACK_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "[::1]", "::1"];

/// Which browsers and which Host names the HTTP side serves
/// (`http-origins`, `http-hosts`; docs/remote.md, "Browsers").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAccess {
    /// Origins (`scheme://host[:port]`) whose pages may use the daemon;
    /// `*`: any. A request that carries another Origin gets 403, before
    /// anything runs. Requests without an Origin (not from a browser) pass.
    pub origins: Vec<String>,
    /// Host header values served besides the loopback names: a name (any
    /// port) or `name:port`; `*`: any. Guards against DNS rebinding.
    pub hosts: Vec<String>,
}

impl HttpAccess {
    /// The lists from the options, the TCP listen address added to the
    /// hosts (a client that connects to it by address names it).
    pub fn resolve(
        origins: Option<Vec<String>>,
        hosts: Option<Vec<String>>,
        tcp: Option<SocketAddr>,
    ) -> Self {
        let clean = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let mut hosts = clean(hosts.unwrap_or_default());
        if let Some(addr) = tcp.filter(|a| !a.ip().is_unspecified()) {
            let listen = match addr.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            };
            if !hosts.contains(&listen) {
                hosts.push(listen); // Once: a rendered configuration resolves the same.
            }
        }
        Self {
            origins: clean(origins.unwrap_or_default()),
            hosts,
        }
    }

    /// True when a request naming `host` (the Host header) is served.
    pub fn host_allowed(&self, host: &str) -> bool {
        // Compared without a lowercased copy: checked on every request.
        let host = host.trim();
        let name = strip_port(host);
        let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        LOOPBACK_HOSTS.iter().any(|l| is(l, name))
            || name.len() > 10
                && name.as_bytes()[name.len() - 10..].eq_ignore_ascii_case(b".localhost")
            || self
                .hosts
                .iter()
                .any(|h| h == "*" || is(h, host) || is(h, name))
    }

    /// True when a page from `origin` may use the daemon.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        self.origins.iter().any(|o| o == "*" || *o == origin)
    }
}

/// `name` of `name:port`, `[v6]` of `[v6]:port`; a bare v6 address as it is.
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        return &host[..end + 2];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listen_address_are_served_by_default() {
        let access = HttpAccess::resolve(None, None, Some("192.0.2.7:7710".parse().unwrap()));
        for host in [
            "localhost",
            "localhost:7710",
            "127.0.0.1:7710",
            "[::1]:7710",
            "app.localhost:1",
            "192.0.2.7:7710",
            "é.LOCALHOST",
            "LocalHost:1",
        ] {
            assert!(access.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:7710",
            "192.0.2.8",
            "",
            "ééééééé.localhos",
        ] {
            assert!(!access.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn listed_hosts_and_origins() {
        let access = HttpAccess::resolve(
            Some(vec!["http://localhost:8000/".into()]),
            Some(vec!["junction.lan".into(), "box:9000".into()]),
            None,
        );
        assert!(access.host_allowed("Junction.LAN:7710"));
        assert!(access.host_allowed("box:9000"));
        assert!(!access.host_allowed("box:9001"));
        assert!(access.origin_allowed("http://localhost:8000"));
        assert!(!access.origin_allowed("http://localhost:8001"));
        assert!(!access.origin_allowed("null"));
        let any = HttpAccess::resolve(Some(vec!["*".into()]), Some(vec!["*".into()]), None);
        assert!(any.origin_allowed("https://anything") && any.host_allowed("anything"));
    }

    /// Whatever the bytes, the parsers answer and never panic: heads (also
    /// behind a valid request line), chunks, WebSocket headers, and the
    /// splitting of staged output into messages.
    #[test]
    fn parsers_never_panic() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        });
        let bytes = proptest::collection::vec(any::<u8>(), 0..600);
        runner
            .run(&(bytes, 0usize..4), |(bytes, prefix)| {
                let lead: &[u8] = [
                    &b""[..],
                    b"GET / HTTP/1.1\r\n",
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ",
                    b"5;x\r\n",
                ][prefix];
                let mut input = lead.to_vec();
                input.extend_from_slice(&bytes);
                let access = HttpAccess::default();
                let _ = request::parse_head(&input, MAX_HEAD, &access);
                let _ = request::parse_head(&input, 64, &access);
                let _ = request::next_chunk(&input);
                let _ = ws::parse_head(&input);
                let mut total = 0;
                ws::each_message(&input, |m| total += m.len());
                prop_assert!(total <= input.len());
                Ok(())
            })
            .expect("no panic, and messages are parts of the input");
    }
}
