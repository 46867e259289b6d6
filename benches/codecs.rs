//! Codec, sniffing and ring-buffer benches: the per-request work of the
//! daemon without sockets. `cargo bench --bench codecs`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use junction::buffer::{RingBuffer, RingPool};
use junction::proto::jsonrpc::{self, Entry, Line, Message};
use junction::proto::mcp1::{self, Next};
use junction::router::Reply;
use junction_proto::sniff;
use serde_json::value::RawValue;

const PING_JSON: &[u8] = b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n";

fn mcp1_call(method: &str, body: &[u8], raw: bool) -> Vec<u8> {
    let mut out = Vec::new();
    mcp1::write_call(&mut out, Some(1), method, body, raw);
    out
}

fn fill(ring: &mut RingBuffer, bytes: &[u8]) {
    let (a, b) = ring.space();
    let first = bytes.len().min(a.len());
    a[..first].copy_from_slice(&bytes[..first]);
    b[..bytes.len() - first].copy_from_slice(&bytes[first..]);
    ring.fill(bytes.len());
}

fn echo_line(size: usize) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"{}\"],\"id\":1}}",
        "x".repeat(size)
    )
}

/// A parser under comparison: a line in, the number of requests found.
type Parser = fn(&[u8]) -> usize;

fn count_requests(message: Message<'_>, entry: fn(&RawValue) -> Entry<'_>) -> usize {
    match message {
        Message::Batch(entries) => entries
            .iter()
            .filter(|e| matches!(entry(e), Entry::Request { .. }))
            .count(),
        Message::Single(Entry::Request { method, params, .. }) => {
            black_box((method.len(), params.map(RawValue::get)));
            1
        }
        _ => 0,
    }
}

/// The daemon's parser: one pass (src/proto/jsonscan.rs).
fn scan(line: &[u8]) -> usize {
    count_requests(jsonrpc::parse_line(line, 1024), jsonrpc::parse_entry)
}

/// The reference: serde_json with a visitor (the parser before issue 16).
fn serde(line: &[u8]) -> usize {
    count_requests(
        jsonrpc::parse_line_serde(line, 1024),
        jsonrpc::parse_entry_serde,
    )
}

/// sonic-rs (SIMD) deserializing the same borrowed envelope: a lower bound
/// of what it would cost, as it stops before the checks the other two make.
#[cfg(feature = "bench-sonic")]
fn sonic(line: &[u8]) -> usize {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        jsonrpc: Option<sonic_rs::LazyValue<'a>>,
        #[serde(borrow)]
        method: Option<sonic_rs::LazyValue<'a>>,
        #[serde(borrow)]
        params: Option<sonic_rs::LazyValue<'a>>,
        #[serde(borrow)]
        id: Option<sonic_rs::LazyValue<'a>>,
    }
    if line.first() == Some(&b'[') {
        return sonic_rs::from_slice::<Vec<Envelope<'_>>>(line).map_or(0, |v| v.len());
    }
    match sonic_rs::from_slice::<Envelope<'_>>(line) {
        Ok(e) => {
            black_box((e.jsonrpc.is_some(), e.id.is_some()));
            black_box(e.method.map(|m| m.as_raw_str().len()));
            black_box(e.params.map(|p| p.as_raw_str().len()));
            1
        }
        Err(_) => 0,
    }
}

/// The parsers compared: sonic-rs only with `--features bench-sonic`.
fn parsers() -> Vec<(&'static str, Parser)> {
    #[allow(unused_mut)]
    let mut all: Vec<(&str, Parser)> = vec![("scan", scan), ("serde", serde)];
    #[cfg(feature = "bench-sonic")]
    all.push(("sonic", sonic));
    all
}

fn jsonrpc_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("jsonrpc/decode");
    let echo_64 = echo_line(64);
    let echo_1k = echo_line(1024);
    let batch = format!(
        "[{}]",
        vec![std::str::from_utf8(&PING_JSON[..PING_JSON.len() - 1]).unwrap_or("{}"); 16].join(",")
    );
    let parsers = parsers();
    for (name, line) in [
        ("ping", &PING_JSON[..PING_JSON.len() - 1]),
        ("echo64", echo_64.as_bytes()),
        ("echo1k", echo_1k.as_bytes()),
        ("batch16", batch.as_bytes()),
    ] {
        group.throughput(Throughput::Bytes(line.len() as u64));
        for &(parser, parse) in &parsers {
            assert!(parse(line) > 0, "{parser} parses {name}");
            group.bench_with_input(BenchmarkId::new(parser, name), line, |b, line| {
                b.iter(|| parse(black_box(line)))
            });
        }
    }
    group.finish();
}

