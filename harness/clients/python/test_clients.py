"""Tests of the independent Python client against the specs and a real junctiond.

Run from this directory::

    JUNCTIOND=/path/to/junctiond python3 -m unittest -v test_clients

* ``VectorTests`` checks :func:`junction_client.decode_first` against every
  entry of ``proto/vectors/mcp1.json``; ``EncoderTests`` checks the encoders
  against the byte-exact examples of ``proto/mcp1.md`` section 7.
  ``JsonBodyTests`` checks the "one JSON value" rule of MCP1 bodies.
* The daemon tests start ``$JUNCTIOND`` (default ``target/debug/junctiond`` of
  this repository) with a temp Unix socket and TCP port 0, and run the same
  JSON-RPC and MCP1 tests over both transports; ``JsonRpcSpecExamples*`` replay
  the worked examples of ``proto/jsonrpc.md`` byte for byte, and
  ``LimitTests`` the limit examples (``--max-frame 64 --max-batch 2
  --max-connections 2``), including the MCP1 client's "bad magic from server"
  report of a -32002 refusal.

Every socket read is bounded by ``PATIENCE`` so a hung daemon fails a test
instead of hanging it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

import junction_client as jc
from junction_client import (
    ConnectionClosed,
    JsonRpcClient,
    Mcp1Client,
    ProtocolError,
    RpcError,
)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
VECTORS = os.path.join(REPO, "proto", "vectors", "mcp1.json")
DEFAULT_JUNCTIOND = os.path.join(REPO, "target", "debug", "junctiond")

PATIENCE = 20.0  # seconds: a hang guard on every read, not a timing assertion


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


# ---------------------------------------------------------------------------
# Pure tests: vectors and encoders
# ---------------------------------------------------------------------------


def normalize_expect(expect: dict) -> dict:
    """Vectors spell body_hex with spaces; compare hex without them."""
    out = json.loads(json.dumps(expect))
    frame = out.get("frame")
    if frame is not None and "body_hex" in frame:
        frame["body_hex"] = frame["body_hex"].replace(" ", "").lower()
    return out


class VectorTests(unittest.TestCase):
    """decode_first against proto/vectors/mcp1.json."""

    @classmethod
    def setUpClass(cls):
        with open(VECTORS, encoding="utf-8") as f:
            cls.vectors = json.load(f)

    def test_vectors_file_is_not_empty(self):
        self.assertIsInstance(self.vectors, list)
        self.assertGreater(len(self.vectors), 20)
        for entry in self.vectors:
            self.assertEqual(set(entry), {"name", "hex", "expect"}, entry.get("name"))

    def test_every_vector(self):
        for entry in self.vectors:
            with self.subTest(entry["name"]):
                got = jc.decode_first(unhex(entry["hex"]), limit=1048576)
                self.assertEqual(normalize_expect(got), normalize_expect(entry["expect"]))

    def test_every_prefix_of_a_valid_frame_needs_more(self):
        # Any strict prefix of a vector that decodes to a frame is a correct
        # prefix: the decoder must wait for more.
        for entry in self.vectors:
            if "frame" not in entry["expect"]:
                continue
            data = unhex(entry["hex"])
            length = jc.HEADER_SIZE + int.from_bytes(data[12:16], "little")
            with self.subTest(entry["name"]):
                for cut in range(length):
                    self.assertEqual(jc.decode_first(data[:cut]), {"need_more": True}, cut)

    def test_limit_is_a_parameter(self):
        frame = jc.encode_ping(3, b"abcd")
        self.assertIn("frame", jc.decode_first(frame, limit=4))
        self.assertEqual(jc.decode_first(frame, limit=3), {"error": -32001, "close": True, "id": 3})


# Section 7 of proto/mcp1.md, byte for byte.
EX_PING_REQ = unhex("4d 43 50 31 01 01 00 00 01 00 00 00 0a 00 00 00 08 00 72 70 63 2e 70 69 6e 67")
EX_PING_RESP = unhex("4d 43 50 31 01 02 00 00 01 00 00 00 06 00 00 00 22 70 6f 6e 67 22")
EX_ECHO_REQ = unhex(
    "4d 43 50 31 01 01 00 00 02 00 00 00 0f 00 00 00 08 00 72 70 63 2e 65 63 68 6f 5b 31 2c 32 5d"
)
EX_ECHO_RESP = unhex("4d 43 50 31 01 02 00 00 02 00 00 00 05 00 00 00 5b 31 2c 32 5d")
EX_RAW_REQ = unhex(
    "4d 43 50 31 01 01 01 00 03 00 00 00 0c 00 00 00 08 00 72 70 63 2e 65 63 68 6f 00 ff"
)
EX_RAW_RESP = unhex("4d 43 50 31 01 02 01 00 03 00 00 00 02 00 00 00 00 ff")
EX_NOTIFY = unhex("4d 43 50 31 01 03 00 00 00 00 00 00 0a 00 00 00 08 00 72 70 63 2e 70 69 6e 67")
EX_NOPE_ERROR = unhex(
    "4d 43 50 31 01 04 00 00 04 00 00 00 2e 00 00 00 a7 80 ff ff 28 00"
    "4d 65 74 68 6f 64 20 6e 6f 74 20 66 6f 75 6e 64 3a 20 6e 6f 20 6d 65 74 68 6f 64 20 6e 61"
    "6d 65 64 20 22 6e 6f 70 65 22"
)
EX_PING_HB = unhex("4d 43 50 31 01 06 00 00 09 00 00 00 02 00 00 00 68 62")
EX_PONG_HB = unhex("4d 43 50 31 01 07 00 00 09 00 00 00 02 00 00 00 68 62")


class EncoderTests(unittest.TestCase):
    """The encoders against the spec's examples, and error payload decoding."""

    def test_section_7_examples(self):
        self.assertEqual(jc.encode_request(1, "rpc.ping"), EX_PING_REQ)
        self.assertEqual(jc.encode_response(1, b'"pong"'), EX_PING_RESP)
        self.assertEqual(jc.encode_request(2, "rpc.echo", jc.json_body([1, 2])), EX_ECHO_REQ)
        self.assertEqual(jc.encode_response(2, b"[1,2]"), EX_ECHO_RESP)
        self.assertEqual(jc.encode_request(3, "rpc.echo", b"\x00\xff", raw=True), EX_RAW_REQ)
        self.assertEqual(jc.encode_response(3, b"\x00\xff", raw=True), EX_RAW_RESP)
        self.assertEqual(jc.encode_notification("rpc.ping"), EX_NOTIFY)
        self.assertEqual(
            jc.encode_error(4, -32601, 'Method not found: no method named "nope"'), EX_NOPE_ERROR
        )
        self.assertEqual(jc.encode_ping(9, b"hb"), EX_PING_HB)
        self.assertEqual(jc.encode_pong(9, b"hb"), EX_PONG_HB)

    def test_error_payload_round_trip(self):
        frame = jc.encode_error(5, 4711, "failed on purpose", {"why": "test"})
        err = jc.decode_error_payload(frame[16:])
        self.assertEqual((err.code, err.message, err.data), (4711, "failed on purpose", {"why": "test"}))
        err = jc.decode_error_payload(EX_NOPE_ERROR[16:])
        self.assertEqual(err, RpcError(-32601, 'Method not found: no method named "nope"'))

    def test_encoder_refuses_what_the_spec_forbids(self):
        with self.assertRaises(ValueError):
            jc.encode_request(0, "rpc.ping")  # id 0 is reserved
        with self.assertRaises(ValueError):
            jc.encode_request(jc.MAX_ID + 1, "rpc.ping")
        with self.assertRaises(ValueError):
            jc.encode_request(1, "")
        with self.assertRaises(ValueError):
            jc.encode_request(1, "a" * 256)
        self.assertEqual(len(jc.encode_request(1, "a" * 255)), 16 + 2 + 255)

    def test_ids_wrap_from_max_to_one(self):
        a, b = socket.socketpair()
        with a, b:
            client = Mcp1Client(a)
            client._next_id = jc.MAX_ID
            self.assertEqual([client.next_id(), client.next_id()], [jc.MAX_ID, 1])


