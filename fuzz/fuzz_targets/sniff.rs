//! Fuzz target `sniff`: the protocol sniffer (`junction_proto::sniff`) on
//! arbitrary leading bytes, split at every possible point.
//!
//! Why: the sniffer is the first code every connection runs on bytes an
//! untrusted peer chose, and its answer must not depend on how those bytes
//! were split into reads (the connection calls it again on a longer prefix
//! after each read, and acts on the first answer that is not `NeedMore`).
//!
//! What it checks, for the input and every prefix of its first
//! `SNIFF_WINDOW` bytes:
//! - no panic;
//! - the answer matches a model written from proto/jsonrpc.md section 2
//!   (up to 60 whitespace bytes, then `{` or `[`; or `MCP1` at byte 0; a
//!   proper prefix of `MCP1` waits; anything else is unknown);
//! - a decision, once made, never changes when more bytes arrive, so every
//!   split of the input into reads reaches the same protocol;
//! - a full window is always decided (a connection cannot sniff forever
//!   however much it sends).

#![no_main]

use junction_proto::{MAX_LEADING_WHITESPACE, Protocol, SNIFF_WINDOW, Sniff, sniff};
use junction_fuzz::spec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The connection only ever shows the sniffer its first SNIFF_WINDOW bytes;
    // longer inputs are still fed whole once, for the no-panic check.
    let whole = sniff(data);
    assert_eq!(
        whole,
        spec::sniff(data),
        "sniff({data:?}) disagrees with the spec"
    );

    let window = &data[..data.len().min(SNIFF_WINDOW)];
    let mut decided: Option<Sniff> = None;
    for end in 0..=window.len() {
        let prefix = &window[..end];
        let answer = sniff(prefix);
        assert_eq!(
            answer,
            spec::sniff(prefix),
            "sniff({prefix:?}) disagrees with the spec"
        );
        if end > MAX_LEADING_WHITESPACE {
            assert_ne!(
                answer,
                Sniff::NeedMore,
                "{end} bytes and still undecided: {prefix:?}"
            );
        }
        match (decided, answer) {
            (None, Sniff::NeedMore) => {}
            (None, first) => decided = Some(first),
            (Some(earlier), now) => assert_eq!(
                earlier, now,
                "the answer changed from {earlier:?} to {now:?} at {end} bytes of {window:?}"
            ),
        }
    }
    if let Some(Sniff::Detected(Protocol::Mcp1)) = decided {
        assert!(data.starts_with(b"MCP1"));
    }
    if let Some(decision) = decided {
        assert_eq!(decision, whole, "the window and the whole input disagree");
    }
});
