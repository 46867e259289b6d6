"""The asyncio client: the same features, awaited."""

import asyncio

import pytest

import junction
from junction import aio
from conftest import PATIENCE


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_asyncio_calls_batches_and_errors(target, endpoint):
    async def main():
        async with await aio.connect(**target.options(*endpoint)) as client:
            assert await client.ping() == "pong"
            answers = await asyncio.gather(*(client.call("rpc.echo", [n]) for n in range(100)))
            assert answers == [[n] for n in range(100)]
            with pytest.raises(junction.MethodNotFound):
                await client.call("nope")
            results = await client.batch([("rpc.echo", [1]), junction.Notification("rpc.ping"), "nope"])
            assert results[0] == [1] and results[1] is None
            assert isinstance(results[2], junction.MethodNotFound)
            await client.notify("rpc.ping")
            if endpoint[0] == "mcp1":
                assert await client.call("rpc.echo", b"\x00\x01") == b"\x00\x01"

    run(main())


def test_asyncio_provide_subscribe_publish(target, endpoint, unique):
    async def main():
        provider = await aio.connect(**target.options(*endpoint))
        caller = await aio.connect(**target.options(*endpoint))
        try:

            async def slow_double(call: junction.Call):
                await asyncio.sleep(0)
                return call.params[0] * 2

            await provider.provide(f"{unique}.double", slow_double)
            assert await caller.call(f"{unique}.double", [21]) == 42
            sub = await provider.subscribe(f"{unique}.ev.*")
            assert await caller.publish(f"{unique}.ev.x", {"a": 1}) == 1
            event = await sub.get(timeout=PATIENCE)
            assert (event.topic, event.data) == (f"{unique}.ev.x", {"a": 1})
        finally:
            await provider.close()
            await caller.close()

    run(main())


def test_asyncio_iterator_form(target, unique):
    async def main():
        async with await aio.connect(**target.options("jsonrpc", "unix")) as client:
            sub = await client.subscribe(f"{unique}.it")
            await client.publish(f"{unique}.it", "first")
            await client.publish(f"{unique}.it", "second")
            seen = []
            async for event in sub:
                seen.append(event.data)
                if len(seen) == 2:
                    break
            assert seen == ["first", "second"]

    run(main())


def test_a_cancelled_call_cancels_its_handler(target, endpoint, unique):
    """The caller goes away with the call pending: the daemon cancels it, and
    the provider's handler task is cancelled."""

    async def main():
        provider = await aio.connect(**target.options(*endpoint))
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def forever(call):
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        try:
            await provider.provide(f"{unique}.forever", forever)
            # The caller on the Unix socket: its close is a hang-up the daemon sees at once.
            caller = await aio.connect(**target.options("mcp1", "unix", reconnect=False))
            pending = asyncio.ensure_future(caller.call(f"{unique}.forever"))
            await asyncio.wait_for(started.wait(), PATIENCE)
            await caller.close()
            with pytest.raises(junction.ConnectionLost):
                await pending
            await asyncio.wait_for(cancelled.wait(), PATIENCE)
        finally:
            await provider.close()

    run(main())
