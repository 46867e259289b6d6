#!/usr/bin/env python3
"""A small, dependency-free Python client for junctiond.

Written from the protocol documents alone (``proto/mcp1.md`` and
``proto/jsonrpc.md``), as an independent check that they are complete.
Standard library only.

Two protocols, both over a Unix socket or TCP:

* JSON-RPC 2.0, one JSON value per line (``\\n`` terminated, UTF-8):
  :class:`JsonRpcClient`.
* MCP1, Junction's binary framing (16-byte little-endian header, then the
  payload): :class:`Mcp1Client`, plus the pure helpers :func:`decode_first`
  (the daemon-side decode of the first frame in a byte string, in the shape of
  ``proto/vectors/mcp1.json``) and the ``encode_*`` functions.

Errors returned by the daemon for a request raise :class:`RpcError`. Problems
with the connection itself raise :class:`ProtocolError` or its subclass
:class:`ConnectionClosed`. Every read is bounded by the socket timeout given to
the connect helpers (``socket.timeout`` is raised when it expires).

Command line::

    python3 junction_client.py [--unix PATH | --tcp HOST:PORT]
                               [--proto jsonrpc|mcp1] METHOD [PARAMS_JSON]
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

__all__ = [
    "RpcError",
    "ProtocolError",
    "ConnectionClosed",
    "connect_unix",
    "connect_tcp",
    "connect",
    "default_unix_path",
    "JsonRpcClient",
    "Mcp1Client",
    "Frame",
    "decode_first",
    "parse_header",
    "encode_frame",
    "encode_request",
    "encode_notification",
    "encode_response",
    "encode_ping",
    "encode_pong",
    "encode_error",
    "decode_error_payload",
    "split_method",
]

DEFAULT_TIMEOUT = 20.0
"""Seconds any single socket operation may take before ``socket.timeout``."""

# ---------------------------------------------------------------------------
# MCP1 constants (proto/mcp1.md sections 1, 2, 5 and 6)
# ---------------------------------------------------------------------------

MAGIC = b"MCP1"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")  # magic, version, kind, flags, id, length
HEADER_SIZE = HEADER.size  # 16
assert HEADER_SIZE == 16

REQUEST = 0x01
RESPONSE = 0x02
NOTIFICATION = 0x03
ERROR = 0x04
PING = 0x06
PONG = 0x07
# 0x05 (CANCEL) is sent by the daemon only, to bus providers: from a client it is an unknown kind.

KIND_NAMES = {
    REQUEST: "request",
    RESPONSE: "response",
    NOTIFICATION: "notification",
    ERROR: "error",
    PING: "ping",
    PONG: "pong",
}

FLAG_RAW = 0x0001
RESERVED_FLAGS = 0xFFFE
RAW_ALLOWED_KINDS = (REQUEST, NOTIFICATION, RESPONSE)

MAX_METHOD_LEN = 255
DEFAULT_LIMIT = 1048576  # max-frame default: 1 MiB of payload
MAX_ID = 0xFFFFFFFF

# Error codes (proto/mcp1.md section 5; the JSON-RPC ones are shared).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_BUSY = -32000
FRAME_TOO_LARGE = -32001
TOO_MANY_CONNECTIONS = -32002
UNSUPPORTED_ENCODING = -32003
BAD_MAGIC = -32010
UNSUPPORTED_VERSION = -32011
RESERVED_BITS = -32012
UNKNOWN_KIND = -32013
TRUNCATED_FRAME = -32014

CLOSING_CODES = frozenset(
    {BAD_MAGIC, UNSUPPORTED_VERSION, FRAME_TOO_LARGE, TRUNCATED_FRAME, TOO_MANY_CONNECTIONS}
)
"""Codes after which the daemon closes the connection."""


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class RpcError(Exception):
    """An error answer from the daemon: ``code``, ``message``, optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(f"{code}: {message}" + ("" if data is None else f" ({data!r})"))
        self.code = code
        self.message = message
        self.data = data

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RpcError)
            and (self.code, self.message, self.data) == (other.code, other.message, other.data)
        )

    __hash__ = Exception.__hash__


