//! PROXY protocol v2 (HAProxy's `send-proxy-v2`): the header a trusted load
//! balancer sends before anything else, carrying the real client's address.
//!
//! Only connections from the addresses listed in `proxy-protocol-from` are
//! read for a header; from any other address a header is not looked for, so
//! its bytes reach the sniffer, which refuses them as no known protocol (a
//! client cannot claim someone else's address). The header is parsed by the
//! `ppp` crate; this module decides what its result means for a connection.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ppp::v2::{Addresses, Command, Header, ParseError};

/// The twelve bytes every v2 header starts with.
pub const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest header taken (16 fixed bytes, the addresses and some TLVs);
/// a longer one is refused, so a trusted peer cannot make the daemon hold
/// more than this before the connection is sniffed.
pub const MAX_HEADER: usize = 536;

/// An address or a CIDR block (`10.0.0.0/8`, `::1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    net: IpAddr,
    prefix: u8,
}

impl Block {
    /// True when `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Block {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or a CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Block { net, prefix })
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.net.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.net)
        } else {
            write!(f, "{}/{}", self.net, self.prefix)
        }
    }
}

/// The addresses a PROXY header is accepted from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<Block>);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR blocks.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// True when no address is trusted (the feature is off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when a connection from `addr` is read for a PROXY header.
    pub fn trusts(&self, addr: Option<SocketAddr>) -> bool {
        addr.is_some_and(|a| self.0.iter().any(|b| b.contains(a.ip())))
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, block) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{block}")?;
        }
        Ok(())
    }
}

/// What the first bytes of a trusted connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Part of a header so far.
    NeedMore,
    /// No header: the proxy's own connection (a health check), served as is.
    Absent,
    /// A header of `len` bytes; `source` is the client's address (None for
    /// LOCAL, or an address family without one).
    Header {
        /// Bytes the header takes.
        len: usize,
        /// The real client.
        source: Option<SocketAddr>,
    },
    /// A malformed header: the connection is refused.
    Invalid(String),
}

/// Reads a v2 header at the start of `input`.
pub fn parse(input: &[u8]) -> Parsed {
    let seen = input.len().min(SIGNATURE.len());
    if input[..seen] != SIGNATURE[..seen] {
        return Parsed::Absent;
    }
    match Header::try_from(input) {
        Ok(header) => {
            let source = match (header.command, header.addresses) {
                (Command::Local, _) => None,
                (_, Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            Parsed::Header {
                len: header.len(),
                source,
            }
        }
        Err(ParseError::Incomplete(_)) => Parsed::NeedMore,
        Err(ParseError::Partial(have, want)) if 16 + want <= MAX_HEADER => {
            let _ = have;
            Parsed::NeedMore
        }
        Err(ParseError::Partial(_, want)) => Parsed::Invalid(format!(
            "a PROXY header of {} bytes is longer than the {MAX_HEADER} taken",
            16 + want
        )),
        Err(e) => Parsed::Invalid(format!("a malformed PROXY header: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(src: &str, dst: &str) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn a_header_gives_the_source_address_in_any_split() {
        let mut bytes = header("203.0.113.7:4242", "127.0.0.1:7710");
        let len = bytes.len();
        bytes.extend_from_slice(b"{\"jsonrpc\"");
        for cut in 0..len {
            assert_eq!(parse(&bytes[..cut]), Parsed::NeedMore, "cut at {cut}");
        }
        assert_eq!(
            parse(&bytes),
            Parsed::Header {
                len,
                source: Some("203.0.113.7:4242".parse().unwrap())
            }
        );
    }

    #[test]
    fn other_bytes_are_no_header_and_garbage_is_refused() {
        assert_eq!(parse(b"{\"jsonrpc\""), Parsed::Absent);
        assert_eq!(parse(b"\x16\x03\x01"), Parsed::Absent);
        assert_eq!(parse(b"\r\n\r\nX"), Parsed::Absent);
        let mut bad = SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x13, 0x11, 0, 12]);
        assert!(matches!(parse(&bad), Parsed::Invalid(_)));
        let mut long = SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn blocks_match_addresses() {
        let list = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8,fd00::/8").unwrap();
        assert!(list.trusts("127.0.0.1:1".parse().ok()));
        assert!(list.trusts("[::ffff:10.1.2.3]:1".parse().ok()));
        assert!(list.trusts("[fd12::1]:1".parse().ok()));
        assert!(!list.trusts("127.0.0.2:1".parse().ok()));
        assert!(!list.trusts(None));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("nowhere").is_err());
        assert_eq!(list.to_string(), "127.0.0.1,10.0.0.0/8,fd00::/8");
    }
}
