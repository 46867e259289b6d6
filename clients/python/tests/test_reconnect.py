"""Reconnect: after the daemon restarts, a client connects again by itself,
authenticates with the new token, and provides and subscribes again."""

import asyncio
import time

import pytest

import junction
from junction import aio
from conftest import ENDPOINTS, PATIENCE


def options(daemon, protocol, transport, **extra):
    result = dict(unix=daemon.unix, protocol=protocol, timeout=PATIENCE, backoff=(0.02, 0.5))
    if transport == "tcp":
        result["tcp"] = daemon.tcp
    result.update(extra)
    return result


def test_clients_reconnect_and_restore_after_a_restart(own_daemon):
    providers, subscriptions = [], []
    try:
        for n, (protocol, transport) in enumerate(ENDPOINTS):
            client = junction.connect(**options(own_daemon, protocol, transport))
            client.provide([f"re.m{n}", f"re.p{n}.*"], lambda call, n=n: [n, call.method])
            subscriptions.append(client.subscribe(f"re.t{n}.*"))
            providers.append(client)
        own_daemon.restart()
        for client in providers:
            client.wait_connected(2, timeout=PATIENCE)
            assert client.restore_errors == []
        for protocol, transport in ENDPOINTS:
            with junction.connect(**options(own_daemon, protocol, transport)) as caller:
                for n in range(len(ENDPOINTS)):
                    assert caller.call(f"re.m{n}", [1]) == [n, f"re.m{n}"]
                    assert caller.call(f"re.p{n}.x", [1]) == [n, f"re.p{n}.x"]
                    assert caller.publish(f"re.t{n}.e", [protocol, transport]) == 1
                    event = subscriptions[n].get(timeout=PATIENCE)
                    assert (event.topic, event.data) == (f"re.t{n}.e", [protocol, transport])
    finally:
        for client in providers:
            client.close()


def test_calls_pending_at_the_loss_fail_and_later_calls_wait_for_the_reconnect(own_daemon):
    client = junction.connect(**options(own_daemon, "mcp1", "tcp"))
    try:
        own_daemon.stop()
        waited = 0.0
        while client.connected and waited < PATIENCE:  # until the client has seen the end
            time.sleep(0.01)
            waited += 0.01
        assert not client.connected
        with pytest.raises(junction.ConnectionLost):
            client.call("rpc.ping", timeout=0.3)
        own_daemon.start()
        assert client.call("rpc.ping") == "pong"
        assert client.connections == 2
    finally:
        client.close()


def test_reconnect_can_be_turned_off(own_daemon):
    client = junction.connect(**options(own_daemon, "jsonrpc", "unix", reconnect=False))
    try:
        own_daemon.restart()
        with pytest.raises(junction.ConnectionLost):
            client.call("rpc.ping")
        assert client.connections == 1
    finally:
        client.close()


def test_the_asyncio_client_reconnects(own_daemon):
    async def main():
        provider = await aio.connect(**options(own_daemon, "jsonrpc", "tcp"))
        sub = await provider.subscribe("are.*")
        await provider.provide("are.method", lambda call: "still here")
        await asyncio.get_running_loop().run_in_executor(None, own_daemon.restart)
        await provider.wait_connected(2, timeout=PATIENCE)
        caller = await aio.connect(**options(own_daemon, "mcp1", "unix"))
        assert await caller.call("are.method") == "still here"
        assert await caller.publish("are.x", 1) == 1
        assert (await sub.get(timeout=PATIENCE)).data == 1
        await caller.close()
        await provider.close()

    asyncio.run(asyncio.wait_for(main(), 60))
