//! Codec, sniffing and ring-buffer benches: the per-request work of the
//! daemon without sockets. `cargo bench --bench codecs`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use junction::buffer::{RingBuffer, RingPool};
use junction::proto::jsonrpc::{self, Entry, Line, Message};
use junction::proto::mcp1::{self, Next};
use junction::proto::sniff;
use junction::router::Reply;
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

fn jsonrpc_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("jsonrpc/decode");
    let echo_64 = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"{}\"],\"id\":1}}",
        "x".repeat(64)
    );
    let batch = format!(
        "[{}]",
        vec![std::str::from_utf8(&PING_JSON[..PING_JSON.len() - 1]).unwrap_or("{}"); 16].join(",")
    );
    for (name, line) in [
        ("ping", &PING_JSON[..PING_JSON.len() - 1]),
        ("echo64", echo_64.as_bytes()),
        ("batch16", batch.as_bytes()),
    ] {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| match jsonrpc::parse_line(black_box(line), 1024) {
                Message::Batch(entries) => entries
                    .iter()
                    .filter(|e| matches!(jsonrpc::parse_entry(e), Entry::Request { .. }))
                    .count(),
                other => usize::from(matches!(other, Message::Single(_))),
            })
        });
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
criterion_main!(benches);