# JSON bodies for the MCP1 "one UTF-8 JSON value" rule (mcp1.md section 3).
GOOD_BODIES = [
    b"1", b' "hi" \n', b"[1,2]", b'{"a":1}', b"{}", b"[ ]", b"-0.5e+10", b"1E5",
    b"123456789012345678901234567890", b'"\\ud800"', b'"\\u00e9\\n\\/"', b'"\xc3\xa9"',
    b"\t[\r1\n]", b"[" * 100000 + b"]" * 100000, b'{"a":[1,{"b":null}],"c":true}',
]
BAD_BODIES = [
    b"  ", b"NaN", b"Infinity", b"1 2", b"[1,]", b'{"a":1,}', b"01", b"1.", b"+1", b'"\x01"',
    b'"\\x"', b'"\\u12"', b"\xef\xbb\xbf1", b"\x0c1", b'"\xff"', b"{1:2}", b"[1 2]", b"tru",
    b"[", b'{"a":1}}', b"'a'",
]


class JsonBodyTests(unittest.TestCase):
    def test_good_bodies(self):
        for body in GOOD_BODIES:
            with self.subTest(body=body[:40]):
                self.assertTrue(jc.is_one_json_value(body))

    def test_bad_bodies(self):
        for body in BAD_BODIES:
            with self.subTest(body=body):
                self.assertFalse(jc.is_one_json_value(body))


class ClientSideTests(unittest.TestCase):
    """Client behaviour against a scripted peer (a socketpair)."""

    def setUp(self):
        self.ours, self.peer = socket.socketpair()
        self.ours.settimeout(PATIENCE)
        self.peer.settimeout(PATIENCE)

    def tearDown(self):
        self.ours.close()
        self.peer.close()

    def test_mcp1_reports_a_json_refusal_as_bad_magic_from_server(self):
        self.peer.sendall(
            b'{"jsonrpc":"2.0","error":{"code":-32002,"message":"Too many connections"},"id":null}\n'
        )
        self.peer.close()
        with self.assertRaises(ProtocolError) as ctx:
            Mcp1Client(self.ours).call("rpc.ping")
        self.assertIn("bad magic from server", str(ctx.exception))
        self.assertIn('{"jsonrpc":"2.0","error":{"code":-32002', str(ctx.exception))

    def test_mcp1_pipelined_answers_in_any_order(self):
        client = Mcp1Client(self.ours)
        first, second = client.send("a.b"), client.send("a.b")
        self.peer.sendall(jc.encode_response(second, b'"two"') + jc.encode_response(first, b'"one"'))
        self.assertEqual(client.wait(first).result(), "one")
        self.assertEqual(client.recv().result(), "two")  # kept while waiting

    def test_jsonrpc_null_id_error_raises(self):
        self.peer.sendall(
            b'{"jsonrpc":"2.0","error":{"code":-32002,"message":"Too many connections"},"id":null}\n'
        )
        with self.assertRaises(RpcError) as ctx:
            JsonRpcClient(self.ours).call("rpc.ping")
        self.assertEqual(ctx.exception.code, -32002)

    def test_jsonrpc_params_must_be_structured(self):
        client = JsonRpcClient(self.ours)
        with self.assertRaises(TypeError):
            client.call("rpc.echo", "hi")

    def test_eof_is_connection_closed(self):
        self.peer.close()
        with self.assertRaises(ConnectionClosed):
            Mcp1Client(self.ours).recv()


