"""The asyncio client: :class:`AsyncClient`, a connection to junctiond
(:class:`~junction.connection.Connection`: calls, notifications, batches) with
the service bus: the methods it provides, served as tasks (cancelled by the
daemon's cancel), and its subscriptions, which get the events whose topic or
pattern matches. After a reconnect it registers its names and subscribes its
topics again.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

from . import wire
from .connection import DEFAULT_MAX_MESSAGE, DEFAULT_TIMEOUT, BatchEntry, Connection, Notification, log
from .errors import CallTimeout, ConnectionLost, JunctionError, RpcError
from .wire import Body, Incoming

__all__ = [
    "AsyncClient",
    "AsyncSubscription",
    "Call",
    "Event",
    "Notification",
    "connect",
    "DEFAULT_TIMEOUT",
    "DEFAULT_MAX_MESSAGE",
    "DEFAULT_QUEUE",
    "BatchEntry",
]

DEFAULT_QUEUE = 10_000
"""Events a subscription without a callback keeps before dropping the oldest."""

Handler = Callable[["Call"], Any]
"""A provided method: takes a :class:`Call`, returns (or awaits to) the
result: JSON, or bytes for a raw MCP1 answer. Raising RpcError answers that
error; any other exception answers -32603."""


class Call(NamedTuple):
    """A call the bus forwarded to a method this client provides."""

    method: str
    """The name called (for a pattern, the actual name under it)."""
    params: Body
    """The params: JSON (None when the caller sent none), or bytes when raw."""
    id: Any
    """The daemon's id for the call; None for a notification."""
    raw: bool = False
    """True when ``params`` are the raw bytes of an MCP1 body."""


class Event(NamedTuple):
    """A ``bus.event``: what a publisher sent on ``topic``."""

    topic: str
    data: Any
    dropped: int = 0
    """Events the daemon dropped for this connection before this one (slow)."""



def _matches(pattern: str, topic: str) -> bool:
    """A name or topic against an exact name or a ``prefix.*`` pattern."""
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return topic.startswith(prefix) and len(topic) > len(prefix)
    return pattern == topic


def _as_list(names: Union[str, Iterable[str]]) -> List[str]:
    return [names] if isinstance(names, str) else list(names)



class AsyncSubscription:
    """Topics and patterns this client subscribes to, and the events on them.

    Without a callback, events wait in a queue (``await get()``, or
    ``async for event in subscription``) of at most ``maxsize`` events; past
    that the oldest is dropped and counted in ``dropped``. With a callback,
    each event is passed to it (awaited as a task when it is a coroutine).
    """

    def __init__(self, client: "AsyncClient", topics: List[str], callback: Optional[Callable[[Event], Any]], maxsize: int):
        self.client = client
        self.topics: Tuple[str, ...] = tuple(topics)
        self.dropped = 0
        self._callback = callback
        self._queue: Deque[Event] = deque()
        self._maxsize = max(1, maxsize)
        self._waiter: Optional[asyncio.Future] = None
        self.active = True

    def wants(self, topic: str) -> bool:
        return self.active and any(_matches(p, topic) for p in self.topics)

    def _deliver(self, event: Event) -> None:
        if self._callback is not None:
            try:
                outcome = self._callback(event)
                if inspect.isawaitable(outcome):
                    asyncio.ensure_future(outcome)
            except Exception:  # a callback's bug must not stop the reader
                log.exception("junction: event callback failed on %s", event.topic)
            return
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: Optional[float] = None) -> Event:
        """The next event; CallTimeout after ``timeout`` seconds."""
        while not self._queue:
            if not self.active:
                raise ConnectionLost("the subscription was cancelled")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except asyncio.TimeoutError:
                raise CallTimeout(f"no event on {', '.join(self.topics)} within {timeout}s") from None
            finally:
                self._waiter = None
        return self._queue.popleft()

    def get_nowait(self) -> Optional[Event]:
        """The next queued event, or None."""
        return self._queue.popleft() if self._queue else None

    def __aiter__(self) -> "AsyncSubscription":
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except ConnectionLost:
            raise StopAsyncIteration from None

    def _end(self) -> None:
        self.active = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def unsubscribe(self) -> None:
        """Stop receiving these events (the topics no other subscription of
        this client holds are unsubscribed at the daemon)."""
        await self.client.unsubscribe(self)



