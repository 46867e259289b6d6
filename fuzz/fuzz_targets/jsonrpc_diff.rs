//! Fuzz target `jsonrpc_diff`: the one-pass JSON-RPC parser
//! (`parse_line`, `parse_entry`, src/proto/jsonscan.rs) against the
//! serde_json reference it replaced (`parse_line_serde`,
//! `parse_entry_serde`) and against serde_json itself.
//!
//! Why: the scanner decides well-formed lines without serde_json; if it ever
//! accepted a text serde_json refuses, or located a member elsewhere, a
//! client would get a different answer than the spec (whose error texts are
//! serde_json's) promises.
//!
//! Input: 1 setup byte (the batch limit), then lines separated by LF; each
//! line goes to both parsers as the framer would hand it over.
//!
//! What it checks, per line:
//! - both parsers give the same message (compared through `Debug`: the
//!   variant, every raw id, method, params, result and error, the error code
//!   and its text), and the same entry for every element of a batch;
//! - the verdict matches serde_json's: a -32700 exactly when the line is
//!   not one JSON value in valid UTF-8 (blank lines aside, and a duplicate
//!   member, which serde_json reports as soon as it meets it);
//! - a request's members are where serde_json's own tree has them: the
//!   method's text, and the id and params as the same values.

#![no_main]

use junction_proto::jsonrpc::{self, Entry, Message};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;

const MAX_BATCHES: [usize; 5] = [1, 2, 3, 16, 1024];

fuzz_target!(|data: &[u8]| {
    let Some((&setup, stream)) = data.split_first() else {
        return;
    };
    let max_batch = MAX_BATCHES[usize::from(setup) % MAX_BATCHES.len()];
    for line in stream.split(|&b| b == b'\n') {
        check_line(line, max_batch);
    }
});

fn check_line(line: &[u8], max_batch: usize) {
    let fast = jsonrpc::parse_line(line, max_batch);
    let slow = jsonrpc::parse_line_serde(line, max_batch);
    assert_eq!(
        format!("{fast:?}"),
        format!("{slow:?}"),
        "line {:?}",
        String::from_utf8_lossy(line)
    );
    // from_slice alone does not check the UTF-8 of strings it skips.
    let is_json = std::str::from_utf8(line)
        .is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
    match &fast {
        Message::Blank => return,
        Message::Invalid(error) => assert_eq!(error.code == -32700, !is_json, "{error:?}"),
        // serde_json stops at a duplicate member, before the rest of the
        // line: -32600 even when a syntax error follows (both parsers).
        Message::Single(Entry::Invalid { error, .. }) if error.message.contains("duplicate") => {}
        Message::Single(_) | Message::Batch(_) => assert!(is_json),
    }
    let tree: Option<Value> = serde_json::from_slice(line).ok();
    match fast {
        Message::Single(entry) => check_entry(&entry, tree.as_ref()),
        Message::Batch(entries) => {
            let items = tree.as_ref().and_then(Value::as_array);
            for (at, raw) in entries.iter().enumerate() {
                let fast = jsonrpc::parse_entry(raw);
                let slow = jsonrpc::parse_entry_serde(raw);
                assert_eq!(
                    format!("{fast:?}"),
                    format!("{slow:?}"),
                    "entry {}",
                    raw.get()
                );
                check_entry(&fast, items.and_then(|items| items.get(at)));
            }
        }
        _ => {}
    }
}

/// A request's members against serde_json's tree of the same object (when
/// serde_json could build one: it refuses lone surrogates that the grammar,
/// and so the parsers, allow in skipped strings).
fn check_entry(entry: &Entry<'_>, tree: Option<&Value>) {
    let (Entry::Request { id, method, params }, Some(Value::Object(members))) = (entry, tree)
    else {
        return;
    };
    assert_eq!(
        members.get("method").and_then(Value::as_str),
        Some(&**method)
    );
    let value = |raw: Option<&serde_json::value::RawValue>| {
        raw.map(|raw| serde_json::from_str::<Value>(raw.get()).expect("a raw member is JSON"))
    };
    assert_eq!(value(*id).as_ref(), members.get("id"));
    assert_eq!(value(*params).as_ref(), members.get("params"));
}
