//! Random and mutated input, seeded so a failure replays: the decoders never
//! panic or claim bytes that are not there, and a live daemon fed the same
//! junk over both transports keeps serving a healthy client.

mod common;

use std::io::Write;

use common::{Raw, assert_healthy, mcp1_request, start};
use junction_proto::jsonrpc::{self, Message};
use junction_proto::mcp1::{self, HEADER_LEN, Next};
use junction_proto::sniff;

/// xorshift64*: small, deterministic, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[1,{\"a\":[true,null,\"x\\u00e9\"]}],\"id\":7}".to_vec(),
        b"[{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1},{\"jsonrpc\":\"2.0\",\"method\":\"m\"}]".to_vec(),
        mcp1_request(3, "rpc.echo", b"[1,2,3]", false),
        mcp1_request(4, "rpc.echo", b"\x00\xffraw", true),
    ]
}

/// One random change: flip a bit, drop, duplicate or insert a byte, truncate, splice.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    let at = rng.below(input.len());
    match rng.below(6) {
        0 if !input.is_empty() => input[at] ^= 1 << rng.below(8),
        1 if !input.is_empty() => {
            input.remove(at);
        }
        2 if !input.is_empty() => input.insert(at, input[at]),
        3 => input.insert(at.min(input.len()), rng.next() as u8),
        4 => input.truncate(at),
        _ => {
            let byte = [b'{', b'}', b'[', b']', b'"', b'\\', b',', b':', 0, 0xff][rng.below(10)];
            input.insert(at.min(input.len()), byte);
        }
    }
}

fn decode_everything(input: &[u8]) {
    let _ = sniff(&input[..input.len().min(64)]);
    if let Message::Batch(entries) = jsonrpc::parse_line(input, 64) {
        for entry in entries {
            let _ = jsonrpc::parse_entry(entry);
        }
    }
    let first = &input[..input.len().min(HEADER_LEN)];
    if let Next::Frame(header) = mcp1::check(first, input.len(), 1 << 20) {
        assert!(
            header.frame_len() <= input.len(),
            "a frame claims bytes that are not there"
        );
        let payload = &input[HEADER_LEN..header.frame_len()];
        let _ = mcp1::parse_request(&header, payload);
        let _ = mcp1::parse_error_payload(payload);
    }
}

#[test]
fn decoders_survive_random_and_mutated_input() {
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let seeds = seeds();
    for round in 0..20_000 {
        let mut input = if round % 5 == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..=rng.below(4) {
            mutate(&mut rng, &mut input);
        }
        decode_everything(&input);
    }
}

#[test]
fn a_daemon_fed_mutated_frames_keeps_serving_others() {
    let server = start();
    let mut rng = Rng(0xfeed_f00d_0bad_cafe);
    let seeds = seeds();
    for endpoint in server.endpoints() {
        for _ in 0..100 {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(3) {
                mutate(&mut rng, &mut input);
            }
            let mut stream = Raw::connect(&endpoint).writer();
            let _ = stream.write_all(&input);
            let _ = stream.write_all(b"\n");
            drop(stream);
            let mut raw = Raw::connect(&endpoint);
            let _ = raw.send_lossy(&input);
            let _ = raw.send_lossy(b"\n");
            raw.shutdown_write();
            // Whatever the daemon answers (an answer, an error, a refusal),
            // it ends the conversation: EOF (or a reset) comes, never a hang.
            let ended = raw.read_to_end_or_reset();
            assert!(
                ended.is_ok(),
                "{endpoint}: no end after {input:?}: {ended:?}"
            );
        }
        assert_healthy(&server);
    }
}