class AsyncClient(Connection):
    """A connection to junctiond with the service bus. Make one with
    :func:`connect` (or ``await AsyncClient(...).open()``); the options are
    those of :class:`~junction.connection.Connection`."""

    def __init__(self, unix: Optional[str] = None, tcp: Optional[str] = None, **options: Any):
        super().__init__(unix, tcp, **options)
        self.restore_errors: List[JunctionError] = []
        """What failed when names and topics were restored after a reconnect."""
        self._provided: Dict[str, Handler] = {}
        self._subscriptions: List[AsyncSubscription] = []
        self._running: Dict[Any, asyncio.Task] = {}

    async def open(self) -> "AsyncClient":
        await super().open()
        return self

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def _restore(self) -> None:  # after a reconnect
        """Registers the names and subscribes the topics again, one by one,
        so that one refused (a name taken meanwhile) does not keep the rest."""
        self.restore_errors = []
        for name in list(self._provided):
            try:
                await self._request("bus.register", {"names": [name]}, self.timeout, ready=False)
            except RpcError as e:
                log.warning("junction: %s not registered again after reconnecting: %s", name, e)
                self.restore_errors.append(e)
        topics = self._topics()
        for topic in topics:
            try:
                await self._request("bus.subscribe", {"topics": [topic]}, self.timeout, ready=False)
            except RpcError as e:
                log.warning("junction: %s not subscribed again after reconnecting: %s", topic, e)
                self.restore_errors.append(e)

    def _topics(self) -> List[str]:
        seen: Dict[str, None] = {}
        for sub in self._subscriptions:
            for topic in sub.topics:
                seen[topic] = None
        return list(seen)

    def _on_call(self, message: Incoming, writer: asyncio.StreamWriter) -> None:
        self._start_handler(message, writer)

    def _on_event(self, params: Any) -> None:
        if not isinstance(params, dict) or not isinstance(params.get("topic"), str):
            log.warning("junction: malformed bus.event: %r", params)
            return
        event = Event(params["topic"], params.get("data"), int(params.get("dropped") or 0))
        for sub in list(self._subscriptions):
            if sub.wants(event.topic):
                sub._deliver(event)

    def _on_cancel(self, rid: Any) -> None:
        task = self._running.pop(rid, None)
        if task is not None:
            task.cancel()

    def _on_lost(self) -> None:
        for task in self._running.values():
            task.cancel()
        self._running.clear()

    def _on_close(self) -> None:
        for sub in self._subscriptions:
            sub._end()

    # --- the bus: providing -------------------------------------------------------

    async def provide(self, names: Union[str, Iterable[str]], handler: Handler) -> List[str]:
        """Registers names or ``prefix.*`` patterns (``bus.register``), all or
        nothing, and serves the calls routed to them with ``handler``. After a
        reconnect they are registered again. Returns the names now provided."""
        names = _as_list(names)
        before = {name: self._provided.get(name) for name in names}
        for name in names:
            self._provided[name] = handler
        try:
            result = await self.call("bus.register", {"names": names})
        except BaseException:
            for name, old in before.items():
                if old is None:
                    self._provided.pop(name, None)
                else:
                    self._provided[name] = old
            raise
        return list(result.get("names", names)) if isinstance(result, dict) else names

    async def unprovide(self, names: Union[str, Iterable[str]]) -> List[str]:
        """Releases names or patterns (``bus.unregister``); returns those released."""
        names = _as_list(names)
        for name in names:
            self._provided.pop(name, None)
        result = await self.call("bus.unregister", {"names": names})
        return list(result.get("names", [])) if isinstance(result, dict) else []

    def _handler_for(self, method: str) -> Optional[Handler]:
        handler = self._provided.get(method)
        if handler is not None:
            return handler
        best: Optional[str] = None
        for pattern in self._provided:
            if pattern.endswith(".*") and _matches(pattern, method) and (best is None or len(pattern) > len(best)):
                best = pattern
        return self._provided.get(best) if best else None

    def _start_handler(self, message: Incoming, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(message, writer))
        if message.kind == "request":
            self._running[message.id] = task
            task.add_done_callback(lambda _t, rid=message.id: self._running.pop(rid, None))

    async def _serve(self, message: Incoming, writer: asyncio.StreamWriter) -> None:
        call = Call(message.method or "", message.value, message.id, message.raw)
        handler = self._handler_for(call.method)
        try:
            if handler is None:
                raise RpcError.of(-32601, f"Method not found: {call.method!r} is not provided here")
            result = handler(call)
            if inspect.isawaitable(result):
                result = await result
            reply = self._encode_result(call.id, result)
        except asyncio.CancelledError:
            return
        except RpcError as e:
            reply = self._encode_error(call.id, e)
        except Exception as e:
            log.exception("junction: the handler of %s failed", call.method)
            reply = self._encode_error(call.id, RpcError.of(-32603, f"Internal error: {type(e).__name__}: {e}"))
        if message.kind != "request" or writer is not self._writer:
            return
        try:
            await self._write(writer, reply)
        except ConnectionLost:
            pass

    def _encode_result(self, rid: Any, result: Any) -> bytes:
        try:
            if self.protocol == "mcp1":
                return wire.mcp1_response(rid, result)
            if isinstance(result, (bytes, bytearray, memoryview)):
                raise RpcError.of(-32603, "Internal error: the handler returned bytes, which JSON-RPC cannot carry")
            return wire.jsonrpc_result(rid, result)
        except (TypeError, ValueError) as e:
            return self._encode_error(rid, RpcError.of(-32603, f"Internal error: the result is not JSON: {e}"))
        except RpcError as e:
            return self._encode_error(rid, e)

    def _encode_error(self, rid: Any, error: RpcError) -> bytes:
        try:
            wire.dumps(error.data)
        except (TypeError, ValueError):
            error = RpcError.of(error.code, error.message)
        if self.protocol == "mcp1":
            return wire.mcp1_error(rid, error)
        return wire.jsonrpc_error(rid, error)

    # --- the bus: events ------------------------------------------------------------

    async def subscribe(
        self,
        topics: Union[str, Iterable[str]],
        callback: Optional[Callable[[Event], Any]] = None,
        *,
        maxsize: int = DEFAULT_QUEUE,
    ) -> AsyncSubscription:
        """Subscribes to topics or ``prefix.*`` patterns (``bus.subscribe``)
        and returns the subscription its events go to (see
        :class:`AsyncSubscription`). After a reconnect they are subscribed
        again."""
        topics = _as_list(topics)
        sub = AsyncSubscription(self, topics, callback, maxsize)
        new = [t for t in dict.fromkeys(topics) if t not in self._topics()]
        self._subscriptions.append(sub)  # before the answer: no event is missed
        if new:
            try:
                await self.call("bus.subscribe", {"topics": new})
            except BaseException:
                self._subscriptions.remove(sub)
                raise
        return sub

    async def unsubscribe(self, subscription: AsyncSubscription) -> None:
        """Ends a subscription; topics no other subscription holds are
        unsubscribed at the daemon."""
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
        subscription._end()
        still = set(self._topics())
        gone = [t for t in dict.fromkeys(subscription.topics) if t not in still]
        if gone and self.connected:
            await self.call("bus.unsubscribe", {"topics": gone})

    async def publish(self, topic: str, data: Any = None) -> int:
        """Publishes an event; returns how many subscribers will get it."""
        result = await self.call("bus.publish", {"topic": topic, "data": data})
        return int(result.get("subscribers", 0)) if isinstance(result, dict) else 0

    async def bus_list(self) -> Dict[str, Any]:
        """``bus.list``: the names provided and the topics subscribed."""
        return await self.call("bus.list")


async def connect(unix: Optional[str] = None, tcp: Optional[str] = None, **options: Any) -> AsyncClient:
    """An :class:`AsyncClient`, connected (see its options)."""
    return await AsyncClient(unix, tcp, **options).open()
