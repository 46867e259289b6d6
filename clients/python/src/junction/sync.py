"""The blocking client: the asyncio client run on an event loop thread of its
own, so that its connection keeps serving provided methods and receiving
events while the caller's thread does something else.

Provided methods run on a pool of threads (``handler_threads``), so a handler
may itself call the daemon through the same client; event callbacks run one
at a time, in the order the events came, on one thread of their own.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

from .aio import DEFAULT_QUEUE, AsyncClient, AsyncSubscription, BatchEntry, Call, Event, log
from .errors import ConnectionLost
from .wire import Body

__all__ = ["Client", "Subscription", "connect"]


class Subscription:
    """A subscription of a :class:`Client`: ``get(timeout)`` the next event,
    or iterate (``for event in subscription``) until it ends."""

    def __init__(self, client: "Client", inner: AsyncSubscription):
        self._client = client
        self._inner = inner

    @property
    def topics(self):
        return self._inner.topics

    @property
    def dropped(self) -> int:
        """Events dropped from the local queue (``maxsize``)."""
        return self._inner.dropped

    def get(self, timeout: Optional[float] = None) -> Event:
        """The next event; CallTimeout after ``timeout`` seconds."""
        return self._client._run(self._inner.get(timeout))

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                yield self.get()
            except ConnectionLost:
                return

    def unsubscribe(self) -> None:
        self._client._run(self._inner.unsubscribe())


class Client:
    """A blocking connection to junctiond; the options are those of
    :class:`~junction.aio.AsyncClient`, plus ``handler_threads`` (default 8).
    Use it as a context manager, or call :meth:`close`."""

    def __init__(self, unix: Optional[str] = None, tcp: Optional[str] = None, *, handler_threads: int = 8, **options: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="junction-client", daemon=True)
        self._thread.start()
        self._handlers = ThreadPoolExecutor(max_workers=handler_threads, thread_name_prefix="junction-handler")
        self._callbacks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="junction-events")
        try:
            self._async: AsyncClient = self._run(self._open(unix, tcp, options))
        except BaseException:
            self._stop()
            raise

    async def _open(self, unix: Optional[str], tcp: Optional[str], options: Dict[str, Any]) -> AsyncClient:
        return await AsyncClient(unix, tcp, **options).open()

    def _run(self, coroutine: Any) -> Any:
        if self._loop.is_closed():
            coroutine.close()
            raise ConnectionLost("the client is closed")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a blocking junction.Client call from its own event loop thread would deadlock")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._handlers.shutdown(wait=False)
        self._callbacks.shutdown(wait=False)

    def close(self) -> None:
        """Closes the connection and stops reconnecting."""
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._stop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def asyncio_client(self) -> AsyncClient:
        """The AsyncClient underneath (its coroutines run on this client's loop thread)."""
        return self._async

    @property
    def connected(self) -> bool:
        return self._async.connected

    @property
    def connections(self) -> int:
        """How many times this client has connected; see AsyncClient.connections."""
        return self._async.connections

    @property
    def restore_errors(self):
        return self._async.restore_errors

    def wait_connected(self, connections: int = 1, timeout: Optional[float] = None) -> None:
        """Waits until the client has connected ``connections`` times in all."""
        self._run(self._async.wait_connected(connections, timeout))

    def call(self, method: str, params: Body = None, *, timeout: Union[float, None, str] = "default") -> Any:
        """Calls ``method``; see AsyncClient.call."""
        return self._run(self._async.call(method, params, timeout=timeout))

    def notify(self, method: str, params: Body = None) -> None:
        """Sends a notification."""
        self._run(self._async.notify(method, params))

    def ping(self) -> str:
        return self._run(self._async.ping())

    def batch(self, entries: Sequence[BatchEntry], *, timeout: Union[float, None, str] = "default") -> List[Any]:
        """Several calls at once; see AsyncClient.batch."""
        return self._run(self._async.batch(entries, timeout=timeout))

    def provide(self, names: Union[str, Iterable[str]], handler: Callable[[Call], Any]) -> List[str]:
        """Provides names or patterns; ``handler(call)`` runs on the handler threads."""
        loop = self._loop

        async def on_loop(call: Call) -> Any:
            return await loop.run_in_executor(self._handlers, handler, call)

        return self._run(self._async.provide(names, on_loop))

    def unprovide(self, names: Union[str, Iterable[str]]) -> List[str]:
        return self._run(self._async.unprovide(names))

    def subscribe(
        self,
        topics: Union[str, Iterable[str]],
        callback: Optional[Callable[[Event], Any]] = None,
        *,
        maxsize: int = DEFAULT_QUEUE,
    ) -> Subscription:
        """Subscribes to topics or patterns: events go to ``callback`` (on the
        event thread, in order) or wait in the subscription's queue."""
        relay: Optional[Callable[[Event], Any]] = None
        if callback is not None:

            def guarded(event: Event) -> None:
                try:
                    callback(event)
                except Exception:  # a callback's bug must not end the event thread's work
                    log.exception("junction: event callback failed on %s", event.topic)

            def submit(event: Event) -> None:
                self._callbacks.submit(guarded, event)

            relay = submit

        return Subscription(self, self._run(self._async.subscribe(topics, relay, maxsize=maxsize)))

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.unsubscribe()

    def publish(self, topic: str, data: Any = None) -> int:
        """Publishes an event; returns how many subscribers will get it."""
        return self._run(self._async.publish(topic, data))

    def bus_list(self) -> Dict[str, Any]:
        return self._run(self._async.bus_list())


def connect(unix: Optional[str] = None, tcp: Optional[str] = None, **options: Any) -> Client:
    """A connected :class:`Client` (see :class:`~junction.aio.AsyncClient` for the options)."""
    return Client(unix, tcp, **options)