# ---------------------------------------------------------------------------
# A real daemon
# ---------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TCP_LINE = re.compile(r"listening on tcp (\S+)")


class Daemon:
    """junctiond on a temp Unix socket and TCP port 0; stderr is drained by a
    thread (so the daemon never blocks on a full pipe) and kept for reports."""

    def __init__(self, *extra_args):
        self.binary = os.environ.get("JUNCTIOND", DEFAULT_JUNCTIOND)
        self.dir = tempfile.TemporaryDirectory(prefix="junction-py-")
        self.unix = os.path.join(self.dir.name, "j.sock")
        self.tcp = None
        self.lines = []
        self._found = threading.Event()
        self.proc = subprocess.Popen(
            # TCP without a token: the client speaks the wire protocols only.
            [self.binary, "--unix", self.unix, "--tcp", "127.0.0.1:0", "--tcp-anonymous", "true",
             "--allow", "anonymous:call:*",
             "--log-format", "human",
             *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._found.wait(PATIENCE) or self.tcp is None:
            log = self.log()
            self.stop()
            raise RuntimeError(f"junctiond did not report its TCP address:\n{log}")

    def _drain(self):
        for raw in self.proc.stderr:
            line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            self.lines.append(line)
            if self.tcp is None:
                m = TCP_LINE.search(line)
                if m:
                    self.tcp = m.group(1)
                    self._found.set()
        self._found.set()  # EOF: the daemon exited

    def log(self):
        return "\n".join(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=PATIENCE)
        self._reader.join(timeout=PATIENCE)
        self.proc.stderr.close()
        self.dir.cleanup()
        return self.proc.returncode


class DaemonTestCase(unittest.TestCase):
    """One daemon per concrete class; ``transport`` is "unix" or "tcp"."""

    transport = None

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def setUp(self):
        self._socks = []

    def tearDown(self):
        for s in self._socks:
            s.close()

    def sock(self) -> socket.socket:
        if self.transport == "unix":
            s = jc.connect_unix(self.daemon.unix, timeout=PATIENCE)
        else:
            s = jc.connect_tcp(self.daemon.tcp, timeout=PATIENCE)
        self._socks.append(s)
        return s

    def where(self):
        return ["--unix", self.daemon.unix] if self.transport == "unix" else ["--tcp", self.daemon.tcp]

    def run_cli(self, *args):
        return subprocess.run(
            [sys.executable, os.path.join(HERE, "junction_client.py"), *self.where(), *args],
            capture_output=True,
            timeout=PATIENCE * 2,
            text=True,
        )


class JsonRpcTests:
    """JSON-RPC 2.0 over newline-delimited JSON (mixed into a DaemonTestCase)."""

    def client(self) -> JsonRpcClient:
        return JsonRpcClient(self.sock())

    def test_ping(self):
        self.assertEqual(self.client().call("rpc.ping"), "pong")

    def test_echo(self):
        c = self.client()
        self.assertEqual(c.call("rpc.echo", [1, 2]), [1, 2])
        self.assertEqual(c.call("rpc.echo", {"a": 1}), {"a": 1})
        nested = {"s": "h\u00e9\u2603\U0001f600", "n": [None, True, 1.5, -3, {"x": []}]}
        self.assertEqual(c.call("rpc.echo", nested), nested)

    def test_method_not_found(self):
        c = self.client()
        with self.assertRaises(RpcError) as ctx:
            c.call("no.such.method", [])
        self.assertEqual(ctx.exception.code, -32601)
        self.assertEqual(c.call("rpc.ping"), "pong")  # connection kept

    def test_pipelining_200(self):
        c = self.client()
        sent = {}
        for i in range(200):
            if i % 10 == 0:
                c.notify("rpc.echo", [i])  # never answered
            sent[c.send("rpc.echo", [i, "x" * (i % 7)])] = [i, "x" * (i % 7)]
        got = {}
        for _ in range(200):
            response = c.recv()
            self.assertNotIn(response["id"], got, "an id answered twice")
            got[response["id"]] = JsonRpcClient.outcome(response)
        self.assertEqual(got, sent)
        self.assertEqual(c.call("rpc.ping"), "pong")  # and nothing else was pending

    def test_batch_with_a_notification(self):
        c = self.client()
        out = c.batch(
            [
                ("rpc.ping", None, False),
                ("rpc.echo", [9], True),
                ("rpc.echo", {"b": [2]}, False),
                ("no.such.method", None, False),
            ]
        )
        self.assertEqual(out[:3], ["pong", None, {"b": [2]}])
        self.assertIsInstance(out[3], RpcError)
        self.assertEqual(out[3].code, -32601)
        self.assertEqual(c.call("rpc.ping"), "pong")

    def test_batch_answer_omits_notifications(self):
        s = self.sock()
        c = JsonRpcClient(s)
        c.send_line(
            '[{"jsonrpc":"2.0","method":"rpc.echo","params":[1],"id":"a"},'
            '{"jsonrpc":"2.0","method":"rpc.echo","params":[2]}]'
        )
        answer = json.loads(c.recv_line())
        self.assertEqual(answer, [{"jsonrpc": "2.0", "result": [1], "id": "a"}])

    def test_notifications_get_no_answer(self):
        c = self.client()
        c.notify("rpc.ping")
        c.notify("no.such.method", [1])
        self.assertEqual(c.batch([("rpc.ping", None, True), ("rpc.echo", [1], True)]), [None, None])
        rid = c.send("rpc.echo", ["after"])
        # The very next line must be this answer: nothing came for the notifications.
        self.assertEqual(json.loads(c.recv_line()), {"jsonrpc": "2.0", "result": ["after"], "id": rid})

    def test_ids_echoed_byte_for_byte(self):
        c = self.client()
        for id_text in ['1.50', '"\\u0041b"', '-0', '1e3', '"x y"', '12345678901234567890']:
            with self.subTest(id=id_text):
                c.send_line('{"jsonrpc":"2.0","method":"rpc.ping","id":%s}' % id_text)
                line = c.recv_line().decode("utf-8")
                self.assertTrue(line.endswith('"id":%s}' % id_text), line)
                self.assertEqual(json.loads(line)["result"], "pong")

    def test_parse_error_has_null_id_and_keeps_the_connection(self):
        c = self.client()
        c.send_line("{not json")
        response = json.loads(c.recv_line())
        self.assertIsNone(response["id"])
        self.assertEqual(response["error"]["code"], -32700)
        self.assertEqual(c.call("rpc.ping"), "pong")

    def test_cli(self):
        done = self.run_cli("--proto", "jsonrpc", "rpc.echo", '{"a":[1,2]}')
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout), {"a": [1, 2]})
        done = self.run_cli("--proto", "jsonrpc", "no.such.method")
        self.assertEqual(done.returncode, 1)
        self.assertEqual(json.loads(done.stderr)["error"]["code"], -32601)


