"""One connection to junctiond, in JSON-RPC 2.0 or MCP1, over its Unix socket
or TCP, and the calls over it.

One reader task per connection reads what the daemon sends: answers go to
the calls waiting for them (matched by id); calls the bus forwards and events
go to the hooks :class:`~junction.aio.AsyncClient` fills in. When the
connection is lost, waiting calls fail with :class:`ConnectionLost`; unless
``reconnect=False``, the client then connects again with exponential backoff,
authenticates again (reading the token file afresh: the daemon makes a new
token at each start), lets the subclass restore what it had (``_restore``),
and carries on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import wire
from .endpoint import default_socket_path, find_token_file, read_token, split_address
from .errors import CallTimeout, ConnectionLost, JunctionError, ProtocolError, RpcError
from .wire import Body, Incoming

__all__ = ["Connection", "Notification", "DEFAULT_TIMEOUT", "DEFAULT_MAX_MESSAGE"]

log = logging.getLogger("junction")

DEFAULT_TIMEOUT = 30.0
"""Seconds a call waits for its answer unless told otherwise."""

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
"""The longest line or frame payload read from the daemon. The daemon never
cuts what it sends (proto/bus.md section 10); this bounds this client's
memory, well above the daemon's default max-frame of 1 MiB."""

# Error codes after which the daemon closes the connection.
_CLOSING = frozenset({-32001, -32002, -32004, -32005, -32006, -32007, -32010, -32011, -32014, -32024})


class Notification(NamedTuple):
    """A batch entry that is a notification (no answer)."""

    method: str
    params: Body = None


BatchEntry = Union[str, Tuple[str], Tuple[str, Body], Notification]


