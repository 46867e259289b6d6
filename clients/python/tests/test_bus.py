"""The service bus: providing methods (names and patterns) and events with
pattern subscriptions, across protocols and transports."""

import threading

import pytest

import junction
from conftest import ENDPOINTS, PATIENCE


@pytest.mark.parametrize("caller", ENDPOINTS, ids=["to-" + "-".join(e) for e in ENDPOINTS])
def test_a_provided_method_is_called_from_another_client(connect, endpoint, caller, unique):
    provider = connect(*endpoint)
    calls = []

    def add(call: junction.Call):
        calls.append(call.method)
        a, b = call.params
        return a + b

    def fail(call):
        raise junction.RpcError(4711, "failed on purpose", {"why": call.method})

    assert provider.provide(f"{unique}.add", add) == [f"{unique}.add"]
    provider.provide(f"{unique}.fail", fail)
    provider.provide(f"{unique}.calc.*", lambda call: call.method.rsplit(".", 1)[1])
    client = connect(*caller)
    assert client.call(f"{unique}.add", [2, 3]) == 5
    assert calls == [f"{unique}.add"]
    assert client.call(f"{unique}.calc.mul", [1]) == "mul"
    with pytest.raises(junction.RpcError) as caught:
        client.call(f"{unique}.fail", [])
    assert (caught.value.code, caught.value.message, caught.value.data) == (
        4711,
        "failed on purpose",
        {"why": f"{unique}.fail"},
    )
    names = [entry["name"] for entry in client.bus_list()["names"]]
    assert f"{unique}.add" in names and f"{unique}.calc.*" in names
    assert provider.unprovide(f"{unique}.add") == [f"{unique}.add"]
    with pytest.raises(junction.MethodNotFound):
        client.call(f"{unique}.add", [2, 3])


def test_a_handler_may_call_through_its_own_client(connect, endpoint, unique):
    provider = connect(*endpoint)
    provider.provide(f"{unique}.nested", lambda call: provider.call("rpc.echo", [call.params[0] * 2]))
    assert connect(*endpoint).call(f"{unique}.nested", [21]) == [42]


def test_a_failing_handler_answers_internal_error(connect, endpoint, unique):
    provider = connect(*endpoint)
    provider.provide(f"{unique}.boom", lambda call: 1 / 0)
    with pytest.raises(junction.InternalError) as caught:
        connect(*endpoint).call(f"{unique}.boom")
    assert "ZeroDivisionError" in caught.value.message


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_raw_params_and_results_through_the_bus(connect, transport, unique):
    provider = connect("mcp1", transport)
    provider.provide(f"{unique}.rev", lambda call: bytes(reversed(call.params)) if call.raw else b"raw answer")
    assert connect("mcp1", transport).call(f"{unique}.rev", b"\x01\x02\x03") == b"\x03\x02\x01"
    with pytest.raises(junction.UnsupportedEncoding):
        connect("jsonrpc", transport).call(f"{unique}.rev", [1])


@pytest.mark.parametrize("publisher", ENDPOINTS, ids=["from-" + "-".join(e) for e in ENDPOINTS])
def test_subscribe_to_a_pattern_and_receive_what_is_published(connect, endpoint, publisher, unique):
    subscriber = connect(*endpoint)
    sub = subscriber.subscribe(f"{unique}.build.*")
    exact = subscriber.subscribe(f"{unique}.deploy")
    source = connect(*publisher)
    assert source.publish(f"{unique}.other", {"n": 0}) == 0
    assert source.publish(f"{unique}.build.done", {"ok": True, "n": 1}) == 1
    assert source.publish(f"{unique}.deploy", [2]) == 1
    event = sub.get(timeout=PATIENCE)
    assert event == junction.Event(f"{unique}.build.done", {"ok": True, "n": 1}, 0)
    assert exact.get(timeout=PATIENCE) == junction.Event(f"{unique}.deploy", [2], 0)
    sub.unsubscribe()
    assert source.publish(f"{unique}.build.done", None) == 0


def test_event_callbacks_run_in_order(connect, endpoint, unique):
    subscriber = connect(*endpoint)
    got = []
    done = threading.Event()

    def on_event(event):
        got.append(event.data)
        if len(got) == 50:
            done.set()

    subscriber.subscribe([f"{unique}.seq.*"], on_event)
    publisher = connect(*endpoint)
    for n in range(50):
        publisher.publish(f"{unique}.seq.n", n)
    assert done.wait(PATIENCE)
    assert got == list(range(50))
