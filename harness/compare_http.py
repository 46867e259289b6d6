#!/usr/bin/env python3
"""JSON-RPC over HTTP POST and over WebSocket against line JSON-RPC.

Starts a release junctiond (epoll unless --backend), then runs
`junction-bench throughput` with --proto jsonrpc, http and ws in turn, for
each pipeline depth, `--rounds` times interleaved (so that the machine's
load hits all three alike), and prints the medians as a markdown table:
requests per second, the daemon's CPU seconds per million requests, and
the ratios to line JSON-RPC. The answers are the same JSON-RPC bytes, only
the framing differs, so the ratios are the cost of HTTP and WebSocket.

    cargo build --release --bin junctiond -p junction-harness
    python3 harness/compare_http.py [--tcp] [--rounds 5] [--seconds 3]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
PROTOS = ["jsonrpc", "http", "ws"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tcp", action="store_true", help="TCP on loopback (default: the Unix socket)")
    parser.add_argument("--backend", default="epoll")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--pipelines", default="1,16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="junction-http-bench-")
    sock = os.path.join(work, "j.sock")
    tcp = "127.0.0.1:17911"
    daemon = subprocess.Popen(
        [str(RELEASE / "junctiond"), "--unix", sock, "--tcp", tcp, "--tcp-anonymous", "true",
         "--backend", args.backend, "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        where = ["--tcp", tcp] if args.tcp else ["--unix", sock]
        results = {}
        for _ in range(args.rounds):
            for pipeline in [int(p) for p in args.pipelines.split(",")]:
                for proto in PROTOS:
                    out = subprocess.run(
                        [str(RELEASE / "junction-bench"), "throughput", *where, "--proto", proto,
                         "-c", str(args.connections), "-P", str(pipeline), "-d", f"{args.seconds}s",
                         "--warmup", "500ms", "--server-pid", str(daemon.pid), "--json"],
                        check=True, capture_output=True, text=True).stdout
                    report = json.loads(out.strip().splitlines()[-1])
                    cell = results.setdefault((pipeline, proto), {"ops": [], "cpu": []})
                    cell["ops"].append(report["ops_per_sec"])
                    cell["cpu"].append(report["server_cpu_secs_per_million"])
    finally:
        daemon.terminate()
        daemon.wait()
    load = os.getloadavg()[0]
    transport = "TCP loopback" if args.tcp else "Unix socket"
    print(f"{transport}, {args.connections} connections, {args.backend}, median of {args.rounds} "
          f"interleaved rounds of {args.seconds}s, load average {load:.1f}\n")
    print("| P | protocol | requests/s | daemon CPU s per million | throughput vs line | CPU vs line |")
    print("|---|----------|-----------:|-------------------------:|-------------------:|------------:|")
    for (pipeline, proto), cell in sorted(results.items(), key=lambda kv: (kv[0][0], PROTOS.index(kv[0][1]))):
        ops = statistics.median(cell["ops"])
        cpu = statistics.median(cell["cpu"])
        line = results[(pipeline, "jsonrpc")]
        line_ops = statistics.median(line["ops"])
        line_cpu = statistics.median(line["cpu"])
        print(f"| {pipeline} | {proto} | {ops:,.0f} | {cpu:.2f} | {ops / line_ops:.2f} | {cpu / line_cpu:.2f} |")


if __name__ == "__main__":
    main()
