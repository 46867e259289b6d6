"""Calls, errors, notifications, batches and raw bodies, on each endpoint."""

import pytest

import junction
from junction import Notification


def test_call_returns_the_result(connect, endpoint):
    client = connect(*endpoint)
    assert client.ping() == "pong"
    assert client.call("rpc.echo", [1, "two", {"three": 3}]) == [1, "two", {"three": 3}]
    assert client.call("rpc.echo", {"k": ["v"]}) == {"k": ["v"]}
    assert client.call("rpc.echo") is None


def test_an_error_answer_is_typed_with_code_and_message(connect, endpoint):
    client = connect(*endpoint)
    with pytest.raises(junction.MethodNotFound) as caught:
        client.call("no.such.method", [1])
    error = caught.value
    assert isinstance(error, junction.RpcError)
    assert error.code == -32601
    assert error.message == 'Method not found: no method named "no.such.method"'
    assert error.data is None
    # The connection is still usable after an error.
    assert client.ping() == "pong"


def test_bus_errors_carry_their_data(connect, endpoint, unique):
    first = connect(*endpoint)
    second = connect(*endpoint)
    first.provide(f"{unique}.taken", lambda call: None)
    with pytest.raises(junction.NameTaken) as caught:
        second.provide(f"{unique}.taken", lambda call: None)
    assert caught.value.code == -32020
    assert caught.value.data["name"] == f"{unique}.taken"
    assert caught.value.data["owner"]["transport"] == endpoint[1]
    with pytest.raises(junction.InvalidParams):
        second.provide("rpc.mine", lambda call: None)


def test_notifications_get_no_answer_and_run(connect, endpoint, unique):
    import threading

    provider = connect(*endpoint)
    seen = []
    arrived = threading.Event()
    provider.provide(f"{unique}.note", lambda call: (seen.append((call.params, call.id)), arrived.set()))
    client = connect(*endpoint)
    client.notify("rpc.ping")
    client.notify("no.such.method")  # not even an error comes back
    client.notify(f"{unique}.note", ["hello"])
    assert client.call("rpc.echo", ["after"]) == ["after"]
    assert arrived.wait(20)
    assert seen == [(["hello"], None)]


def test_a_batch_answers_each_entry_in_order(connect, endpoint):
    client = connect(*endpoint)
    results = client.batch(
        [
            "rpc.ping",
            ("rpc.echo", [1, 2]),
            Notification("rpc.ping"),
            ("nope",),
            ("rpc.echo", {"k": "v"}),
        ]
    )
    assert results[0] == "pong"
    assert results[1] == [1, 2]
    assert results[2] is None
    assert isinstance(results[3], junction.MethodNotFound)
    assert results[3].code == -32601
    assert results[4] == {"k": "v"}
    assert client.batch([Notification("rpc.ping")]) == [None]
    assert client.batch([]) == []


def test_many_calls_in_flight_from_threads(connect, endpoint):
    from concurrent.futures import ThreadPoolExecutor

    client = connect(*endpoint)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: client.call("rpc.echo", [n]), range(200)))
    assert answers == [[n] for n in range(200)]


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_raw_bodies_travel_over_mcp1(connect, transport):
    client = connect("mcp1", transport)
    assert client.call("rpc.echo", b"\x00\xffraw\n") == b"\x00\xffraw\n"
    # MCP1 takes any JSON value as params.
    assert client.call("rpc.echo", "text") == "text"
    assert client.call("rpc.echo", 5) == 5


def test_raw_bodies_need_mcp1(connect):
    client = connect("jsonrpc", "unix")
    with pytest.raises(TypeError):
        client.call("rpc.echo", b"\x00")
    with pytest.raises(TypeError):
        client.call("rpc.echo", "not an array")


def test_tcp_without_a_token_is_refused(target, clients):
    for protocol in ("jsonrpc", "mcp1"):
        client = junction.connect(**target.options(protocol, "tcp", auth=False, reconnect=False))
        clients.append(client)
        with pytest.raises(junction.Unauthorized) as caught:
            client.call("rpc.ping")
        assert caught.value.code == -32007
        assert "authentication required" in caught.value.message
        with pytest.raises(junction.ConnectionLost):
            client.call("rpc.ping")


def test_tcp_with_a_wrong_token_is_refused(target):
    for protocol in ("jsonrpc", "mcp1"):
        with pytest.raises(junction.Unauthorized) as caught:
            junction.connect(**target.options(protocol, "tcp", token="wrong", reconnect=False))
        assert caught.value.message == "Unauthorized: authentication failed: wrong token"


def test_a_missing_socket_is_a_clear_error(tmp_path):
    with pytest.raises(junction.ConnectionLost) as caught:
        junction.connect(unix=str(tmp_path / "none.sock"))
    assert "none.sock" in str(caught.value)


def test_a_call_times_out(connect, endpoint, unique):
    import threading

    provider = connect(*endpoint)
    release = threading.Event()
    provider.provide(f"{unique}.slow", lambda call: release.wait(10))
    client = connect(*endpoint)
    with pytest.raises(junction.CallTimeout):
        client.call(f"{unique}.slow", timeout=0.2)
    release.set()
    assert client.ping() == "pong"


def test_a_closed_client_says_so(target):
    client = junction.connect(**target.options("jsonrpc", "unix"))
    client.close()
    client.close()  # twice is fine
    with pytest.raises(junction.ConnectionLost):
        client.call("rpc.ping")
