"""The errors of the client: one class per daemon error code, so callers can
``except junction.MethodNotFound`` rather than compare numbers.

Every error the daemon (or a bus provider) answers is an :class:`RpcError`
carrying ``code``, ``message`` and ``data`` exactly as they arrived; the codes
of proto/jsonrpc.md section 7 and proto/mcp1.md section 5 get a subclass. The
connection's own troubles are :class:`ConnectionLost` and
:class:`ProtocolError`, and a call that gets no answer in time raises
:class:`CallTimeout`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "JunctionError",
    "RpcError",
    "ConnectionLost",
    "ProtocolError",
    "CallTimeout",
    "ERROR_CLASSES",
]


class JunctionError(Exception):
    """Base of every error this package raises."""


class ConnectionLost(JunctionError, ConnectionError):
    """The connection is closed (or could not be made): a call that was
    pending may or may not have run."""


class ProtocolError(JunctionError):
    """The daemon sent bytes this client cannot read as its protocol."""


class CallTimeout(JunctionError, TimeoutError):
    """No answer within the call's timeout (the call may still run)."""


class RpcError(JunctionError):
    """An error answer: ``code``, ``message`` and ``data`` (None when absent),
    as the daemon or the method's provider sent them."""

    code: int = 0

    def __init__(self, code: int, message: str, data: Any = None):
        text = f"{code}: {message}"
        if data is not None:
            text += f" (data: {data!r})"
        super().__init__(text)
        self.code = code
        self.message = message
        self.data = data

    @staticmethod
    def of(code: int, message: str, data: Any = None) -> "RpcError":
        """The error of ``code``'s own class (plain RpcError for codes of
        methods and providers)."""
        return ERROR_CLASSES.get(code, RpcError)(code, message, data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RpcError) and (self.code, self.message, self.data) == (
            other.code,
            other.message,
            other.data,
        )

    __hash__ = Exception.__hash__

    def __reduce__(self):  # picklable, for executors and multiprocessing
        return (RpcError.of, (self.code, self.message, self.data))


def _error(name: str, code: int, doc: str) -> Type[RpcError]:
    cls = type(name, (RpcError,), {"__doc__": f"{code}: {doc}", "code": code})
    cls.__module__ = __name__
    return cls


# The daemon's codes (proto/jsonrpc.md section 7, proto/mcp1.md section 5,
# proto/bus.md section 8).
ParseError = _error("ParseError", -32700, "the message is not one JSON value")
InvalidRequest = _error("InvalidRequest", -32600, "not a valid request")
MethodNotFound = _error("MethodNotFound", -32601, "no method of that name")
InvalidParams = _error("InvalidParams", -32602, "the method refused its params")
InternalError = _error("InternalError", -32603, "the method failed")
ServerBusy = _error("ServerBusy", -32000, "retry later")
FrameTooLarge = _error("FrameTooLarge", -32001, "a message over max-frame; the daemon closed")
TooManyConnections = _error("TooManyConnections", -32002, "the daemon is full; it closed")
UnsupportedEncoding = _error("UnsupportedEncoding", -32003, "raw bytes cannot travel over JSON-RPC")
FrameTimeout = _error("FrameTimeout", -32004, "a message took too long to arrive")
OutOfFileDescriptors = _error("OutOfFileDescriptors", -32005, "the daemon has no descriptor left")
AccessDenied = _error("AccessDenied", -32006, "this user may not use the Unix socket")
Unauthorized = _error("Unauthorized", -32007, "TCP needs rpc.auth with a right token")
Forbidden = _error("Forbidden", -32008, "the policy refuses this identity the action")
BadMagic = _error("BadMagic", -32010, "an MCP1 frame without the magic")
UnsupportedVersion = _error("UnsupportedVersion", -32011, "an MCP1 version the daemon lacks")
ReservedBits = _error("ReservedBits", -32012, "reserved MCP1 flag bits set")
UnknownKind = _error("UnknownKind", -32013, "unknown MCP1 frame kind")
TruncatedFrame = _error("TruncatedFrame", -32014, "a frame cut short")
NameTaken = _error("NameTaken", -32020, "another connection (or the daemon) provides the name")
NotPermitted = _error("NotPermitted", -32021, "the policy refuses the registration")
ProviderGone = _error("ProviderGone", -32022, "the provider disconnected before answering")
ProviderTimeout = _error("ProviderTimeout", -32023, "no answer from the provider in bus-call-timeout")
SubscriberTooSlow = _error("SubscriberTooSlow", -32024, "events queued past the cap; closed")
LimitReached = _error("LimitReached", -32025, "a per-connection limit of the bus or a batch")

ERROR_CLASSES: Dict[int, Type[RpcError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        ServerBusy,
        FrameTooLarge,
        TooManyConnections,
        UnsupportedEncoding,
        FrameTimeout,
        OutOfFileDescriptors,
        AccessDenied,
        Unauthorized,
        Forbidden,
        BadMagic,
        UnsupportedVersion,
        ReservedBits,
        UnknownKind,
        TruncatedFrame,
        NameTaken,
        NotPermitted,
        ProviderGone,
        ProviderTimeout,
        SubscriberTooSlow,
        LimitReached,
    )
}
"""Code -> class, for the codes the daemon itself sends."""

__all__ += [cls.__name__ for cls in ERROR_CLASSES.values()]


def error_from_object(obj: Any) -> Optional[RpcError]:
    """A JSON-RPC ``error`` member as an RpcError; None when malformed."""
    if not isinstance(obj, dict):
        return None
    code, message = obj.get("code"), obj.get("message")
    if not isinstance(code, int) or isinstance(code, bool) or not isinstance(message, str):
        return None
    return RpcError.of(code, message, obj.get("data"))
