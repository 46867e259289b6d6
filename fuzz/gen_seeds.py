#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets to fuzz/corpus/<target>/seed-*.

Sources: proto/vectors/mcp1.json (every vector, grouped into a few files)
and hand-written JSON-RPC lines after proto/jsonrpc.md's worked examples.
Targets other than `sniff` read 4 setup bytes before the stream (see
fuzz/src/lib.rs and each target's doc comment); the seeds pick settings that
let the stream do what it shows. Run from anywhere:

    python3 fuzz/gen_seeds.py

The files are checked in; libFuzzer's own finds land beside them and are
ignored by git (fuzz/.gitignore).
"""

import json
import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
VECTORS = FUZZ.parent / "proto" / "vectors" / "mcp1.json"


def unhex(text):
    return bytes.fromhex("".join(text.split()))


def frame(kind, ident, payload, flags=0, version=1):
    return b"MCP1" + struct.pack("<BBHII", version, kind, flags, ident, len(payload)) + payload


def call(kind, ident, method, body=b"", raw=False):
    m = method.encode()
    return frame(kind, ident, struct.pack("<H", len(m)) + m + body, flags=1 if raw else 0)


def write(target, name, data):
    folder = FUZZ / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def lines(*items):
    return b"".join(item.encode() + b"\n" for item in items)


def main():
    vectors = json.loads(VECTORS.read_text())

    # sniff: leading bytes only.
    for name, data in [
        ("brace", b'{"jsonrpc":"2.0","method":"rpc.ping","id":1}\n'),
        ("bracket", b"[{}]"),
        ("spaces-60", b" " * 60 + b"{"),
        ("spaces-61", b"\n" * 61 + b"{"),
        ("mixed-space", b" \t\r\n\x0c["),
        ("mcp1", unhex(vectors[0]["hex"])),
        ("mcp-prefix", b"MCP"),
        ("http", b"GET / HTTP/1.1\r\n\r\n"),
    ]:
        write("sniff", name, data)

    # jsonrpc_framer: max-frame 4096, max-batch 1024 with end of input, wrap
    # after 24 bytes, mixed read sizes.
    setup = bytes([6, 0x84, 24, 4])
    framer = {
        "calls": lines(
            '{"jsonrpc":"2.0","method":"rpc.echo","params":[1,2],"id":7}',
            '{"jsonrpc":"2.0","method":"name","id":"abc"}\r',
            "",
            "   \r",
            '{"jsonrpc":"2.0","method":"rpc.ping","id":-0.50}',
            '{"jsonrpc":"2.0","method":"null","id":1e3}',
            '{"jsonrpc":"2.0","method":"raw","id":"\\u00e9"}',
            '{"jsonrpc":"2.0","method":"fail","id":123456789012345678901234567890}',
        ),
        "invalid": lines(
            '{"method":"rpc.ping","id":1}',
            '{"jsonrpc":"1.0","method":"rpc.ping","id":2}',
            '{"jsonrpc":"2.0","id":3}',
            '{"jsonrpc":"2.0","method":5,"id":4}',
            '{"jsonrpc":"2.0","method":"rpc.echo","params":"x","id":5}',
            '{"jsonrpc":"2.0","method":"rpc.ping","id":true}',
            '{"jsonrpc":"2.0","method":"rpc.ping","id":6,"id":7}',
            "17",
            '{"jsonrpc":"2.0","result":"x","id":5}',
        ),
        "parse-errors": lines(
            '{"jsonrpc":"2.0","method":',
            '{"jsonrpc":"2.0","method":"rpc.ping","id":1} x',
        )
        + b'{"a":"\xff"}\n',
        "batches": lines(
            '[{"jsonrpc":"2.0","method":"rpc.ping","id":1},{"jsonrpc":"2.0","method":"rpc.ping"},'
            '{"jsonrpc":"2.0","method":"nope","id":2},42,'
            '{"jsonrpc":"2.0","method":"rpc.echo","params":{"k":"v"},"id":"x"}]',
            '[{"jsonrpc":"2.0","method":"rpc.ping"}]',
            "[]",
            '[{"jsonrpc":"2.0",',
            '[[{"jsonrpc":"2.0","method":"rpc.ping","id":1}]]',
        ),
        "escapes": lines(
            '{"jsonrpc":"2\\u002e0","method":"a\\u002eb","params":{"\\ud800":[]},"id":"\\"q\\""}',
            '{ "jsonrpc" : "2.0", "method" : "rpc.echo", "params" : [ 1 , {"a" : 2} ], "id" : 3 }',
        ),
        "last-line-no-lf": b'{"jsonrpc":"2.0","method":"rpc.echo","params":["last"],"id":2}',
        # Was -32700 before the fix of ecc0d86: an ignored member's name with a
        # lone surrogate escape.
        "surrogate-name": lines('{"jsonrpc":"2.0","method":"m","id":1,"\\ud800":0}'),
        # Must stay -32700: a raw control character in a member name.
        "control-char-name": b'{"jsonrpc":"2.0","method":"m","\0":1,"id":1}\n',
    }
    for name, data in framer.items():
        write("jsonrpc_framer", name, setup + data)
    # max-frame 64: a line of 64 bytes, then one of 65.
    write(
        "jsonrpc_framer",
        "limits",
        bytes([4, 0x01, 0, 2])
        + lines(
            '{"jsonrpc":"2.0","method":"rpc.echo","params":["xxxxxx"],"id":1}',
            '{"jsonrpc":"2.0","method":"rpc.echo","params":["xxxxxxx"],"id":1}',
        ),
    )

    # mcp1_decoder: limit 1 MiB as in the vectors, wrap after 10 bytes.
    setup = bytes([7, 0, 10, 4])
    frames, skipped = b"", b""
    for v in vectors:
        data, expect = unhex(v["hex"]), v["expect"]
        if "frame" in expect:
            frames += data
        elif "error" in expect and not expect["close"]:
            skipped += data
    write("mcp1_decoder", "frames", setup + frames)
    write("mcp1_decoder", "skipped-errors", setup + skipped)
    for i, v in enumerate(vectors):
        expect = v["expect"]
        if expect.get("close") or expect.get("need_more"):
            write("mcp1_decoder", f"vector-{i:02}", setup + unhex(v["hex"]))

    # conn: max-frame 4096, max-batch 16, max-output 1 MiB, end of input;
    # random schedule; the stream sent once.
    setup = bytes([0x80 | 0x60 | 0x10 | 5, 0x01, 0, 3])
    conn = {
        "jsonrpc": lines(
            "",
            '{"jsonrpc":"2.0","method":"ping","id":1}',
            '{"jsonrpc":"2.0","method":"echo","params":[1,{"a":null}],"id":"e"}',
            '{"jsonrpc":"2.0","method":"slow","params":["later"],"id":2}',
            '{"jsonrpc":"2.0","method":"fail","id":3}',
            '{"jsonrpc":"2.0","method":"raw","id":4}',
            '{"jsonrpc":"2.0","method":"big","params":[300],"id":5}',
            '{"jsonrpc":"2.0","method":"big","params":["x"],"id":6}',
            '{"jsonrpc":"2.0","method":"slow"}',
            '{"jsonrpc":"2.0","method":"nope","id":7}',
            '[{"jsonrpc":"2.0","method":"slow","params":[1],"id":8},{"jsonrpc":"2.0","method":"ping","id":9},5]',
        )
        + b'{"jsonrpc":"2.0","method":"echo","params":["last"],"id":10}',
        "mcp1": call(1, 1, "ping")
        + call(1, 2, "echo", b"[1,2]")
        + call(1, 3, "echo", b"\x00\xff", raw=True)
        + call(1, 4, "slow", b' "hi" \n')
        + call(3, 0, "slow")
        + call(1, 5, "raw")
        + call(1, 6, "big", b"[100]")
        + call(1, 7, "fail")
        + frame(6, 9, b"hb")
        + frame(9, 11, b"")
        + call(1, 0, "ping")
        + call(1, 12, "nope")
        + frame(1, 13, b"MCP1"),
        "mcp1-fatal": call(1, 1, "slow") + frame(1, 7, b"", version=2),
        "unknown": b"GET / HTTP/1.1\r\n\r\n",
    }
    for name, data in conn.items():
        write("conn", name, setup + data)
    # Backpressure: max-output 1 byte, calm schedule, the stream sent 8 times.
    write(
        "conn",
        "backpressure",
        bytes([0x80 | 0x00 | 0x10 | 5, 0x00, 7, 1])
        + lines('{"jsonrpc":"2.0","method":"big","params":[5000],"id":1}', '[{"jsonrpc":"2.0","method":"ping","id":2}]'),
    )
    # An over-long line at max-frame 16, and one cut by the end of input.
    write("conn", "too-long", bytes([0x80 | 0x60 | 2, 0x02, 0, 7]) + b'{"jsonrpc":1}\n' + b"[" * 20 + b"\n")
    write("conn", "too-long-at-eof", bytes([0x80 | 0x60 | 2, 0x02, 0, 7]) + b'{"jsonrpc":1}\n' + b"{" * 17)

    # crossproto: the whole input is one MCP1 body (no setup bytes).
    crossproto = {
        "forged-reply": b'[\n{"jsonrpc":"2.0","result":"FORGED","id":"victim"}\r\n]',
        "forged-request": b'{"a":\r\n1,"b":[\n{"jsonrpc":"2.0","method":"evil","id":1}\n]}',
        "spaced-scalar": b' \n"hi\\n" \t\r\n',
        "empty": b"",
        "whitespace-only": b" \n",
        "not-json": b"[1,\n",
        "escapes": b'["\\u2028\\ud800", 1e999, -0.0]',
    }
    for name, data in crossproto.items():
        write("crossproto", name, data)


if __name__ == "__main__":
    main()