fn jsonrpc_encode(c: &mut Criterion) {
    let id: &RawValue = serde_json::from_str("1").expect("id");
    let params: &RawValue = serde_json::from_str("[\"hello\",42]").expect("params");
    let mut out = Vec::with_capacity(4096);
    c.bench_function("jsonrpc/encode/response", |b| {
        b.iter(|| {
            out.clear();
            jsonrpc::write_response(&mut out, Some(black_box(id)), |r: &mut Reply<'_>| {
                r.json_text(params);
                Ok(())
            })
        })
    });
}

fn mcp1_codec(c: &mut Criterion) {
    let ping = mcp1_call("rpc.ping", b"", false);
    let raw_echo = mcp1_call("rpc.echo", &[b'x'; 64], true);
    let json_echo = mcp1_call(
        "rpc.echo",
        format!("[\"{}\"]", "x".repeat(64)).as_bytes(),
        false,
    );
    let mut group = c.benchmark_group("mcp1/decode");
    for (name, frame) in [
        ("ping", &ping),
        ("echo64_raw", &raw_echo),
        ("echo64_json", &json_echo),
    ] {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), frame, |b, frame| {
            b.iter(
                || match mcp1::check(black_box(&frame[..16]), frame.len(), 1 << 20) {
                    Next::Frame(header) => mcp1::parse_request(&header, &frame[16..])
                        .map(|r| r.method.len())
                        .unwrap_or(0),
                    _ => 0,
                },
            )
        });
    }
    group.finish();
    let mut out = Vec::with_capacity(4096);
    c.bench_function("mcp1/encode/response", |b| {
        b.iter(|| {
            out.clear();
            mcp1::write_response(&mut out, black_box(7), |r| {
                r.bytes(&[b'x'; 64]);
                Ok(())
            })
        })
    });
}

fn sniffing(c: &mut Criterion) {
    c.bench_function("sniff/jsonrpc", |b| b.iter(|| sniff(black_box(b"  {\"js"))));
    c.bench_function("sniff/mcp1", |b| {
        b.iter(|| sniff(black_box(b"MCP1\x01\x01")))
    });
}

fn ring_path(c: &mut Criterion) {
    // Fill, find the frame, take it, consume: what a read cycle does, with
    // a frame that wraps the ring's end every few iterations.
    let mut pool = RingPool::new(4);
    let mut ring = RingBuffer::new();
    ring.reserve(16 * 1024, &mut pool);
    let mut scratch = Vec::with_capacity(4096);
    let frames = PING_JSON.repeat(16);
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Bytes(frames.len() as u64));
    group.bench_function("fill_frame_consume_16_lines", |b| {
        b.iter(|| {
            fill(&mut ring, &frames);
            let mut lines = 0;
            while let Line::Complete { len, consumed } = jsonrpc::next_line(&ring, 0, 1 << 20) {
                black_box(ring.frame(0, len, &mut scratch));
                ring.consume(consumed);
                lines += 1;
            }
            lines
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    jsonrpc_decode,
    jsonrpc_encode,
    mcp1_codec,
    sniffing,
    ring_path
);

/// `CODECS_LOOP=parser:line:n` parses one of the decode bench's lines `n`
/// times and exits, for `perf stat -e instructions:u,cycles:u`: counts that
/// a busy machine does not blur as it blurs time (see docs/benchmarks.md).
fn count_loop(spec: &str) {
    let mut parts = spec.split(':');
    let (parser, line, n) = (parts.next(), parts.next(), parts.next());
    let n: u64 = n.and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let parsers = parsers();
    let Some(&(_, parse)) = parsers.iter().find(|(name, _)| Some(*name) == parser) else {
        eprintln!("CODECS_LOOP: unknown parser {parser:?}");
        return;
    };
    let text = match line {
        Some("ping") => String::from_utf8_lossy(&PING_JSON[..PING_JSON.len() - 1]).into_owned(),
        Some("echo64") => echo_line(64),
        Some("echo1k") => echo_line(1024),
        _ => {
            eprintln!("CODECS_LOOP: unknown line {line:?}");
            return;
        }
    };
    let mut found = 0;
    for _ in 0..n {
        found += parse(black_box(text.as_bytes()));
    }
    assert_eq!(found as u64, n);
}

fn main() {
    if let Ok(spec) = std::env::var("CODECS_LOOP") {
        return count_loop(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