class Mcp1Tests:
    """MCP1 binary framing (mixed into a DaemonTestCase)."""

    def client(self) -> Mcp1Client:
        return Mcp1Client(self.sock())

    def expect_error(self, client, code, fid):
        frame = client.recv()
        self.assertEqual(frame.kind, jc.ERROR, frame)
        self.assertEqual(frame.id, fid, frame)
        self.assertEqual(frame.error().code, code, frame)
        return frame

    def expect_eof(self, client):
        with self.assertRaises(ConnectionClosed):
            client.recv()

    def test_ping(self):
        self.assertEqual(self.client().call("rpc.ping"), "pong")

    def test_echo(self):
        c = self.client()
        self.assertEqual(c.call("rpc.echo", [1, 2]), [1, 2])
        self.assertEqual(c.call("rpc.echo", {"a": 1}), {"a": 1})
        self.assertEqual(c.call("rpc.echo", "hi"), "hi")
        self.assertEqual(c.call("rpc.echo", 5), 5)
        self.assertEqual(c.call("rpc.echo", "h\u00e9\U0001f600"), "h\u00e9\U0001f600")

    def test_echo_body_with_whitespace(self):
        c = self.client()
        c.send_bytes(jc.encode_request(41, "rpc.echo", b' "hi" \n'))
        frame = c.wait(41)
        self.assertEqual(frame.kind, jc.RESPONSE)
        self.assertEqual(frame.result(), "hi")

    def test_raw_echo(self):
        c = self.client()
        rid = c.send("rpc.echo", raw=b"\x00\xffraw")
        frame = c.wait(rid)
        self.assertEqual(frame.kind, jc.RESPONSE)
        self.assertTrue(frame.flags & jc.FLAG_RAW, frame)
        self.assertEqual(frame.payload, b"\x00\xffraw")
        self.assertEqual(c.call("rpc.echo", raw=b"\x00\xffraw"), b"\x00\xffraw")

    def test_method_not_found(self):
        c = self.client()
        with self.assertRaises(RpcError) as ctx:
            c.call("no.such.method", [1])
        self.assertEqual(ctx.exception.code, -32601)
        self.assertEqual(c.call("rpc.ping"), "pong")  # connection kept

    def test_ping_pong(self):
        c = self.client()
        self.assertEqual(c.ping(b"hb"), b"hb")
        self.assertEqual(c.ping(b""), b"")
        blob = bytes(range(256)) * 64
        self.assertEqual(c.ping(blob), blob)

    def test_section_7_examples_byte_exact(self):
        # The spec says these were checked against a running daemon.
        c = self.client()
        for request, answer in [
            (EX_PING_REQ, EX_PING_RESP),
            (EX_ECHO_REQ, EX_ECHO_RESP),
            (EX_RAW_REQ, EX_RAW_RESP),
            (jc.encode_request(4, "nope"), EX_NOPE_ERROR),
            (EX_PING_HB, EX_PONG_HB),
        ]:
            with self.subTest(request=request.hex(" ")):
                c.send_bytes(request)
                frame = c.recv()
                got = jc.encode_frame(frame.kind, frame.id, frame.payload, frame.flags)
                self.assertEqual(got.hex(" "), answer.hex(" "))

    def test_pipelining_200(self):
        c = self.client()
        expected = {}
        for i in range(200):
            if i % 3 == 0:
                payload = i.to_bytes(2, "little") * (i % 5)
                expected[c.send_ping(payload)] = (jc.PONG, payload)
            elif i % 3 == 1:
                expected[c.send("rpc.echo", [i, {"k": i}])] = (jc.RESPONSE, [i, {"k": i}])
            else:
                expected[c.send("rpc.echo", raw=bytes([i]) * i)] = (jc.RESPONSE, bytes([i]) * i)
            if i % 20 == 0:
                c.notify("rpc.echo", [i])  # never answered
        got = {}
        for _ in range(200):
            frame = c.recv()
            self.assertNotIn(frame.id, got, "an id answered twice")
            got[frame.id] = (frame.kind, frame.result())
        self.assertEqual(got, expected)
        self.assertEqual(c.call("rpc.ping"), "pong")

    def test_largest_id(self):
        c = self.client()
        c.send("rpc.echo", [7], id=jc.MAX_ID)
        frame = c.recv()
        self.assertEqual((frame.id, frame.result()), (jc.MAX_ID, [7]))

    def test_notification_gets_no_answer(self):
        c = self.client()
        c.notify("rpc.ping")
        c.notify("rpc.echo", raw=b"\x01")
        c.notify("no.such.method", [1])
        c.send_bytes(jc.encode_ping(77, b"after"))
        frame = c.recv()  # the very next frame: nothing came for the notifications
        self.assertEqual((frame.kind, frame.id, frame.payload), (jc.PONG, 77, b"after"))

    def test_unknown_kind_keeps_the_connection(self):
        c = self.client()
        c.send_bytes(jc.encode_frame(0x09, 11, b"zz"))
        self.expect_error(c, -32013, 11)
        c.send_bytes(jc.encode_frame(0x05, 12, b""))  # CANCEL: the daemon sends it, never takes it
        self.expect_error(c, -32013, 12)
        self.assertEqual(c.ping(b"still here"), b"still here")
        self.assertEqual(c.call("rpc.ping"), "pong")

    def test_reserved_flags_keep_the_connection(self):
        c = self.client()
        c.send_bytes(jc.encode_frame(jc.REQUEST, 14, jc._call_payload("rpc.ping", b""), flags=0x0002))
        self.expect_error(c, -32012, 14)
        c.send_bytes(jc.encode_frame(jc.PING, 16, b"x", flags=jc.FLAG_RAW))  # RAW on a PING
        self.expect_error(c, -32012, 16)
        self.assertEqual(c.ping(b"ok"), b"ok")

    def test_payload_errors_keep_the_connection(self):
        c = self.client()
        c.send_bytes(jc.encode_frame(jc.REQUEST, 18, b"\x00\x00[]"))  # method_len 0
        self.expect_error(c, -32600, 18)
        c.send_bytes(jc.encode_frame(jc.REQUEST, 0, jc._call_payload("rpc.ping", b"")))  # id 0
        self.expect_error(c, -32600, 0)
        c.send_bytes(jc.encode_request(23, "rpc.echo", b"[1,"))  # not JSON
        self.expect_error(c, -32700, 23)
        c.send_bytes(jc.encode_request(24, "rpc.echo", b"1 2"))  # two values
        self.expect_error(c, -32700, 24)
        self.assertEqual(c.call("rpc.echo", [1]), [1])

    def test_notification_with_bad_json_is_refused_with_id_0(self):
        # proto/vectors/mcp1.json: "notification with a bad JSON body" -> -32700, id 0, kept.
        c = self.client()
        c.send_bytes(jc.encode_notification("rpc.echo", b"{"))
        self.expect_error(c, -32700, 0)
        self.assertEqual(c.ping(b"ok"), b"ok")

    def test_response_sent_to_the_daemon_is_dropped(self):
        c = self.client()
        c.send_bytes(jc.encode_response(1, b"1"))
        c.send_bytes(jc.encode_pong(2, b"x"))
        c.send_bytes(jc.encode_ping(3, b"next"))
        frame = c.recv()  # no reply to the RESPONSE or PONG
        self.assertEqual((frame.kind, frame.id, frame.payload), (jc.PONG, 3, b"next"))

    def test_answers_sent_to_the_daemon_are_counted(self):
        # mcp1.md section 2: a RESPONSE or ERROR that answers no call the bus
        # forwarded is counted in bus.late_answers; a PONG as an error
        # (protocols.mcp1.errors). All three are dropped.
        stats = JsonRpcClient(self.sock())
        before = stats.call("rpc.stats")
        c = self.client()
        c.send_bytes(jc.encode_response(1, b"1") + jc.encode_pong(2, b"x"))
        c.send_bytes(jc.encode_error(3, 4711, "not asked"))
        self.assertEqual(c.ping(b"sync"), b"sync")  # all three were handled before this
        after = stats.call("rpc.stats")
        self.assertEqual(after["protocols"]["mcp1"]["errors"] - before["protocols"]["mcp1"]["errors"], 1)
        self.assertEqual(after["bus"]["late_answers"] - before["bus"]["late_answers"], 2)

    def test_json_body_verdicts_match_the_daemon(self):
        # decode_first and the daemon agree on which bodies are one JSON value.
        c = self.client()
        for n, body in enumerate(GOOD_BODIES + BAD_BODIES, start=1000):
            with self.subTest(body=body[:40]):
                request = jc.encode_request(n, "rpc.echo", body)
                ours = jc.decode_first(request)
                c.send_bytes(request)
                frame = c.recv()
                self.assertEqual(frame.id, n)
                if "frame" in ours:
                    self.assertEqual(frame.kind, jc.RESPONSE, frame.payload[:80])
                else:
                    self.assertEqual(ours, {"error": -32700, "close": False, "id": n})
                    self.assertEqual((frame.kind, frame.error().code), (jc.ERROR, -32700))

    def test_unsupported_version_closes(self):
        c = self.client()
        c.send_bytes(jc.encode_frame(jc.REQUEST, 7, jc._call_payload("rpc.ping", b""), version=2))
        self.expect_error(c, -32011, 7)
        self.expect_eof(c)

    def test_bad_magic_on_a_later_frame_closes_with_id_0(self):
        c = self.client()
        self.assertEqual(c.ping(b"first"), b"first")
        c.send_bytes(jc.encode_frame(jc.PING, 5, b"", magic=b"MCP2"))
        self.expect_error(c, -32010, 0)
        self.expect_eof(c)

    def test_frame_too_large_closes(self):
        c = self.client()
        c.send_bytes(jc.HEADER.pack(jc.MAGIC, 1, jc.REQUEST, 0, 8, jc.DEFAULT_LIMIT + 1))
        self.expect_error(c, -32001, 8)
        self.expect_eof(c)

    def test_truncated_frame_closes(self):
        c = self.client()
        c.send_bytes(jc.encode_request(33, "rpc.ping")[:20])  # header and 4 of 10 payload bytes
        c.sock.shutdown(socket.SHUT_WR)
        self.expect_error(c, -32014, 33)
        self.expect_eof(c)

    def test_truncated_header_closes_with_id_0(self):
        c = self.client()
        c.send_bytes(jc.encode_request(33, "rpc.ping")[:10])
        c.sock.shutdown(socket.SHUT_WR)
        self.expect_error(c, -32014, 0)
        self.expect_eof(c)

    def test_cli(self):
        done = self.run_cli("--proto", "mcp1", "rpc.echo", '"hi"')
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout), "hi")
        done = self.run_cli("--proto", "mcp1", "rpc.ping")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout), "pong")
        done = self.run_cli("--proto", "mcp1", "no.such.method")
        self.assertEqual(done.returncode, 1)
        self.assertEqual(json.loads(done.stderr)["error"]["code"], -32601)