class ProtocolError(Exception):
    """The peer broke the wire protocol (or refused us before speaking it)."""


class ConnectionClosed(ProtocolError):
    """The daemon closed the connection (clean EOF at a message boundary)."""


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------


def connect_unix(path: str, timeout: Optional[float] = DEFAULT_TIMEOUT) -> socket.socket:
    """A stream socket connected to the Unix socket at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def _split_host_port(address: str) -> Tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:7710
    return host, int(port)


def connect_tcp(
    address: Union[str, Tuple[str, int]], timeout: Optional[float] = DEFAULT_TIMEOUT
) -> socket.socket:
    """A TCP socket connected to ``"host:port"`` or ``(host, port)``, Nagle off."""
    host, port = _split_host_port(address) if isinstance(address, str) else address
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def default_unix_path() -> str:
    """junctiond's default socket: ``$XDG_RUNTIME_DIR/junction.sock``, else
    ``/tmp/junction-UID/junction.sock`` (as ``junctiond --help`` documents)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "junction.sock")
    return f"/tmp/junction-{os.getuid()}/junction.sock"


def connect(
    unix: Optional[str] = None,
    tcp: Optional[str] = None,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
) -> socket.socket:
    """Connect to ``tcp`` ("host:port") if given, else to the Unix socket
    ``unix`` (default: :func:`default_unix_path`)."""
    if unix is not None and tcp is not None:
        raise ValueError("give unix or tcp, not both")
    if tcp is not None:
        return connect_tcp(tcp, timeout)
    return connect_unix(unix if unix is not None else default_unix_path(), timeout)


