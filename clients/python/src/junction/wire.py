"""The two wire formats, without I/O: JSON-RPC 2.0 lines (proto/jsonrpc.md)
and MCP1 frames (proto/mcp1.md), and one shape for what the daemon sends in
either, :class:`Incoming`."""

from __future__ import annotations

import json
import struct
from typing import Any, List, NamedTuple, Optional, Tuple, Union

from .errors import ProtocolError, RpcError, error_from_object

MAGIC = b"MCP1"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")  # magic, version, kind, flags, id, length
HEADER_SIZE = 16

REQUEST, RESPONSE, NOTIFICATION, ERROR, CANCEL, PING, PONG = 1, 2, 3, 4, 5, 6, 7
FLAG_RAW = 0x0001
MAX_METHOD_LEN = 255
MAX_ID = 0xFFFFFFFF

EVENT_METHOD = "bus.event"
CANCEL_METHOD = "bus.cancel"

Json = Any
Body = Union[Json, bytes]


def dumps(value: Json) -> str:
    """Compact JSON, UTF-8 kept, NaN refused (the daemon would refuse it)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Incoming(NamedTuple):
    """One message from the daemon, in either protocol.

    ``kind`` is ``"response"``, ``"error"``, ``"request"`` (a call the bus
    forwards to this provider), ``"notification"`` (``bus.event``, or a
    notification forwarded to a provider), ``"cancel"`` (a forwarded call
    that will not be answered to anyone) or ``"batch"`` (JSON-RPC only; then
    ``value`` is the list of Incoming answers).
    """

    kind: str
    id: Any = None
    method: Optional[str] = None
    value: Any = None  # params, result, or the batch's answers
    raw: bool = False  # value is bytes (MCP1 RAW)
    error: Optional[RpcError] = None


# --- JSON-RPC ----------------------------------------------------------------


def jsonrpc_check_params(params: Json) -> Json:
    if params is None or isinstance(params, (list, dict)):
        return params
    if isinstance(params, tuple):
        return list(params)
    raise TypeError("JSON-RPC params must be a list, a tuple or a dict (or None)")


def jsonrpc_request(method: str, params: Json, id: Optional[int]) -> dict:
    obj: dict = {"jsonrpc": "2.0", "method": method}
    params = jsonrpc_check_params(params)
    if params is not None:
        obj["params"] = params
    if id is not None:
        obj["id"] = id
    return obj


def jsonrpc_line(obj: Any) -> bytes:
    return dumps(obj).encode("utf-8") + b"\n"


def jsonrpc_result(id: Any, result: Json) -> bytes:
    return jsonrpc_line({"jsonrpc": "2.0", "result": result, "id": id})


def jsonrpc_error(id: Any, error: RpcError) -> bytes:
    obj: dict = {"code": error.code, "message": error.message}
    if error.data is not None:
        obj["data"] = error.data
    return jsonrpc_line({"jsonrpc": "2.0", "error": obj, "id": id})


def _jsonrpc_one(obj: Any) -> Incoming:
    if not isinstance(obj, dict):
        raise ProtocolError(f"the daemon sent a JSON value that is no message: {obj!r:.200}")
    method = obj.get("method")
    if isinstance(method, str):
        if method == CANCEL_METHOD and "id" not in obj:
            params = obj.get("params") or {}
            return Incoming("cancel", id=params.get("id"), value=params.get("reason"))
        if "id" in obj:
            return Incoming("request", id=obj["id"], method=method, value=obj.get("params"))
        return Incoming("notification", method=method, value=obj.get("params"))
    if "error" in obj:
        error = error_from_object(obj["error"])
        if error is None:
            raise ProtocolError(f"malformed error object from the daemon: {obj!r:.200}")
        return Incoming("error", id=obj.get("id"), error=error)
    if "result" in obj:
        return Incoming("response", id=obj.get("id"), value=obj["result"])
    raise ProtocolError(f"the daemon sent an object that is no message: {obj!r:.200}")


def jsonrpc_parse(line: bytes) -> Incoming:
    """One line from the daemon (without its LF)."""
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"the daemon sent a line that is not JSON ({e}): {line[:200]!r}")
    if isinstance(value, list):
        return Incoming("batch", value=[_jsonrpc_one(entry) for entry in value])
    return _jsonrpc_one(value)


# --- MCP1 ----------------------------------------------------------------------


def mcp1_frame(kind: int, id: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, flags, id, len(payload)) + payload


def mcp1_body(params: Body) -> Tuple[bytes, int]:
    """A body and its flags: bytes go raw (RAW set), anything else as JSON
    (None: an empty body, no params)."""
    if isinstance(params, (bytes, bytearray, memoryview)):
        return bytes(params), FLAG_RAW
    if params is None:
        return b"", 0
    if isinstance(params, tuple):
        params = list(params)
    return dumps(params).encode("utf-8"), 0


def _method_bytes(method: str) -> bytes:
    encoded = method.encode("utf-8")
    if not 1 <= len(encoded) <= MAX_METHOD_LEN:
        raise ValueError(f"a method name is 1 to {MAX_METHOD_LEN} bytes of UTF-8, got {len(encoded)}")
    return encoded


def mcp1_call(kind: int, id: int, method: str, params: Body) -> bytes:
    """A REQUEST (``kind`` REQUEST, id 1..2^32-1) or NOTIFICATION (id 0)."""
    name = _method_bytes(method)
    body, flags = mcp1_body(params)
    return mcp1_frame(kind, id, struct.pack("<H", len(name)) + name + body, flags)


def mcp1_response(id: int, result: Body) -> bytes:
    body, flags = mcp1_body(result)
    return mcp1_frame(RESPONSE, id, body or b"null", flags)


def mcp1_error(id: int, error: RpcError) -> bytes:
    message = error.message.encode("utf-8")[:0xFFFF]
    message = message.decode("utf-8", "ignore").encode("utf-8")  # cut on a character
    data = b"" if error.data is None else dumps(error.data).encode("utf-8")
    payload = struct.pack("<iH", error.code, len(message)) + message + data
    return mcp1_frame(ERROR, id, payload)


def parse_header(header: bytes) -> Tuple[int, int, int, int]:
    """(kind, flags, id, length) of a 16-byte header from the daemon."""
    magic, version, kind, flags, id, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic from server: {header!r}")
    if version != VERSION:
        raise ProtocolError(f"the daemon sent MCP1 version {version}")
    return kind, flags, id, length


def _decode_body(body: bytes, flags: int) -> Body:
    if flags & FLAG_RAW:
        return body
    if not body.strip():
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"the daemon sent a body that is not JSON ({e}): {body[:200]!r}")


def parse_error_payload(payload: bytes) -> RpcError:
    if len(payload) < 6:
        raise ProtocolError(f"malformed ERROR frame from the daemon: {payload!r}")
    code, length = struct.unpack_from("<iH", payload)
    if 6 + length > len(payload):
        raise ProtocolError(f"malformed ERROR frame from the daemon: {payload[:200]!r}")
    message = payload[6 : 6 + length].decode("utf-8", "replace")
    rest = payload[6 + length :]
    data = None
    if rest.strip():
        try:
            data = json.loads(rest.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            data = None  # as the daemon does: data that is not JSON is left out
    return RpcError.of(code, message, data)


def mcp1_parse(kind: int, flags: int, id: int, payload: bytes) -> Optional[Incoming]:
    """One frame from the daemon; None for kinds a client ignores (PONG)."""
    if kind == RESPONSE:
        try:
            return Incoming("response", id=id, value=_decode_body(payload, flags), raw=bool(flags & FLAG_RAW))
        except ProtocolError as e:
            return Incoming("error", id=id, error=RpcError.of(-32603, str(e)))
    if kind == ERROR:
        return Incoming("error", id=id, error=parse_error_payload(payload))
    if kind in (REQUEST, NOTIFICATION):
        if len(payload) < 2:
            raise ProtocolError("a call frame from the daemon without its method")
        (length,) = struct.unpack_from("<H", payload)
        method = payload[2 : 2 + length].decode("utf-8", "replace")
        body = payload[2 + length :]
        value = _decode_body(body, flags)
        raw = bool(flags & FLAG_RAW)
        if kind == REQUEST:
            return Incoming("request", id=id, method=method, value=value, raw=raw)
        return Incoming("notification", method=method, value=value, raw=raw)
    if kind == CANCEL:
        reason = _decode_body(payload, 0)
        return Incoming("cancel", id=id, value=reason.get("reason") if isinstance(reason, dict) else None)
    return None


def refusal(text: bytes) -> Optional[RpcError]:
    """The JSON-RPC error line a daemon sends at accept (-32002, -32005,
    -32006), which an MCP1 client reads where it expected a frame."""
    try:
        obj = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(obj, dict):
        return error_from_object(obj.get("error"))
    return None


__all__: List[str] = ["Incoming", "dumps"]
