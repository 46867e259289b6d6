#!/usr/bin/env python3
"""Before/after comparison of two junctiond builds (issue 16, the JSON-RPC parser).

Starts the junctiond of each build (BEFORE and AFTER: directories holding
target/release/junctiond) and, when installed, redis-server (and with
--ceiling AFTER's junction-echo, which parses nothing), and drives them
all with the AFTER build's junction-bench: JSON-RPC and MCP1, Unix and TCP,
pipeline 1 and 16, C=50, rpc.ping and rpc.echo of 64 B and 1 KiB (Redis: PING
and ECHO). Runs are interleaved (every target once per repeat, in turn) and
the median of the repeats is reported with the daemon's CPU per million
requests, so the machine's drifts hit every target alike.

    harness/compare_parser.py /tmp/jsonbase . -r 3 -d 2

Writes the table (markdown) to stdout and every raw run to --json.
Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, name, exe):
        self.name, self.exe = name, exe
        self.dir = Path(tempfile.mkdtemp(prefix=f"cmp-{name}-"))
        sock = self.dir / "j.sock"
        self.log = open(self.dir / "log", "w")
        self.proc = subprocess.Popen(
            # Anonymous TCP on loopback (both builds have the policy): the
            # generator sends no rpc.auth.
            [exe, "--unix", str(sock), "--tcp", "127.0.0.1:0"] + ([] if name == "echo" else [
                "--log-format", "human", "--tcp-anonymous", "true", "--allow", "anonymous:call:*"]),
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = dict(re.findall(r"listening on (unix|tcp) (\S+)",
                                    (self.dir / "log").read_text(errors="replace")))
            if "unix" in found and "tcp" in found:
                self.unix, self.tcp = found["unix"], found["tcp"]
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start: {(self.dir / 'log').read_text()}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Echo(Daemon):
    """junction-echo: answers every request with its own bytes, parsing nothing.
    Driven by the same generator, it is the most this machine gives any server."""

    def __init__(self, exe):
        Daemon.__init__(self, "echo", exe)


class Redis(Daemon):
    def __init__(self):
        self.name = "redis"
        self.dir = Path(tempfile.mkdtemp(prefix="cmp-redis-"))
        self.unix = str(self.dir / "r.sock")
        port = free_port()
        self.tcp = f"127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", self.unix,
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(self.unix):
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not start")


def default_threads():
    """Half the cores, 1 or 2: the server under test keeps a core of its own
    (on 2 cores, 2 generator threads cap every server near 1.5x Redis over
    TCP, junction-echo included; docs/benchmarks.md)."""
    return max(1, min(2, (os.cpu_count() or 2) // 2))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("-r", "--repeats", type=int, default=3)
    p.add_argument("-d", "--duration", type=float, default=2.0)
    p.add_argument("-c", "--connections", type=int, default=50)
    p.add_argument("--json", type=Path, default=Path("/tmp/compare_parser.json"))
    p.add_argument("-t", "--threads", type=int, default=default_threads(),
                   help="generator threads (default: half the cores, 1 to 2; %(default)s here). "
                        "A generator with more than half of the machine starves the server it "
                        "drives: --ceiling (junction-echo) shows whether a server or the "
                        "generator sets the pace")
    p.add_argument("--ceiling", action="store_true",
                   help="also drive junction-echo (AFTER's build), which parses nothing: "
                        "the machine's ceiling for this generator, as echo/Redis and after/echo")
    p.add_argument("--sizes", default="0,64,1024",
                   help="echo sizes to run, 0 meaning rpc.ping (default: 0,64,1024)")
    args = p.parse_args()
    bench = str(args.after / "target/release/junction-bench")
    daemons = {
        "before": Daemon("before", str(args.before / "target/release/junctiond")),
        "after": Daemon("after", str(args.after / "target/release/junctiond")),
    }
    if shutil.which("redis-server"):
        daemons["redis"] = Redis()
    if args.ceiling:
        daemons["echo"] = Echo(str(args.after / "target/release/junction-echo"))
    cells = [(t, pl, m, s) for t in ("unix", "tcp") for pl in (16, 1)
             for (m, s) in [("ping" if int(n) == 0 else "echo", int(n))
                            for n in args.sizes.split(",")]]
    targets = [("before", "jsonrpc"), ("after", "jsonrpc"), ("before", "mcp1"), ("after", "mcp1")]
    if "redis" in daemons:
        targets.append(("redis", "resp"))
    if "echo" in daemons:
        targets.append(("echo", "jsonrpc"))
    runs = []
    try:
        for repeat in range(args.repeats):
            for cell in cells:
                transport, pipeline, method, size = cell
                order = targets if repeat % 2 == 0 else list(reversed(targets))
                for name, proto in order:
                    d = daemons[name]
                    endpoint = ["--unix", d.unix] if transport == "unix" else ["--tcp", d.tcp]
                    cmd = [bench, "throughput", "--target",
                           name if name in ("redis", "echo") else "junction",
                           "--proto", proto, *endpoint, "-c", str(args.connections),
                           "-P", str(pipeline), "--threads", str(args.threads), "-s", str(size),
                           "--method", method, "-d", f"{int(args.duration * 1000)}ms",
                           "--server-pid", str(d.proc.pid), "--json"]
                    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
                    rec = dict(repeat=repeat, transport=transport, pipeline=pipeline,
                               method=method, size=size, target=name, proto=proto, ok=False)
                    try:
                        res = json.loads(r.stdout.strip().splitlines()[-1])
                        rec.update(ok=True, ops=res["ops_per_sec"],
                                   cpu=res.get("server_cpu_secs_per_million"),
                                   errors=res.get("errors"))
                    except (ValueError, IndexError, KeyError):
                        rec["error"] = r.stderr[-300:]
                    runs.append(rec)
                    log(f"r{repeat} {transport} P={pipeline} {method}{size or ''} {name}/{proto}: "
                        f"{rec.get('ops', 0):,.0f} ops/s")
    finally:
        for d in daemons.values():
            d.stop()
    args.json.write_text(json.dumps(runs, indent=1))

    def med(transport, pipeline, method, size, name, proto, key="ops"):
        vals = [r[key] for r in runs if r["ok"] and r.get(key) is not None
                and (r["transport"], r["pipeline"], r["method"], r["size"], r["target"],
                     r["proto"]) == (transport, pipeline, method, size, name, proto)]
        return statistics.median(vals) if vals else float("nan")

    ceiling = "echo" in daemons
    print("| transport | P | request | JSON-RPC before | after | after/before | CPU s/M before → after "
          "| JSON-RPC/MCP1 before | after | JSON-RPC/Redis before | after | MCP1/Redis after "
          "| Redis CPU s/M |" + (" echo/Redis | after/echo |" if ceiling else ""))
    print("|---" * (13 + 2 * ceiling) + "|")
    for transport, pipeline, method, size in cells:
        k = (transport, pipeline, method, size)
        jb, ja = med(*k, "before", "jsonrpc"), med(*k, "after", "jsonrpc")
        mb, ma = med(*k, "before", "mcp1"), med(*k, "after", "mcp1")
        cb, ca = med(*k, "before", "jsonrpc", "cpu"), med(*k, "after", "jsonrpc", "cpu")
        rd = med(*k, "redis", "resp") if "redis" in daemons else float("nan")
        name = "rpc.ping" if method == "ping" else f"echo {size} B"
        rc = med(*k, "redis", "resp", "cpu") if "redis" in daemons else float("nan")
        row = (f"| {transport} | {pipeline} | {name} | {jb / 1e3:,.0f}k | {ja / 1e3:,.0f}k "
               f"| {ja / jb:.2f}x | {cb:.2f} → {ca:.2f} | {jb / mb:.2f} | {ja / ma:.2f} "
               f"| {jb / rd:.2f} | {ja / rd:.2f} | {ma / rd:.2f} | {rc:.2f} |")
        if ceiling:
            ec = med(*k, "echo", "jsonrpc")
            row += f" {ec / rd:.2f} | {ja / ec:.2f} |"
        print(row)


if __name__ == "__main__":
    main()