class _Stream:
    """Buffered reads over a socket: exact byte counts and lines."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_exact(self, n: int) -> Optional[bytes]:
        """``n`` bytes, or None at EOF before the first byte; ProtocolError on
        EOF part way."""
        while len(self.buf) < n:
            if not self._fill():
                if self.buf:
                    got = bytes(self.buf)
                    self.buf.clear()
                    raise ProtocolError(f"connection closed after {len(got)} of {n} bytes: {got!r}")
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self, limit: int) -> Optional[bytes]:
        """One line without its ``\\n``; None at clean EOF."""
        start = 0
        while True:
            idx = self.buf.find(b"\n", start)
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[: idx + 1]
                return line
            if len(self.buf) > limit:
                raise ProtocolError(f"line longer than {limit} bytes")
            start = len(self.buf)
            if not self._fill():
                if self.buf:
                    got = bytes(self.buf)
                    self.buf.clear()
                    raise ProtocolError(f"connection closed inside a line: {got[:200]!r}")
                return None

    def read_available(self, limit: int = 4096) -> bytes:
        """Whatever is buffered, plus what arrives up to a newline or EOF
        (best effort, for error reports)."""
        try:
            while b"\n" not in self.buf and len(self.buf) < limit and self._fill():
                pass
        except OSError:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


# ---------------------------------------------------------------------------
# JSON-RPC 2.0 over newline-delimited JSON
# ---------------------------------------------------------------------------

_COMPACT = (",", ":")


def _check_jsonrpc_params(params: Any) -> None:
    if params is not None and not isinstance(params, (list, tuple, dict)):
        raise TypeError("JSON-RPC params must be an array or an object (or omitted)")


def _error_from_object(obj: Any) -> RpcError:
    if not isinstance(obj, dict) or not isinstance(obj.get("code"), int):
        raise ProtocolError(f"malformed JSON-RPC error object: {obj!r}")
    return RpcError(obj["code"], str(obj.get("message", "")), obj.get("data"))


class JsonRpcClient:
    """A JSON-RPC 2.0 client: one JSON value per ``\\n``-terminated line.

    Ids are integers counting from 1. ``call`` is send-and-wait; ``send`` and
    ``recv`` pipeline (any number of requests in flight, answers matched by id
    by the caller). Answers that arrive for other ids while ``call`` waits are
    kept and returned by later ``recv`` calls, in order.
    """

    def __init__(self, sock: socket.socket, max_line: int = 64 * 1048576):
        self.sock = sock
        self._stream = _Stream(sock)
        self._next_id = 1
        self._max_line = max_line
        self._stash: List[Any] = []

    @classmethod
    def connect(cls, unix: Optional[str] = None, tcp: Optional[str] = None,
                timeout: Optional[float] = DEFAULT_TIMEOUT) -> "JsonRpcClient":
        return cls(connect(unix=unix, tcp=tcp, timeout=timeout))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "JsonRpcClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- building and writing ------------------------------------------------

    def next_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    @staticmethod
    def request_object(method: str, params: Any = None, id: Any = None) -> Dict[str, Any]:
        """A request (``id`` given) or notification (``id`` None) object."""
        _check_jsonrpc_params(params)
        obj: Dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            obj["params"] = list(params) if isinstance(params, tuple) else params
        if id is not None:
            obj["id"] = id
        return obj

    def send_line(self, value: Union[bytes, str, Any]) -> None:
        """Write one line: bytes/str as given (a newline is added), anything
        else serialized as compact JSON."""
        if isinstance(value, str):
            data = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        else:
            data = json.dumps(value, separators=_COMPACT, ensure_ascii=False).encode("utf-8")
        if b"\n" in data:
            raise ValueError("a JSON-RPC message must not contain a raw newline")
        try:
            self.sock.sendall(data + b"\n")
        except (BrokenPipeError, ConnectionResetError) as e:
            # Closed on us (e.g. refused at the connection limit): report
            # what the daemon said before closing, if anything.
            msg = self._read_message()
            if isinstance(msg, dict) and "error" in msg:
                raise _error_from_object(msg["error"]) from e
            raise

    def send(self, method: str, params: Any = None, id: Any = None) -> Any:
        """Send a request without waiting; returns its id (fresh unless given)."""
        rid = self.next_id() if id is None else id
        self.send_line(self.request_object(method, params, rid))
        return rid

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification (no id, never answered)."""
        self.send_line(self.request_object(method, params))

    # -- reading ---------------------------------------------------------------

    def recv_line(self) -> bytes:
        """The next raw line (without ``\\n``); ConnectionClosed at EOF."""
        line = self._stream.read_line(self._max_line)
        if line is None:
            raise ConnectionClosed("daemon closed the connection")
        return line

    def _read_message(self) -> Any:
        line = self.recv_line()
        try:
            return json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError(f"daemon sent a line that is not JSON ({e}): {line[:200]!r}")

    def recv(self) -> Any:
        """The next answer: a response object, or a list for a batch (answers
        kept aside by ``call``/``batch`` come first)."""
        if self._stash:
            return self._stash.pop(0)
        return self._read_message()

    @staticmethod
    def outcome(response: Any) -> Any:
        """The result of one response object, or raise its RpcError."""
        if not isinstance(response, dict) or response.get("jsonrpc") != "2.0":
            raise ProtocolError(f"not a JSON-RPC 2.0 response: {response!r}")
        if "error" in response:
            raise _error_from_object(response["error"])
        if "result" not in response:
            raise ProtocolError(f"response has neither result nor error: {response!r}")
        return response["result"]

    def wait(self, rid: Any) -> Dict[str, Any]:
        """The response object for id ``rid`` (others are kept for ``recv``).

        An error answer with a null id (the daemon could not read the request,
        or refused the connection) raises :class:`RpcError` at once."""
        for i, msg in enumerate(self._stash):
            if isinstance(msg, dict) and msg.get("id") == rid:
                return self._stash.pop(i)
        while True:
            msg = self._read_message()
            if isinstance(msg, dict):
                if msg.get("id") == rid and ("result" in msg or "error" in msg):
                    return msg
                if msg.get("id") is None and "error" in msg:
                    raise _error_from_object(msg["error"])
            self._stash.append(msg)

    def call(self, method: str, params: Any = None) -> Any:
        """Call ``method`` and return its result, or raise :class:`RpcError`."""
        return self.outcome(self.wait(self.send(method, params)))

    def batch(self, entries: Sequence[Tuple[str, Any, bool]]) -> List[Any]:
        """Send one batch of ``(method, params, is_notification)`` entries.

        Returns a list aligned with ``entries``: None for a notification, the
        result for a successful request, an :class:`RpcError` *instance* (not
        raised) for a failed one. A batch of only notifications gets no answer
        and returns at once. If the daemon answers the whole batch with a
        single error object, that error is raised.
        """
        objs, ids = [], []
        for method, params, is_notification in entries:
            rid = None if is_notification else self.next_id()
            ids.append(rid)
            objs.append(self.request_object(method, params, rid))
        self.send_line(objs)
        wanted = {rid for rid in ids if rid is not None}
        if not wanted:
            return [None] * len(entries)
        while True:
            answer = self._read_message()
            if isinstance(answer, dict) and "error" in answer and answer.get("id") is None:
                raise _error_from_object(answer["error"])
            if isinstance(answer, list) and any(
                isinstance(r, dict) and r.get("id") in wanted for r in answer
            ):
                break
            self._stash.append(answer)  # someone else's (pipelined) answer
        by_id: Dict[Any, Any] = {}
        for response in answer:
            if not isinstance(response, dict):
                raise ProtocolError(f"batch answer holds a non-object: {response!r}")
            try:
                by_id[response.get("id")] = self.outcome(response)
            except RpcError as e:
                by_id[response.get("id")] = e
        missing = wanted - by_id.keys()
        if missing:
            raise ProtocolError(f"batch answer lacks ids {sorted(missing)}: {answer!r}")
        return [None if rid is None else by_id[rid] for rid in ids]