UNRECOGNISED = (
    b"junctiond: unrecognised protocol. This socket speaks JSON-RPC 2.0 (one JSON object per line,"
    b' e.g. {"jsonrpc":"2.0","method":"rpc.ping","id":1}) and MCP1 (binary frames starting with the'
    b' magic "MCP1"); see proto/ in the Junction sources.'
)


class JsonRpcSpecExamples:
    """The worked examples of proto/jsonrpc.md section 9 (those that need
    neither custom methods nor special limits), byte for byte, each on a
    fresh connection."""

    def transcript(self, sent: bytes, replies, close=False):
        """Send ``sent`` in one write, expect exactly ``replies`` (lines without
        LF) and then: EOF if ``close``, else nothing more (checked with a
        marker call whose answer must be the very next line)."""
        c = JsonRpcClient(self.sock())
        c.sock.sendall(sent)
        for want in replies:
            self.assertEqual(c.recv_line(), want)
        if close:
            with self.assertRaises(ConnectionClosed):
                c.recv_line()
        else:
            c.send_line('{"jsonrpc":"2.0","method":"rpc.ping","id":"marker"}')
            self.assertEqual(c.recv_line(), b'{"jsonrpc":"2.0","result":"pong","id":"marker"}')

    def test_call(self):
        self.transcript(
            b'{"jsonrpc":"2.0","method":"rpc.echo","params":[1,2],"id":7}\n',
            [b'{"jsonrpc":"2.0","result":[1,2],"id":7}'],
        )

    def test_crlf(self):
        self.transcript(
            b'{"jsonrpc":"2.0","method":"rpc.ping","id":"abc"}\r\n',
            [b'{"jsonrpc":"2.0","result":"pong","id":"abc"}'],
        )

    def test_blank_lines(self):
        self.transcript(
            b'\n   \r\n{"jsonrpc":"2.0","method":"rpc.ping","id":1}\n\n',
            [b'{"jsonrpc":"2.0","result":"pong","id":1}'],
        )

    def test_ids_byte_for_byte(self):
        ids = [b"null", b"-0.50", b"1e3", b'"\\u00e9"', b"123456789012345678901234567890"]
        self.transcript(
            b"".join(b'{"jsonrpc":"2.0","method":"rpc.ping","id":%s}\n' % i for i in ids),
            [b'{"jsonrpc":"2.0","result":"pong","id":%s}' % i for i in ids],
        )

    def test_notifications(self):
        self.transcript(
            b'{"jsonrpc":"2.0","method":"rpc.ping"}\n'
            b'{"jsonrpc":"2.0","method":"no.such.method"}\n'
            b'{"jsonrpc":"2.0","method":"rpc.echo","params":["after"],"id":2}\n',
            [b'{"jsonrpc":"2.0","result":["after"],"id":2}'],
        )

    def test_whitespace_and_echo_without_params(self):
        self.transcript(
            b'{ "jsonrpc" : "2.0", "method" : "rpc.echo", "params" : [ 1 , {"a" : 2} ], "id" : 3 }\n'
            b'{"jsonrpc":"2.0","method":"rpc.echo","id":4}\n',
            [
                b'{"jsonrpc":"2.0","result":[ 1 , {"a" : 2} ],"id":3}',
                b'{"jsonrpc":"2.0","result":null,"id":4}',
            ],
        )

    def test_parse_errors(self):
        self.transcript(
            b'{"jsonrpc":"2.0","method":\n'
            b'{"jsonrpc":"2.0","method":"rpc.ping","id":1} x\n'
            b'{"a":"\xff"}\n',
            [
                b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error: EOF while parsing a value at line 1 column 26"},"id":null}',
                b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error: trailing characters at line 1 column 46"},"id":null}',
                b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error: invalid UTF-8 at byte 6"},"id":null}',
            ],
        )

    def test_invalid_requests(self):
        self.transcript(
            b'{"method":"rpc.ping","id":1}\n'
            b'{"jsonrpc":"1.0","method":"rpc.ping","id":2}\n'
            b'{"jsonrpc":"2.0","id":3}\n'
            b'{"jsonrpc":"2.0","method":5,"id":4}\n'
            b'{"jsonrpc":"2.0","method":"rpc.echo","params":"x","id":5}\n'
            b'{"jsonrpc":"2.0","method":"rpc.ping","id":true}\n'
            b'{"jsonrpc":"2.0","method":"rpc.ping","id":6,"id":7}\n'
            b"17\n"
            b'{"jsonrpc":"1.0","method":"rpc.ping"}\n',
            [
                b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: missing \\"jsonrpc\\": \\"2.0\\""},"id":1}',
                b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: \\"jsonrpc\\" must be exactly \\"2.0\\""},"id":2}',
                b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: missing \\"method\\""},"id":3}',
                b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: \\"method\\" must be a string"},"id":4}',
                b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: \\"params\\" must be an array or an object"},"id":5}',
                b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: \\"id\\" must be a string, a number or null"},"id":null}',
                b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: duplicate field `id` at line 1 column 48"},"id":null}',
                b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: expected a request object, got a number"},"id":null}',
                b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: \\"jsonrpc\\" must be exactly \\"2.0\\""},"id":null}',
            ],
        )

    def test_method_not_found(self):
        self.transcript(
            b'{"jsonrpc":"2.0","method":"nope","id":1}\n',
            [b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found: no method named \\"nope\\""},"id":1}'],
        )

    def test_batch(self):
        # The spec allows batch elements in any order: compare as sets of elements.
        c = JsonRpcClient(self.sock())
        c.send_line(
            '[{"jsonrpc":"2.0","method":"rpc.ping","id":1},{"jsonrpc":"2.0","method":"rpc.ping"},'
            '{"jsonrpc":"2.0","method":"nope","id":2},42,'
            '{"jsonrpc":"2.0","method":"rpc.echo","params":{"k":"v"},"id":"x"}]'
        )
        line = c.recv_line()
        self.assertTrue(line.startswith(b"[{") and line.endswith(b"}]"), line)
        got = sorted(line[1:-1].split(b',{"jsonrpc"'))
        got = sorted(e if e.startswith(b"{") else b'{"jsonrpc"' + e for e in got)
        want = sorted([
            b'{"jsonrpc":"2.0","result":"pong","id":1}',
            b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found: no method named \\"nope\\""},"id":2}',
            b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: expected a request object, got a number"},"id":null}',
            b'{"jsonrpc":"2.0","result":{"k":"v"},"id":"x"}',
        ])
        self.assertEqual(got, want)

    def test_batch_of_notifications_only(self):
        self.transcript(
            b'[{"jsonrpc":"2.0","method":"rpc.ping"},{"jsonrpc":"2.0","method":"nope"}]\n'
            b'{"jsonrpc":"2.0","method":"rpc.ping","id":"after"}\n',
            [b'{"jsonrpc":"2.0","result":"pong","id":"after"}'],
        )

    def test_bad_batches(self):
        self.transcript(
            b"[]\n",
            [b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: empty batch"},"id":null}'],
        )
        self.transcript(
            b'[{"jsonrpc":"2.0",\n',
            [b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error: EOF while parsing an object at line 1 column 18"},"id":null}'],
        )
        self.transcript(
            b'[[{"jsonrpc":"2.0","method":"rpc.ping","id":1}]]\n',
            [b'[{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: expected a request object, got an array"},"id":null}]'],
        )

    def test_unsolicited_response_is_dropped(self):
        self.transcript(
            b'{"jsonrpc":"2.0","result":"x","id":5}\n{"jsonrpc":"2.0","method":"rpc.ping","id":6}\n',
            [b'{"jsonrpc":"2.0","result":"pong","id":6}'],
        )

    def test_last_line_without_lf(self):
        c = JsonRpcClient(self.sock())
        c.sock.sendall(
            b'{"jsonrpc":"2.0","method":"rpc.ping","id":1}\n'
            b'{"jsonrpc":"2.0","method":"rpc.echo","params":["last"],"id":2}'
        )
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.recv_line(), b'{"jsonrpc":"2.0","result":"pong","id":1}')
        self.assertEqual(c.recv_line(), b'{"jsonrpc":"2.0","result":["last"],"id":2}')
        with self.assertRaises(ConnectionClosed):
            c.recv_line()

    def test_60_spaces_then_a_request(self):
        self.transcript(
            b" " * 60 + b'{"jsonrpc":"2.0","method":"rpc.ping","id":1}\n',
            [b'{"jsonrpc":"2.0","result":"pong","id":1}'],
        )

    def test_61_whitespace_bytes_are_an_unknown_protocol(self):
        # "Once the daemon has seen 61 or more bytes and all of them are
        # whitespace, the connection is refused": nothing else is sent.
        self.transcript(b"\n" * 61, [UNRECOGNISED], close=True)

    def test_another_text_protocol_is_unknown(self):
        # An HTTP request line is HTTP (proto/http.md); this one is not.
        self.transcript(b"BREW / HTCPCP/1.0\r\n\r\n", [UNRECOGNISED], close=True)

    def test_http_gets_an_http_answer(self):
        # Section 2 step 4: a request method and its space make the connection HTTP.
        c = JsonRpcClient(self.sock())
        c.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(c.recv_line(), b"HTTP/1.1 200 OK\r")

    def test_whitespace_before_mcp1_is_an_unknown_protocol(self):
        # Section 2 step 3: MCP1 only when there was no leading whitespace.
        self.transcript(b" " + jc.encode_ping(1, b"x"), [UNRECOGNISED], close=True)


class JsonRpcSpecExamplesUnix(JsonRpcSpecExamples, DaemonTestCase):
    transport = "unix"


class JsonRpcSpecExamplesTcp(JsonRpcSpecExamples, DaemonTestCase):
    transport = "tcp"


class LimitTests(unittest.TestCase):
    """proto/jsonrpc.md section 9 "Limits", plus the same max-frame for MCP1
    (mcp1.md section 6), against ``--max-frame 64 --max-batch 2
    --max-connections 2``; a fresh daemon per test, over Unix."""

    def setUp(self):
        self.daemon = Daemon("--max-frame", "64", "--max-batch", "2", "--max-connections", "2")
        self.addCleanup(self.daemon.stop)

    def sock(self):
        s = jc.connect_unix(self.daemon.unix, timeout=PATIENCE)
        self.addCleanup(s.close)
        return s

    def test_line_of_64_bytes_is_accepted(self):
        line = b'{"jsonrpc":"2.0","method":"rpc.echo","params":["xxxxxx"],"id":1}'
        self.assertEqual(len(line), 64)
        c = JsonRpcClient(self.sock())
        c.send_line(line)
        self.assertEqual(c.recv_line(), b'{"jsonrpc":"2.0","result":["xxxxxx"],"id":1}')

    def test_line_of_65_bytes_closes(self):
        c = JsonRpcClient(self.sock())
        c.sock.sendall(
            b'{"jsonrpc":"2.0","method":"rpc.echo","params":["xxxxxxx"],"id":1}\n'
            b'{"jsonrpc":"2.0","method":"rpc.ping","id":2}\n'
        )
        self.assertEqual(
            c.recv_line(),
            b'{"jsonrpc":"2.0","error":{"code":-32001,"message":"Frame too large: a line exceeds the limit of 64 bytes; closing"},"id":null}',
        )
        with self.assertRaises(ConnectionClosed):
            c.recv_line()

    def test_batch_over_the_limit(self):
        c = JsonRpcClient(self.sock())
        c.send_line(b"[1,2,3]")
        self.assertEqual(
            c.recv_line(),
            b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request: batch of 3 entries exceeds the limit of 2"},"id":null}',
        )

    def hold_two_connections(self):
        held = [JsonRpcClient(self.sock()), Mcp1Client(self.sock())]
        self.assertEqual(held[0].call("rpc.ping"), "pong")  # sniffed and counted
        self.assertEqual(held[1].call("rpc.ping"), "pong")
        return held

    def test_too_many_connections_jsonrpc(self):
        self.hold_two_connections()
        third = JsonRpcClient(self.sock())
        self.assertEqual(
            third.recv_line(),
            b'{"jsonrpc":"2.0","error":{"code":-32002,"message":"Too many connections: the daemon serves at most 2 connections"},"id":null}',
        )
        with self.assertRaises(ConnectionClosed):
            third.recv_line()

    def test_too_many_connections_mcp1_is_bad_magic_from_server(self):
        self.hold_two_connections()
        third = Mcp1Client(self.sock())
        with self.assertRaises(ProtocolError) as ctx:
            third.recv()
        self.assertIn("bad magic from server", str(ctx.exception))
        self.assertIn('"code":-32002', str(ctx.exception))

    def test_mcp1_payload_limit(self):
        c = Mcp1Client(self.sock())
        self.assertEqual(c.ping(b"p" * 64), b"p" * 64)
        c.send_bytes(jc.encode_ping(9, b"p" * 65))
        frame = c.recv()
        self.assertEqual((frame.kind, frame.id, frame.error().code), (jc.ERROR, 9, -32001))
        with self.assertRaises(ConnectionClosed):
            c.recv()


class JsonRpcUnixTests(JsonRpcTests, DaemonTestCase):
    transport = "unix"


class JsonRpcTcpTests(JsonRpcTests, DaemonTestCase):
    transport = "tcp"


class Mcp1UnixTests(Mcp1Tests, DaemonTestCase):
    transport = "unix"


class Mcp1TcpTests(Mcp1Tests, DaemonTestCase):
    transport = "tcp"


class BothProtocolsTests(DaemonTestCase):
    """The two protocols side by side on one daemon."""

    transport = "unix"

    def test_same_answers_on_every_transport_and_protocol(self):
        for transport in ("unix", "tcp"):
            self.transport = transport
            j, m = JsonRpcClient(self.sock()), Mcp1Client(self.sock())
            with self.subTest(transport=transport):
                for params in ([1, 2], {"a": 1}, [], {}):
                    self.assertEqual(j.call("rpc.echo", params), m.call("rpc.echo", params))
                self.assertEqual(j.call("rpc.ping"), m.call("rpc.ping"))
                for client in (j, m):
                    with self.assertRaises(RpcError) as ctx:
                        client.call("no.such.method")
                    self.assertEqual(ctx.exception.code, -32601)


if __name__ == "__main__":
    unittest.main()
