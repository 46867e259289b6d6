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
    "DaemonError",
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
        cls = ERROR_CLASSES.get(code)
        return cls(message, data) if cls is not None else RpcError(code, message, data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RpcError) and (self.code, self.message, self.data) == (
            other.code,
            other.message,
            other.data,
        )

    __hash__ = Exception.__hash__

    def __reduce__(self):  # picklable, for executors and multiprocessing
        return (RpcError.of, (self.code, self.message, self.data))


class DaemonError(RpcError):
    """An error of one of the daemon's own codes: ``MethodNotFound(message,
    data)``, the code fixed by the class (raise one from a handler to answer
    it with its JSON-RPC meaning, e.g. ``InvalidParams``)."""

    def __init__(self, message: str, data: Any = None):
        super().__init__(type(self).code, message, data)


# The daemon's codes (proto/jsonrpc.md section 7, proto/mcp1.md section 5,
# proto/bus.md section 8).


class ParseError(DaemonError):
    """-32700: the message is not one JSON value."""

    code = -32700


class InvalidRequest(DaemonError):
    """-32600: not a valid request."""

    code = -32600


class MethodNotFound(DaemonError):
    """-32601: no method of that name."""

    code = -32601


class InvalidParams(DaemonError):
    """-32602: the method refused its params."""

    code = -32602


class InternalError(DaemonError):
    """-32603: the method failed."""

    code = -32603


class ServerBusy(DaemonError):
    """-32000: retry later."""

    code = -32000


class FrameTooLarge(DaemonError):
    """-32001: a message over max-frame; the daemon closed."""

    code = -32001


class TooManyConnections(DaemonError):
    """-32002: the daemon is full; it closed."""

    code = -32002


class UnsupportedEncoding(DaemonError):
    """-32003: raw bytes cannot travel over JSON-RPC."""

    code = -32003


class FrameTimeout(DaemonError):
    """-32004: a message took too long to arrive."""

    code = -32004


class OutOfFileDescriptors(DaemonError):
    """-32005: the daemon has no descriptor left."""

    code = -32005


class AccessDenied(DaemonError):
    """-32006: this user may not use the Unix socket."""

    code = -32006


class Unauthorized(DaemonError):
    """-32007: TCP needs rpc.auth with a right token."""

    code = -32007


class Forbidden(DaemonError):
    """-32008: the policy refuses this identity the action."""

    code = -32008


class BadMagic(DaemonError):
    """-32010: an MCP1 frame without the magic."""

    code = -32010


class UnsupportedVersion(DaemonError):
    """-32011: an MCP1 version the daemon lacks."""

    code = -32011


class ReservedBits(DaemonError):
    """-32012: reserved MCP1 flag bits set."""

    code = -32012


class UnknownKind(DaemonError):
    """-32013: unknown MCP1 frame kind."""

    code = -32013


class TruncatedFrame(DaemonError):
    """-32014: a frame cut short."""

    code = -32014


class NameTaken(DaemonError):
    """-32020: another connection (or the daemon) provides the name."""

    code = -32020


class NotPermitted(DaemonError):
    """-32021: the policy refuses the registration."""

    code = -32021


class ProviderGone(DaemonError):
    """-32022: the provider disconnected before answering."""

    code = -32022


class ProviderTimeout(DaemonError):
    """-32023: no answer from the provider within bus-call-timeout."""

    code = -32023


class SubscriberTooSlow(DaemonError):
    """-32024: events queued past the cap; the daemon closed."""

    code = -32024


class LimitReached(DaemonError):
    """-32025: a per-connection limit of the bus, or a batch past max-output."""

    code = -32025


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