# ---------------------------------------------------------------------------
# MCP1: encoders
# ---------------------------------------------------------------------------


def encode_frame(kind: int, id: int, payload: bytes = b"", flags: int = 0,
                 version: int = VERSION, magic: bytes = MAGIC) -> bytes:
    """One frame with every header field chosen by the caller (no checks on
    kind/flags/version, so it can build bad frames for tests)."""
    return HEADER.pack(magic, version, kind, flags, id, len(payload)) + bytes(payload)


def _method_bytes(method: Union[str, bytes]) -> bytes:
    m = method.encode("utf-8") if isinstance(method, str) else bytes(method)
    if not 1 <= len(m) <= MAX_METHOD_LEN:
        raise ValueError(f"method name must be 1 to {MAX_METHOD_LEN} bytes, got {len(m)}")
    return m


def _call_payload(method: Union[str, bytes], body: bytes) -> bytes:
    m = _method_bytes(method)
    return struct.pack("<H", len(m)) + m + bytes(body)


def _check_id(id: int) -> None:
    if not 1 <= id <= MAX_ID:
        raise ValueError(f"request ids are 1 to {MAX_ID}, got {id}")


def encode_request(id: int, method: Union[str, bytes], body: bytes = b"", raw: bool = False) -> bytes:
    """A REQUEST: ``body`` is JSON text (or empty), or raw bytes with ``raw``."""
    _check_id(id)
    return encode_frame(REQUEST, id, _call_payload(method, body), FLAG_RAW if raw else 0)


def encode_notification(method: Union[str, bytes], body: bytes = b"", raw: bool = False) -> bytes:
    """A NOTIFICATION (id 0; never answered)."""
    return encode_frame(NOTIFICATION, 0, _call_payload(method, body), FLAG_RAW if raw else 0)


def encode_response(id: int, body: bytes, raw: bool = False) -> bytes:
    """A RESPONSE (what the daemon sends)."""
    return encode_frame(RESPONSE, id, body, FLAG_RAW if raw else 0)


def encode_ping(id: int, payload: bytes = b"") -> bytes:
    return encode_frame(PING, id, payload)


def encode_pong(id: int, payload: bytes = b"") -> bytes:
    return encode_frame(PONG, id, payload)


def encode_error(id: int, code: int, message: str, data: Any = None) -> bytes:
    """An ERROR: i32 code, u16 message_len, message, optional JSON data."""
    msg = message.encode("utf-8")
    if len(msg) > 0xFFFF:
        raise ValueError("error message longer than 65535 bytes")
    tail = b"" if data is None else json.dumps(data, separators=_COMPACT).encode("utf-8")
    return encode_frame(ERROR, id, struct.pack("<iH", code, len(msg)) + msg + tail)