class Connection:
    """A connection to junctiond and the calls over it; :class:`AsyncClient`
    adds the service bus. Make one with :func:`~junction.aio.connect` (or
    ``await AsyncClient(...).open()``).

    ``unix``: the Unix socket (default: JUNCTION_UNIX, else
    :func:`~junction.default_socket_path`). ``tcp``: ``HOST:PORT``; it wins
    over ``unix``, which then only says where the daemon's token is, as for
    the ``junction`` CLI. ``protocol``: ``"jsonrpc"`` or ``"mcp1"`` (default:
    JUNCTION_PROTO, else jsonrpc). On TCP the client sends ``rpc.auth`` first
    with ``token``, else the content of ``token_file`` (default:
    JUNCTION_AUTH_TOKEN_FILE, else the token the daemon generated,
    ``<socket>.token``, when this user may read it); ``auth=False`` sends
    none. ``timeout``: seconds a call waits for its answer (None: forever).
    ``reconnect``: connect again after the connection is lost (the default),
    waiting ``backoff[0]`` seconds at first, doubling up to ``backoff[1]``.
    """

    def __init__(
        self,
        unix: Optional[str] = None,
        tcp: Optional[str] = None,
        *,
        protocol: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        auth: bool = True,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        reconnect: bool = True,
        backoff: Tuple[float, float] = (0.05, 2.0),
        max_message: int = DEFAULT_MAX_MESSAGE,
    ):
        protocol = protocol or os.environ.get("JUNCTION_PROTO") or "jsonrpc"
        if protocol not in ("jsonrpc", "mcp1"):
            raise ValueError(f"protocol is 'jsonrpc' or 'mcp1', got {protocol!r}")
        self.protocol = protocol
        self.unix = unix or os.environ.get("JUNCTION_UNIX") or default_socket_path()
        self.tcp = tcp
        if tcp is not None:
            split_address(tcp)  # a clear error now rather than at connect
        self._token = token
        self._token_file = token_file or os.environ.get("JUNCTION_AUTH_TOKEN_FILE") or None
        self._auth = auth
        self._authenticated = False  # a token has been accepted: reconnects need one too
        self.timeout = timeout
        self.reconnect = reconnect
        self.backoff = backoff
        self.max_message = max_message
        self.connections = 0
        """How many times this client has connected (and, after the first,
        registered and subscribed again)."""
        self._ids = itertools.count(1)
        self._writer: Optional[asyncio.StreamWriter] = None
        self._reader_task: Optional[asyncio.Task] = None
        self._reconnect_task: Optional[asyncio.Task] = None
        self._pending: Dict[Any, asyncio.Future] = {}
        self._batches: Dict[Any, asyncio.Future] = {}  # first id of a batch -> its future
        self._batch_of: Dict[Any, Any] = {}  # every id of a batch -> its first id
        self._fatal: Optional[RpcError] = None
        self._connected: Optional[asyncio.Event] = None
        self._closed = False

    # --- connecting -------------------------------------------------------------

    @property
    def address(self) -> str:
        """``tcp:HOST:PORT`` or ``unix:PATH``."""
        return f"tcp:{self.tcp}" if self.tcp else f"unix:{self.unix}"

    @property
    def connected(self) -> bool:
        return self._connected is not None and self._connected.is_set()

    def _secret(self) -> Optional[str]:
        if self._token is not None:
            return self._token
        path = self._token_file or find_token_file(self.tcp or "", self.unix)
        return read_token(path) if path else None

    async def open(self) -> "Connection":
        """Connects (and authenticates, on TCP). Raises ConnectionLost when
        the daemon cannot be reached, RpcError when it refuses."""
        self._connected = asyncio.Event()
        await self._open(restore=False)
        return self

    async def _open(self, restore: bool) -> None:
        secret: Optional[str] = None
        if self.tcp and self._auth:
            secret = self._secret()
            # A restarted daemon writes its new token as it starts: until it
            # has, connecting without one would only be refused.
            if secret is None and self._authenticated:
                raise ConnectionLost("no token to authenticate with yet")
        limit = self.max_message + 16
        try:
            if self.tcp:
                host, port = split_address(self.tcp)
                reader, writer = await asyncio.open_connection(host, port, limit=limit)
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                reader, writer = await asyncio.open_unix_connection(self.unix, limit=limit)
        except OSError as e:
            raise ConnectionLost(f"cannot connect to {self.address}: {e}") from e
        self._writer = writer
        self._fatal = None
        self._reader_task = asyncio.ensure_future(self._read_loop(reader, writer))
        try:
            if secret is not None:
                await self._request("rpc.auth", {"token": secret}, self.timeout, ready=False)
                self._authenticated = True
            if restore:
                await self._restore()
        except BaseException:
            self._drop(writer, None)
            raise
        self.connections += 1
        assert self._connected is not None
        self._connected.set()

    async def _restore(self) -> None:
        """After a reconnect, before the client counts as connected: what a
        subclass had set up on the daemon is set up again (AsyncClient: its
        names and subscriptions)."""

    async def wait_connected(self, connections: int = 1, timeout: Optional[float] = None) -> None:
        """Waits until this client has connected ``connections`` times in all
        (pass ``client.connections + 1`` before a daemon restart to wait for
        the reconnect) and is connected."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not (self.connections >= connections and self.connected):
            if self._closed:
                raise ConnectionLost("the client is closed")
            assert self._connected is not None
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                # Wake at least every 50 ms: the event is set again by each reconnect.
                await asyncio.wait_for(self._connected.wait(), 0.05 if left is None else min(left, 0.05))
                if self.connections < connections:
                    await asyncio.sleep(0.01)
            except asyncio.TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    raise CallTimeout(f"not connected {connections} times within {timeout}s") from None

    async def _reconnect_loop(self) -> None:
        delay = self.backoff[0]
        while not self._closed:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            if self._closed:
                return
            try:
                await self._open(restore=True)
                log.info("junction: reconnected to %s", self.address)
                return
            except Exception as e:  # keep trying whatever failed (the token not yet written...)
                log.debug("junction: reconnecting to %s: %s", self.address, e)
            delay = min(delay * 2, self.backoff[1])

    async def close(self) -> None:
        """Closes the connection and stops reconnecting; waiting calls fail
        with ConnectionLost."""
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self._writer is not None:
            self._drop(self._writer, ConnectionLost("the client was closed"))
        self._on_close()
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            try:
                await task
            except BaseException:
                pass

    async def __aenter__(self) -> "Connection":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # --- reading ----------------------------------------------------------------

    async def _read_one(self, reader: asyncio.StreamReader) -> Optional[Incoming]:
        """The next message; None at the end of the connection."""
        if self.protocol == "jsonrpc":
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as e:
                if e.partial.strip():
                    raise ProtocolError(f"connection closed inside a line: {e.partial[:200]!r}")
                return None
            except asyncio.LimitOverrunError:
                raise ProtocolError(f"the daemon sent a line over {self.max_message} bytes")
            return wire.jsonrpc_parse(line.rstrip(b"\r\n"))
        while True:
            try:
                header = await reader.readexactly(wire.HEADER_SIZE)
            except asyncio.IncompleteReadError as e:
                if e.partial[:1] == b"{":  # a JSON-RPC refusal at accept
                    self._refused(e.partial)
                    return None
                if e.partial:
                    raise ProtocolError(f"connection closed inside a frame header: {e.partial!r}")
                return None
            if header[:4] != wire.MAGIC:
                if header[:1] == b"{":
                    try:
                        rest = await reader.readuntil(b"\n")
                    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                        rest = getattr(e, "partial", b"")
                    self._refused(header + rest)
                    return None
                raise ProtocolError(f"bad magic from server: {header!r}")
            kind, flags, fid, length = wire.parse_header(header)
            if length > self.max_message:
                raise ProtocolError(f"the daemon sent a {length}-byte payload (limit {self.max_message})")
            try:
                payload = await reader.readexactly(length) if length else b""
            except asyncio.IncompleteReadError:
                raise ProtocolError("connection closed inside a frame payload")
            message = wire.mcp1_parse(kind, flags, fid, payload)
            if message is not None:
                return message

    def _refused(self, text: bytes) -> None:
        error = wire.refusal(text.strip())
        if error is None:
            raise ProtocolError(f"bad magic from server: {text[:200]!r}")
        self._fatal = error

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        error: Optional[BaseException] = None
        try:
            while True:
                message = await self._read_one(reader)
                if message is None:
                    break
                self._dispatch(message, writer)
        except asyncio.CancelledError:
            error = ConnectionLost("the client was closed")
        except (ProtocolError, OSError) as e:
            error = e
            log.warning("junction: connection to %s lost: %s", self.address, e)
        finally:
            self._drop(writer, error)

    def _dispatch(self, message: Incoming, writer: asyncio.StreamWriter) -> None:
        kind = message.kind
        if kind in ("response", "error"):
            if message.error is not None and message.error.code in _CLOSING:
                self._fatal = message.error
            future = self._pending.get(message.id) if message.id is not None else None
            if future is None and message.id is None and message.error is not None:
                # A JSON-RPC error no request can be named in: a whole batch
                # refused, or the connection's own (then it closes).
                if message.error.code not in _CLOSING and self._batches:
                    future = self._batches[next(iter(self._batches))]
                else:
                    self._fatal = message.error
            elif future is None and message.id in self._batch_of:
                future = self._batches.get(self._batch_of[message.id])
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "batch":
            for answer in message.value:
                first = self._batch_of.get(answer.id)
                if first is not None:
                    future = self._batches.get(first)
                    if future is not None and not future.done():
                        future.set_result(message)
                    return
        elif kind == "request" or (kind == "notification" and message.method != wire.EVENT_METHOD):
            self._on_call(message, writer)
        elif kind == "notification":
            self._on_event(message.value)
        elif kind == "cancel":
            self._on_cancel(message.id)

    # Hooks for what the daemon sends on its own (AsyncClient serves them).

    def _on_call(self, message: Incoming, writer: asyncio.StreamWriter) -> None:
        """A call or notification the bus forwards to this connection."""

    def _on_event(self, params: Any) -> None:
        """The params of a ``bus.event``."""

    def _on_cancel(self, rid: Any) -> None:
        """A forwarded call that will not be answered to anyone."""

    def _on_lost(self) -> None:
        """The connection is gone: what ran for it stops."""

    def _on_close(self) -> None:
        """The client is closed for good."""

    def _drop(self, writer: asyncio.StreamWriter, error: Optional[BaseException]) -> None:
        """The end of one connection: fails what waited on it, and starts
        reconnecting when it had been established."""
        if writer is not self._writer:
            return
        self._writer = None
        was_connected = self.connected
        if self._connected is not None:
            self._connected.clear()
        try:
            writer.close()
        except Exception:
            pass
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
        failure: BaseException
        if self._fatal is not None:
            failure = self._fatal
        elif isinstance(error, JunctionError):
            failure = error
        else:
            failure = ConnectionLost(f"connection to {self.address} lost" + (f": {error}" if error else ""))
        for future in list(self._pending.values()) + list(self._batches.values()):
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()
        self._batches.clear()
        self._batch_of.clear()
        self._on_lost()
        if was_connected and self.reconnect and not self._closed:
            log.info("junction: connection to %s lost; reconnecting", self.address)
            self._reconnect_task = asyncio.ensure_future(self._reconnect_loop())

    # --- writing ----------------------------------------------------------------

    def _next_id(self) -> int:
        while True:
            rid = next(self._ids)
            if rid > wire.MAX_ID:
                self._ids = itertools.count(1)
                continue
            if rid not in self._pending and rid not in self._batch_of:
                return rid

    async def _ready(self, deadline: Optional[float]) -> asyncio.StreamWriter:
        """The connection, waiting for a reconnect in progress until ``deadline``."""
        if self._closed:
            raise ConnectionLost("the client is closed")
        if self._writer is not None and self.connected and self._fatal is None:
            return self._writer
        if self._fatal is not None and (self._reconnect_task is None or self._reconnect_task.done()):
            # The daemon sent an error after which it closes: the end is near.
            raise ConnectionLost(f"the daemon is closing the connection: {self._fatal}")
        if self._reconnect_task is None or self._reconnect_task.done() or self._connected is None:
            raise ConnectionLost(f"not connected to {self.address}")
        loop = asyncio.get_running_loop()
        left = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            await asyncio.wait_for(self._connected.wait(), left)
        except asyncio.TimeoutError:
            raise ConnectionLost(f"not connected to {self.address} (reconnecting)") from None
        return await self._ready(deadline)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            await writer.drain()
        except (OSError, RuntimeError) as e:
            raise ConnectionLost(f"connection to {self.address} lost: {e}") from e

    def _encode_call(self, method: str, params: Body, rid: Optional[int]) -> bytes:
        if self.protocol == "mcp1":
            if rid is None:
                return wire.mcp1_call(wire.NOTIFICATION, 0, method, params)
            return wire.mcp1_call(wire.REQUEST, rid, method, params)
        if isinstance(params, (bytes, bytearray, memoryview)):
            raise TypeError("raw (bytes) params need protocol='mcp1'")
        return wire.jsonrpc_line(wire.jsonrpc_request(method, params, rid))

    async def _request(self, method: str, params: Body, timeout: Optional[float], ready: bool = True) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if ready:
            writer = await self._ready(deadline)
        elif self._writer is None:
            raise ConnectionLost(f"connection to {self.address} lost") from None
        else:
            writer = self._writer
        rid = self._next_id()
        data = self._encode_call(method, params, rid)
        future = loop.create_future()
        self._pending[rid] = future
        try:
            await self._write(writer, data)
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                answer: Incoming = await asyncio.wait_for(future, left)
            except asyncio.TimeoutError:
                raise CallTimeout(f"no answer to {method} within {timeout}s") from None
        finally:
            self._pending.pop(rid, None)
        if answer.error is not None:
            raise answer.error
        return answer.value

    # --- calls ------------------------------------------------------------------

    async def call(self, method: str, params: Body = None, *, timeout: Union[float, None, str] = "default") -> Any:
        """Calls ``method`` and returns its result (bytes when the answer is a
        raw MCP1 body). ``params``: a list or dict (JSON-RPC), any JSON value
        or bytes for a raw body (MCP1). Raises the RpcError the method
        answered, CallTimeout, or ConnectionLost."""
        return await self._request(method, params, self.timeout if timeout == "default" else timeout)  # type: ignore[arg-type]

    async def notify(self, method: str, params: Body = None) -> None:
        """Sends a notification: the method runs, nothing comes back."""
        writer = await self._ready(None if self.timeout is None else asyncio.get_running_loop().time() + self.timeout)
        await self._write(writer, self._encode_call(method, params, None))

    async def ping(self) -> str:
        """``rpc.ping``: ``"pong"``."""
        return await self.call("rpc.ping")

    async def batch(self, entries: Sequence[BatchEntry], *, timeout: Union[float, None, str] = "default") -> List[Any]:
        """Sends several calls at once. Each entry is a method name, a
        ``(method, params)`` tuple, or a :class:`Notification`. Returns one
        item per entry, in order: the result, the :class:`RpcError` (an
        instance, not raised) of a call that failed, or None for a
        notification. Over JSON-RPC this is one batch line (proto/jsonrpc.md
        section 6); MCP1 has no batches, so the calls are pipelined."""
        wait = self.timeout if timeout == "default" else timeout
        calls: List[Tuple[Optional[str], str, Body]] = []
        for entry in entries:
            if isinstance(entry, Notification):
                calls.append((None, entry.method, entry.params))
            elif isinstance(entry, str):
                calls.append(("call", entry, None))
            else:
                calls.append(("call", entry[0], entry[1] if len(entry) > 1 else None))
        if not calls:
            return []
        if self.protocol == "mcp1":
            return await self._pipelined(calls, wait)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait  # type: ignore[operator]
        writer = await self._ready(deadline)
        ids: List[Optional[int]] = []
        objects = []
        try:
            for kind, method, params in calls:
                rid = self._next_id() if kind else None
                if rid is not None:
                    self._batch_of[rid] = -1  # reserved until the batch is registered
                ids.append(rid)
                objects.append(wire.jsonrpc_request(method, params, rid))
        except BaseException:
            for rid in ids:
                self._batch_of.pop(rid, None)
            raise
        wanted = [rid for rid in ids if rid is not None]
        if not wanted:
            await self._write(writer, wire.jsonrpc_line(objects))
            return [None] * len(calls)
        first = wanted[0]
        future = loop.create_future()
        self._batches[first] = future
        for rid in wanted:
            self._batch_of[rid] = first
        try:
            await self._write(writer, wire.jsonrpc_line(objects))
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                answer: Incoming = await asyncio.wait_for(future, left)
            except asyncio.TimeoutError:
                raise CallTimeout(f"no answer to a batch of {len(calls)} within {wait}s") from None
        finally:
            self._batches.pop(first, None)
            for rid in wanted:
                self._batch_of.pop(rid, None)
        if answer.kind != "batch":
            raise answer.error or ProtocolError(f"unexpected answer to a batch: {answer!r}")
        by_id = {a.id: a for a in answer.value}
        results: List[Any] = []
        for rid in ids:
            if rid is None:
                results.append(None)
            elif rid not in by_id:
                results.append(ProtocolError(f"the batch's answer lacks id {rid}"))
            else:
                a = by_id[rid]
                results.append(a.error if a.error is not None else a.value)
        return results

    async def _pipelined(self, calls: List[Tuple[Optional[str], str, Body]], timeout: Optional[float]) -> List[Any]:
        async def one(kind: Optional[str], method: str, params: Body) -> Any:
            if kind is None:
                await self.notify(method, params)
                return None
            try:
                return await self._request(method, params, timeout)
            except RpcError as e:
                return e

        return list(await asyncio.gather(*(one(*c) for c in calls)))
