"""Fixtures: the daemon the suite runs against, and clients on each of its
endpoints (both protocols, both transports).

``cargo test --test client_packages`` starts junctiond and says where it is:
JUNCTION_TEST_UNIX (its socket; its token is beside it) and JUNCTION_TEST_TCP
(HOST:PORT). Without them, the suite starts a junctiond of its own from
JUNCTIOND (default: ``junctiond`` on PATH). The reconnect tests always start
their own from JUNCTIOND, to restart it.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from typing import Iterator, List, Optional

import pytest

import junction

PATIENCE = 20.0
"""Seconds any single wait may take before a test fails (a hang guard, not a
timing assertion)."""

ENDPOINTS = [("jsonrpc", "unix"), ("jsonrpc", "tcp"), ("mcp1", "unix"), ("mcp1", "tcp")]


# What a user's environment might say to junctiond that must not move the suite's daemon.
_DAEMON_ENV = ("JUNCTION_CONFIG", "JUNCTION_UNIX", "JUNCTION_TCP", "JUNCTION_AUTH_TOKEN_FILE", "JUNCTION_TCP_ANONYMOUS")


class Daemon:
    """A junctiond of the suite's own, on a temp socket and a loopback port."""

    def __init__(self, directory: str):
        binary = os.environ.get("JUNCTIOND") or shutil.which("junctiond")
        if not binary:
            pytest.skip("no junctiond: set JUNCTIOND or put it on PATH")
        self.binary = binary
        self.unix = os.path.join(directory, "junction.sock")
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    @property
    def tcp(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Daemon":
        self.proc = subprocess.Popen(
            [self.binary, "--unix", self.unix, "--tcp", f"127.0.0.1:{self.port}", "--log", "info"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k not in _DAEMON_ENV},
        )
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def drain(stream) -> None:
            for raw in stream:
                lines.put(raw.decode("utf-8", "replace"))
            lines.put(None)

        threading.Thread(target=drain, args=(self.proc.stderr,), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=PATIENCE)
            except queue.Empty:
                raise AssertionError("junctiond did not say where it listens")
            if line is None:
                raise AssertionError("junctiond exited at start")
            found = re.search(r"listening on tcp 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
        # The token file is written before the listeners are reported.
        assert os.path.exists(self.unix + ".token"), "no generated token beside the socket"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=PATIENCE)
            self.proc = None

    def restart(self) -> None:
        """Stops the daemon and starts it again on the same socket and port
        (with a new token, as every start makes one)."""
        self.stop()
        self.start()


class Target:
    """Where the suite's daemon listens."""

    def __init__(self, unix: str, tcp: str):
        self.unix = unix
        self.tcp = tcp

    def options(self, protocol: str, transport: str, **extra):
        """Client options for one endpoint: over TCP, ``unix`` says where the token is."""
        options = dict(unix=self.unix, protocol=protocol, timeout=PATIENCE)
        if transport == "tcp":
            options["tcp"] = self.tcp
        options.update(extra)
        return options


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    unix, tcp = os.environ.get("JUNCTION_TEST_UNIX"), os.environ.get("JUNCTION_TEST_TCP")
    if unix and tcp:
        yield Target(unix, tcp)
        return
    with tempfile.TemporaryDirectory() as directory:
        daemon = Daemon(directory).start()
        try:
            yield Target(daemon.unix, daemon.tcp)
        finally:
            daemon.stop()


@pytest.fixture
def own_daemon() -> Iterator[Daemon]:
    with tempfile.TemporaryDirectory() as directory:
        daemon = Daemon(directory).start()
        try:
            yield daemon
        finally:
            daemon.stop()


@pytest.fixture(params=ENDPOINTS, ids=["-".join(e) for e in ENDPOINTS])
def endpoint(request):
    """(protocol, transport), each of the four."""
    return request.param


@pytest.fixture
def clients(target: Target) -> Iterator[List[junction.Client]]:
    """A list the test appends its clients to; they are closed at the end."""
    made: List[junction.Client] = []
    yield made
    for client in made:
        client.close()


@pytest.fixture
def connect(target: Target, clients):
    """connect(protocol, transport, **options): a sync client, closed after the test."""

    def make(protocol: str = "jsonrpc", transport: str = "unix", **extra) -> junction.Client:
        client = junction.connect(**target.options(protocol, transport, **extra))
        clients.append(client)
        return client

    return make


_unique = iter(range(1, 1 << 30))


@pytest.fixture
def unique() -> str:
    """A name prefix no other test uses (the daemon is shared)."""
    return f"py{os.getpid()}t{next(_unique)}"