def json_body(params: Any) -> bytes:
    """The JSON body for ``params`` (empty for None: no params)."""
    if params is None:
        return b""
    return json.dumps(params, separators=_COMPACT, ensure_ascii=False).encode("utf-8")


# ---------------------------------------------------------------------------
# MCP1: decoders
# ---------------------------------------------------------------------------


class Frame(NamedTuple):
    """One MCP1 frame as read off the wire."""

    kind: int
    flags: int
    id: int
    payload: bytes
    version: int = VERSION

    @property
    def raw(self) -> bool:
        return bool(self.flags & FLAG_RAW)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"0x{self.kind:02x}")

    def error(self) -> RpcError:
        """For an ERROR frame: its :class:`RpcError`."""
        if self.kind != ERROR:
            raise ProtocolError(f"not an ERROR frame: {self.kind_name}")
        return decode_error_payload(self.payload)

    def result(self) -> Any:
        """What the daemon answered: a RESPONSE's result (bytes when ``RAW``,
        else the decoded JSON), a PONG's payload; an ERROR raises."""
        if self.kind == ERROR:
            raise self.error()
        if self.kind == PONG:
            return self.payload
        if self.kind != RESPONSE:
            raise ProtocolError(f"daemon sent a {self.kind_name} frame")
        if self.raw:
            return self.payload
        if not self.payload.strip():
            return None  # the spec says this never happens: null is sent as `null`
        try:
            return json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError(f"RESPONSE body is not JSON ({e}): {self.payload[:200]!r}")


def parse_header(data: bytes) -> Tuple[bytes, int, int, int, int, int]:
    """``(magic, version, kind, flags, id, length)`` of a 16-byte header."""
    return HEADER.unpack_from(data, 0)


def decode_error_payload(payload: bytes) -> RpcError:
    """The code, message and optional JSON data of an ERROR payload."""
    if len(payload) < 6:
        raise ProtocolError(f"ERROR payload too short: {payload!r}")
    code, mlen = struct.unpack_from("<iH", payload, 0)
    if 6 + mlen > len(payload):
        raise ProtocolError(f"ERROR message_len {mlen} beyond the payload")
    try:
        message = payload[6 : 6 + mlen].decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"ERROR message is not UTF-8: {e}")
    rest = payload[6 + mlen :]
    data = None
    if rest.strip():
        try:
            data = json.loads(rest.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError(f"ERROR data is not JSON ({e}): {rest[:200]!r}")
    return RpcError(code, message, data)


def split_method(payload: bytes) -> Tuple[str, bytes]:
    """``(method, body)`` of a REQUEST/NOTIFICATION payload; ValueError when
    method_len is 0, over 255 or beyond the payload, or the method is not UTF-8."""
    if len(payload) < 2:
        raise ValueError("payload too short for method_len")
    (mlen,) = struct.unpack_from("<H", payload, 0)
    if mlen == 0 or mlen > MAX_METHOD_LEN:
        raise ValueError(f"method_len {mlen} out of 1..{MAX_METHOD_LEN}")
    if 2 + mlen > len(payload):
        raise ValueError(f"method_len {mlen} beyond the payload")
    method = payload[2 : 2 + mlen].decode("utf-8")  # UnicodeDecodeError is a ValueError
    return method, payload[2 + mlen :]


_JSON_WS = b" \t\n\r"  # RFC 8259 whitespace; nothing else (no form feed, no BOM)
_JSON_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"')
_JSON_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_JSON_LITERALS = (b"true", b"false", b"null")
_OPEN_TO_CLOSE = {0x5B: 0x5D, 0x7B: 0x7D}  # [ -> ], { -> }


def _skip_ws(b: bytes, i: int) -> int:
    n = len(b)
    while i < n and b[i] in _JSON_WS:
        i += 1
    return i


def _object_key(b: bytes, i: int) -> int:
    """Position after `"key" :` and the whitespace that follows, or -1."""
    m = _JSON_STRING.match(b, i)
    if not m:
        return -1
    i = _skip_ws(b, m.end())
    if i >= len(b) or b[i] != 0x3A:  # :
        return -1
    return _skip_ws(b, i + 1)


def is_one_json_value(body: bytes) -> bool:
    """True when ``body`` is UTF-8 holding exactly one JSON value (RFC 8259
    grammar), JSON whitespace around it allowed.

    An iterative checker rather than ``json.loads``: it has no nesting limit
    (the spec sets none, and a 1 MiB body can nest half a million deep), and
    it refuses Python's extensions (``NaN``, ``Infinity``). Escapes are checked
    for form only, so a lone ``\\ud800`` escape is accepted, as the grammar does.
    """
    b = bytes(body)
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    n = len(b)
    stack: List[int] = []  # the open containers' closing bytes
    i = _skip_ws(b, 0)
    while True:
        # Expect a value at i.
        if i >= n:
            return False
        c = b[i]
        if c in _OPEN_TO_CLOSE:
            close = _OPEN_TO_CLOSE[c]
            i = _skip_ws(b, i + 1)
            if i < n and b[i] == close:
                i += 1  # empty container: a complete value
            else:
                stack.append(close)
                if c == 0x7B:
                    i = _object_key(b, i)
                    if i < 0:
                        return False
                continue
        else:
            if c == 0x22:
                m = _JSON_STRING.match(b, i)
            elif c == 0x2D or 0x30 <= c <= 0x39:
                m = _JSON_NUMBER.match(b, i)
            else:
                m = None
                for lit in _JSON_LITERALS:
                    if b.startswith(lit, i):
                        i += len(lit)
                        break
                else:
                    return False
            if m is not None:
                i = m.end()
            elif c == 0x22 or c == 0x2D or 0x30 <= c <= 0x39:
                return False
        # After a complete value: close containers, or a comma and the next value.
        while True:
            i = _skip_ws(b, i)
            if not stack:
                return i == n
            if i >= n:
                return False
            c = b[i]
            if c == stack[-1]:
                stack.pop()
                i += 1
                continue
            if c != 0x2C:  # ,
                return False
            i = _skip_ws(b, i + 1)
            if stack[-1] == 0x7D:
                i = _object_key(b, i)
                if i < 0:
                    return False
            break


def _hex(b: bytes) -> str:
    return b.hex(" ")


def decode_first(data: bytes, limit: int = DEFAULT_LIMIT) -> Dict[str, Any]:
    """Decode the first frame a *client* sent in ``data``, as the daemon does.

    Returns the shape of the ``expect`` objects of ``proto/vectors/mcp1.json``:

    * ``{"frame": {"kind", "id", "flags", "body_hex"[, "method"]}}``;
    * ``{"need_more": True}``;
    * ``{"error": CODE, "close": BOOL, "id": N}``.

    The header is checked in the spec's order: magic (as soon as 4 bytes are
    in), version, length, kind, flags. Errors that close the connection carry
    the header's id when the header is complete and its magic right, else 0.
    Kind and flags errors are reported once the header is in (the frame is
    then skipped whole). A request/notification payload must then hold a
    1..255-byte UTF-8 method; a REQUEST must not use id 0; a non-RAW body must
    be empty or one UTF-8 JSON value.
    """
    data = bytes(data)
    if len(data) < 4:
        return {"need_more": True}
    if data[:4] != MAGIC:
        return {"error": BAD_MAGIC, "close": True, "id": 0}
    if len(data) < HEADER_SIZE:
        return {"need_more": True}
    _magic, version, kind, flags, fid, length = parse_header(data)
    if version != VERSION:
        return {"error": UNSUPPORTED_VERSION, "close": True, "id": fid}
    if length > limit:
        return {"error": FRAME_TOO_LARGE, "close": True, "id": fid}
    if kind not in KIND_NAMES:
        return {"error": UNKNOWN_KIND, "close": False, "id": fid}
    if flags & RESERVED_FLAGS or (flags & FLAG_RAW and kind not in RAW_ALLOWED_KINDS):
        return {"error": RESERVED_BITS, "close": False, "id": fid}
    if len(data) < HEADER_SIZE + length:
        return {"need_more": True}
    payload = data[HEADER_SIZE : HEADER_SIZE + length]
    frame: Dict[str, Any] = {"kind": KIND_NAMES[kind], "id": fid, "flags": flags}
    if kind in (REQUEST, NOTIFICATION):
        try:
            method, body = split_method(payload)
        except ValueError:
            return {"error": INVALID_REQUEST, "close": False, "id": fid}
        if kind == REQUEST and fid == 0:
            return {"error": INVALID_REQUEST, "close": False, "id": 0}
        if not flags & FLAG_RAW and body and not is_one_json_value(body):
            return {"error": PARSE_ERROR, "close": False, "id": fid}
        frame["method"] = method
        frame["body_hex"] = _hex(body)
    else:
        frame["body_hex"] = _hex(payload)
    return {"frame": frame}


# ---------------------------------------------------------------------------
# MCP1 client
# ---------------------------------------------------------------------------


class Mcp1Client:
    """An MCP1 client. The first bytes it sends are a frame's ``MCP1`` magic,
    which makes the connection MCP1 for its whole life.

    Ids run 1..4294967295 and wrap to 1. ``call`` is send-and-wait; ``send`` /
    ``send_ping`` and ``recv`` pipeline (answers may arrive in any order; match
    them by ``Frame.id``). Frames that arrive for other ids while ``call`` waits
    are kept and returned by later ``recv`` calls.
    """

    def __init__(self, sock: socket.socket, limit: int = DEFAULT_LIMIT):
        self.sock = sock
        self._stream = _Stream(sock)
        self._next_id = 1
        self.limit = limit
        self._stash: List[Frame] = []

    @classmethod
    def connect(cls, unix: Optional[str] = None, tcp: Optional[str] = None,
                timeout: Optional[float] = DEFAULT_TIMEOUT) -> "Mcp1Client":
        return cls(connect(unix=unix, tcp=tcp, timeout=timeout))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Mcp1Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------

    def next_id(self) -> int:
        rid = self._next_id
        self._next_id = 1 if rid >= MAX_ID else rid + 1
        return rid

    def send_bytes(self, data: bytes) -> None:
        """Write bytes as they are (for hand-built frames).

        If the daemon has already closed the connection (say it refused us at
        its connection limit), what it sent before closing is reported instead
        of a bare broken pipe."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            frame = self._read_frame()  # raises "bad magic from server" / ConnectionClosed
            if frame.kind == ERROR:
                raise frame.error() from e
            raise

    @staticmethod
    def _body(params: Any, raw: Optional[bytes]) -> Tuple[bytes, bool]:
        if raw is not None:
            if params is not None:
                raise ValueError("give params or raw, not both")
            return bytes(raw), True
        return json_body(params), False

    def send(self, method: str, params: Any = None, raw: Optional[bytes] = None,
             id: Optional[int] = None) -> int:
        """Send a REQUEST without waiting; returns its id.

        The body is ``json.dumps(params)`` (empty when None), or ``raw`` bytes
        with the RAW flag."""
        rid = self.next_id() if id is None else id
        body, is_raw = self._body(params, raw)
        self.send_bytes(encode_request(rid, method, body, is_raw))
        return rid

    def notify(self, method: str, params: Any = None, raw: Optional[bytes] = None) -> None:
        """Send a NOTIFICATION (never answered)."""
        body, is_raw = self._body(params, raw)
        self.send_bytes(encode_notification(method, body, is_raw))

    def send_ping(self, payload: bytes = b"", id: Optional[int] = None) -> int:
        """Send a PING without waiting; returns its id."""
        rid = self.next_id() if id is None else id
        self.send_bytes(encode_ping(rid, payload))
        return rid

    # -- reading -----------------------------------------------------------------

    def recv(self) -> Frame:
        """The next frame from the daemon (frames kept aside by ``call`` or
        ``wait`` come first).

        Raises :class:`ConnectionClosed` at EOF and :class:`ProtocolError` when
        the bytes are not an MCP1 frame (e.g. a JSON-RPC refusal line: "bad
        magic from server")."""
        if self._stash:
            return self._stash.pop(0)
        return self._read_frame()

    def _read_frame(self) -> Frame:
        try:
            head = self._stream.read_exact(4)
        except ProtocolError as e:
            raise ProtocolError(f"bad magic from server: {e}")
        if head is None:
            raise ConnectionClosed("daemon closed the connection")
        if head != MAGIC:
            text = (head + self._stream.read_available()).decode("utf-8", "replace")
            raise ProtocolError(f"bad magic from server: {text.rstrip()}")
        rest = self._stream.read_exact(HEADER_SIZE - 4)
        if rest is None:
            raise ProtocolError("connection closed inside a frame header")
        _magic, version, kind, flags, fid, length = parse_header(head + rest)
        if version != VERSION:
            raise ProtocolError(f"daemon sent frame version {version}")
        if length > max(self.limit, 64 * 1048576):
            raise ProtocolError(f"daemon sent a {length}-byte payload")
        payload = self._stream.read_exact(length) if length else b""
        if payload is None:
            raise ProtocolError("connection closed inside a frame payload")
        return Frame(kind, flags, fid, payload, version)

    def wait(self, rid: int) -> Frame:
        """The answer (RESPONSE, ERROR or PONG) with id ``rid``; others are kept
        for ``recv``. An ERROR with id 0 and a closing code raises at once."""
        for i, frame in enumerate(self._stash):
            if frame.id == rid and frame.kind in (RESPONSE, ERROR, PONG):
                return self._stash.pop(i)
        while True:
            frame = self._read_frame()
            if frame.id == rid and frame.kind in (RESPONSE, ERROR, PONG):
                return frame
            if frame.kind == ERROR and frame.id == 0:
                err = frame.error()
                if err.code in CLOSING_CODES:
                    raise err
            self._stash.append(frame)

    def call(self, method: str, params: Any = None, raw: Optional[bytes] = None) -> Any:
        """Call ``method``: the decoded JSON result, or bytes when the RESPONSE
        has RAW set; an ERROR raises :class:`RpcError`."""
        return self.wait(self.send(method, params, raw)).result()

    def ping(self, payload: bytes = b"") -> bytes:
        """PING the daemon; returns the PONG's payload."""
        frame = self.wait(self.send_ping(payload))
        if frame.kind != PONG:
            return frame.result()  # raises for an ERROR
        return frame.payload


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: Optional[Iterable[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Call one junctiond method and print its result as JSON."
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--unix", metavar="PATH", help=f"Unix socket (default {default_unix_path()})")
    where.add_argument("--tcp", metavar="HOST:PORT", help="TCP address")
    parser.add_argument("--proto", choices=("jsonrpc", "mcp1"), default="jsonrpc")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    parser.add_argument("method")
    parser.add_argument("params", nargs="?", metavar="PARAMS_JSON",
                        help="params as JSON (JSON-RPC: an array or object)")
    args = parser.parse_args(None if argv is None else list(argv))

    params = None
    if args.params is not None:
        try:
            params = json.loads(args.params)
        except ValueError as e:
            parser.error(f"PARAMS_JSON is not JSON: {e}")

    try:
        sock = connect(unix=args.unix, tcp=args.tcp, timeout=args.timeout)
    except (OSError, ValueError) as e:
        print(f"junction_client: cannot connect: {e}", file=sys.stderr)
        return 2
    try:
        if args.proto == "jsonrpc":
            client: Union[JsonRpcClient, Mcp1Client] = JsonRpcClient(sock)
        else:
            client = Mcp1Client(sock)
        try:
            result = client.call(args.method, params)
        except TypeError as e:
            parser.error(str(e))
    except RpcError as e:
        err = {"code": e.code, "message": e.message}
        if e.data is not None:
            err["data"] = e.data
        print(json.dumps({"error": err}), file=sys.stderr)
        return 1
    except (ProtocolError, OSError) as e:
        print(f"junction_client: {e}", file=sys.stderr)
        return 2
    finally:
        sock.close()
    if isinstance(result, bytes):
        # Raw bytes are not JSON: print them as hex in a wrapper object.
        print(json.dumps({"raw_hex": result.hex()}))
    else:
        print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
