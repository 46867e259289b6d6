"""harness/compare --backends: junctiond's two event-loop backends side by side.

One junctiond with `--backend epoll` and one with `--backend io-uring` (each
checked to run the loop it was asked for), driven by the same generator: the
throughput matrix per protocol with the echo server as the ceiling, one-
connection latency, connection bursts on TCP and Unix, and idle memory per
connection on fresh daemons with the kernel's slab growth alongside. In each
cell the backends run back to back, their order reversed every other repeat.
Writes OUT/backends.{json,md,svg} (--out; default target/bench/).

This module is loaded by harness/compare (run as the main script): servers,
runs, medians, tables and plots are shared with the other modes.
"""

import json
import math
import re
import shlex
import socket
import statistics
import time
from pathlib import Path
from xml.sax.saxutils import escape

from __main__ import (  # harness/compare
    RELEASE,
    RUN_SLACK,
    TARGETS,
    TCP_OPEN,
    Runner,
    Server,
    build,
    cell_key,
    cell_label,
    echo_cmd,
    load1,
    log,
    machine_info,
    md_table,
    nice_step,
    ops_cell,
    plan,
    ratio,
    run_cmd,
    si,
    span_seconds,
    summarize,
    svg_doc,
    tail,
    text,
    us,
)

#
# harness/compare --backends: one junctiond per event-loop backend, measured
# side by side. Throughput and latency runs go through Runner.bench (targets
# "<backend>-<proto>"); bursts and idle memory have their own runs here.


def backend_target(backend, proto):
    return f"{backend}-{proto}"


def backend_targets(args):
    """The target table of --backends: <backend>-<proto> for each pair, then the echo ceiling."""
    table = {backend_target(b, proto): {"server": f"junctiond-{b}", "target": "junction",
                                        "proto": proto, "backend": b}
             for proto in args.protos for b in args.backend_list}
    if not args.no_ceiling:
        table["echo"] = dict(TARGETS["echo"])
    return table


def junctiond_backend_cmd(backend, max_connections):
    def make(d):
        return ([str(RELEASE / "junctiond"), "--backend", backend,
                 "--unix", str(d / "j.sock"), "--tcp", "127.0.0.1:0", *TCP_OPEN,
                 "--max-connections", str(max_connections), "--log-format", "human"],
                str(d / "j.sock"), None)
    return make


class BackendServer(Server):
    """A junctiond that must run the event loop it was asked for (its start-up log says)."""

    def __init__(self, name, make_cmd, backend):
        super().__init__(name, make_cmd)
        self.backend = backend
        self.event_loop = None

    def wait_ready(self):
        super().wait_ready()
        m = re.search(r"# event loop: (\S+)", self.log_text())
        self.event_loop = m.group(1) if m else None
        if self.event_loop != self.backend:
            raise RuntimeError(f"{self.name} started with the event loop {self.event_loop!r}, "
                               f"not {self.backend!r}:\n{tail(self.log_text())}")


def rpc_stats(server, timeout=5.0):
    """rpc.stats of a junctiond, over its Unix socket (JSON-RPC, one line); None on failure."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(server.unix)
            s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"rpc.stats"}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)["result"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def open_connections(stats):
    """Connections a junctiond holds, both transports (rpc.stats's own one included)."""
    c = (stats or {}).get("connections", {})
    return (c.get("unix") or {}).get("current", 0) + (c.get("tcp") or {}).get("current", 0)


def wait_connections_gone(server, timeout=15.0):
    """Waits until the daemon holds only the rpc.stats connection; returns the last count."""
    deadline = time.monotonic() + timeout
    count = None
    while time.monotonic() < deadline:
        count = open_connections(rpc_stats(server))
        if count is not None and count <= 1:
            return count
        time.sleep(0.2)
    return count


# The slab caches of the event loops' own per-connection kernel objects.
EPOLL_CACHES = ("eventpoll_epi", "eventpoll_pwq", "ep_head")
URING_CACHES = ("io_kiocb",)


def slab_caches():
    """Bytes per slab cache ({name: bytes}) from /proc/slabinfo (root only), else
    {"Slab": bytes} from /proc/meminfo; None when neither is readable."""
    try:
        out = {}
        for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
            f = line.split()
            out[f[0]] = int(f[2]) * int(f[3])  # objects allocated * object size
        if out:
            return out
    except (OSError, ValueError, IndexError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("Slab:"):
                return {"Slab": int(line.split()[1]) * 1024}
    except (OSError, ValueError, IndexError):
        pass
    return None


class SlabWatch:
    """The kernel's slab memory (system wide) while a run goes on: the reading with the
    largest total, against the one before the run."""

    def __init__(self):
        import threading
        self.base = slab_caches()
        self.peak = self.base
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self):
        while not self.stop_flag.wait(0.1):
            v = slab_caches()
            if v is not None and self.peak is not None and sum(v.values()) > sum(
                    self.peak.values()):
                self.peak = v

    def growth(self):
        """(total bytes, {cache: bytes} of the caches that grew) or None."""
        self.stop_flag.set()
        self.thread.join()
        if self.base is None or self.peak is None:
            return None
        caches = {k: v - self.base.get(k, 0) for k, v in self.peak.items()}
        return sum(caches.values()), {k: v for k, v in caches.items() if v > 0}


class BackendRunner(Runner):
    """Runner.bench for throughput and latency; bursts and idle readings as well."""

    def side_run(self, kind, backend, transport, repeat, cmd, timeout, record_extra):
        server = self.servers[f"junctiond-{backend}"]
        record = dict(kind=kind, target=backend, transport=transport, repeat=repeat, ok=False,
                      **record_extra)
        record["cmd"] = shlex.join(cmd)
        t0 = time.monotonic()
        r = run_cmd(cmd, timeout=timeout)
        wall = time.monotonic() - t0
        record["wall_secs"] = round(wall, 3)
        if r.returncode != 0:
            record["error"] = f"exit {r.returncode}: {tail(r.stderr, 4)}"
        else:
            try:
                record["result"] = json.loads(r.stdout.strip().splitlines()[-1])
                record["ok"] = True
            except (ValueError, IndexError) as e:
                record["error"] = f"unreadable JSON ({e!r}): {tail(r.stdout, 3)}"
        if not server.alive():
            record["ok"] = False
            record["error"] = (record.get("error", "") + f" server died (exit "
                               f"{server.proc.returncode if server.proc else None})").strip()
        return record

    def endpoint(self, server, transport):
        return ["--unix", server.unix] if transport == "unix" else ["--tcp", server.tcp]

    def burst(self, backend, transport, repeat):
        server = self.servers[f"junctiond-{backend}"]
        try:
            server.ensure()
        except (RuntimeError, OSError) as e:
            record = dict(kind="burst", target=backend, transport=transport, repeat=repeat,
                          ok=False, error=f"server down: {e}")
            return self.side_finish(record)
        before = rpc_stats(server)
        proto = self.args.protos[0]
        cmd = [str(RELEASE / "junction-bench"), "burst", "--proto", proto,
               *self.endpoint(server, transport), "-c", str(self.args.burst),
               "--threads", str(self.args.threads), "--json"]
        record = self.side_run("burst", backend, transport, repeat, cmd,
                               timeout=10 + self.args.burst / 500 + RUN_SLACK,
                               record_extra={"connections": self.args.burst, "proto": proto})
        left = wait_connections_gone(server)
        after = rpc_stats(server)
        record["connections_left"] = left
        if before and after:
            c0, c1 = before["connections"], after["connections"]
            record["daemon"] = {k: c1.get(k, 0) - c0.get(k, 0)
                                for k in ("refused_max_connections", "accept_errors",
                                          "fd_exhausted", "sniff_timeouts")}
        if left is None or left > 1:
            record["warning"] = f"{left} connections still open 15 s after the burst"
        return self.side_finish(record)

    def idle(self, backend, transport, repeat):
        """One idle reading on a fresh daemon (restarted, so nothing is pooled or grown yet)."""
        server = self.servers[f"junctiond-{backend}"]
        server.stop()
        try:
            server.start()
        except (RuntimeError, OSError) as e:
            record = dict(kind="idle", target=backend, transport=transport, repeat=repeat,
                          ok=False, error=f"server down: {e}")
            return self.side_finish(record)
        proto = self.args.protos[0]
        cmd = [str(RELEASE / "junction-bench"), "idle", "--proto", proto,
               *self.endpoint(server, transport), "-k", str(self.args.idle),
               "--server-pid", str(server.proc.pid), "--settle", self.args.settle,
               "--close-wait", self.args.close_wait, "--partial", str(self.args.partial),
               "--json"]
        watch = SlabWatch()
        record = self.side_run("idle", backend, transport, repeat, cmd,
                               timeout=2 * span_seconds(self.args.settle) + self.args.idle / 200
                               + 2 * span_seconds(self.args.close_wait) + self.args.partial / 200
                               + RUN_SLACK,
                               record_extra={"connections": self.args.idle, "proto": proto})
        growth = watch.growth()
        if record["ok"] and growth is not None:
            n = max(record["result"].get("connections", 1), 1)
            total, caches = growth
            res = record["result"]
            res["slab_growth_bytes"] = total
            res["slab_bytes_per_connection"] = total / n
            res["slab_caches_bytes_per_connection"] = {
                k: round(v / n, 1) for k, v in sorted(caches.items(), key=lambda kv: -kv[1])
                if v / n >= 1}
            if "Slab" not in caches:
                res["loop_objects_bytes_per_connection"] = {
                    "epoll": sum(caches.get(k, 0) for k in EPOLL_CACHES) / n,
                    "io-uring": sum(caches.get(k, 0) for k in URING_CACHES) / n}
        return self.side_finish(record)

    def side_finish(self, record):
        self.done += 1
        record["load1"] = load1()
        self.runs.append(record)
        res = record.get("result") or {}
        if not record["ok"]:
            outcome = "FAILED: " + (record.get("error", "").strip().splitlines() or [""])[0]
        elif record["kind"] == "burst":
            outcome = (f"{res.get('ok', 0):>6} answered, {res.get('failed', 0)} failed, "
                       f"{res.get('seconds', 0):.2f}s, answer p99 "
                       f"{us((res.get('first_response_us') or {}).get('p99'))}")
        else:
            outcome = (f"{res.get('bytes_per_connection', 0):,.0f} B/conn RSS, after close "
                       f"{res.get('after_close_growth_kib', 0):+,} KiB"
                       + (f", after partial {res['after_partial_growth_kib']:+,} KiB"
                          if res.get("after_partial_growth_kib") is not None else "")
                       + (f", slab {res['slab_bytes_per_connection']:,.0f} B/conn"
                          if res.get("slab_bytes_per_connection") is not None else ""))
        if record.get("warning"):
            outcome += f"  ({record['warning']})"
        what = f"{record['kind']} {record['transport']} C={record.get('connections')}"
        log(f"[{self.done:>3}/{self.planned}] {what:<26} {record['target']:<17} "
            f"rep {record['repeat'] + 1}  {record.get('wall_secs', 0):5.1f}s  {outcome}")
        return record


def backend_order(backends, repeat):
    """The backends in the order of this repeat: reversed every other repeat, so that
    neither always runs first after the previous cell."""
    return list(backends) if repeat % 2 == 0 else list(reversed(backends))


def paired_ratios(runs, cell, proto, backends):
    """io-uring/epoll of ops/s per repeat (the two ran next to each other)."""
    if len(backends) != 2:
        return []
    a, b = (backend_target(x, proto) for x in backends)
    out = []
    by = {}
    for r in runs:
        if r.get("kind") is None and cell_key(r) == cell_key(cell) and r["ok"]:
            by[(r["target"], r["repeat"])] = r["result"]["ops_per_sec"]
    for (t, rep_), v in sorted(by.items(), key=lambda kv: kv[0][1]):
        if t == b and by.get((a, rep_)):
            out.append(v / by[(a, rep_)])
    return out


def summarize_backends(cells, runs, names, args):
    out = summarize(cells, runs, names)
    bl = args.backend_list
    for e in out:
        e["ratios"] = {}
        for proto in args.protos:
            if len(bl) == 2:
                x, y = ((e["targets"].get(backend_target(b, proto)) or {}) for b in bl)
                key = f"{bl[1]}/{bl[0]} {proto}"
                if x.get("ops_per_sec") and y.get("ops_per_sec"):
                    e["ratios"][key] = y["ops_per_sec"] / x["ops_per_sec"]
                if x.get("server_cpu_secs_per_million") and y.get("server_cpu_secs_per_million"):
                    e["ratios"][f"cpu {key}"] = (y["server_cpu_secs_per_million"]
                                                 / x["server_cpu_secs_per_million"])
                e["ratios"][f"paired {key}"] = paired_ratios(runs, e, proto, bl)
            echo = (e["targets"].get("echo") or {}).get("ops_per_sec")
            for b in bl:
                v = (e["targets"].get(backend_target(b, proto)) or {}).get("ops_per_sec")
                if v and echo:
                    e["ratios"][f"{b}-{proto}/echo"] = v / echo
    return out


def summarize_side(kind, runs, args):
    """Medians of bursts or idle readings per transport and backend."""
    out = []
    for transport in ("tcp", "unix"):
        for b in args.backend_list:
            recs = [r for r in runs if r.get("kind") == kind and r["transport"] == transport
                    and r["target"] == b]
            if not recs:
                continue
            ok = [r["result"] for r in recs if r["ok"]]
            entry = {"transport": transport, "backend": b, "runs": len(ok),
                     "failed_runs": len(recs) - len(ok)}

            def med(values):
                values = [v for v in values if isinstance(v, (int, float))]
                return statistics.median(values) if values else None

            if kind == "burst":
                entry.update(
                    connections=args.burst,
                    answered=[r.get("ok") for r in ok],
                    failed=[r.get("failed") for r in ok],
                    failures=[r.get("failures") for r in ok],
                    seconds=med([r.get("seconds") for r in ok]),
                    connect_p99_us=med([(r.get("connect_us") or {}).get("p99") for r in ok]),
                    answer_p50_us=med([(r.get("first_response_us") or {}).get("p50") for r in ok]),
                    answer_p99_us=med([(r.get("first_response_us") or {}).get("p99") for r in ok]),
                    connections_left=[r.get("connections_left") for r in recs],
                    daemon=[r.get("daemon") for r in recs],
                )
            else:
                entry.update(
                    connections=args.idle,
                    bytes_per_connection=med([r.get("bytes_per_connection") for r in ok]),
                    all_bytes_per_connection=[r.get("bytes_per_connection") for r in ok],
                    rss_before_kib=med([r.get("rss_before_kib") for r in ok]),
                    after_close_growth_kib=med([r.get("after_close_growth_kib") for r in ok]),
                    all_after_close_growth_kib=[r.get("after_close_growth_kib") for r in ok],
                    after_partial_growth_kib=med([r.get("after_partial_growth_kib")
                                                  for r in ok]),
                    all_after_partial_growth_kib=[r.get("after_partial_growth_kib")
                                                  for r in ok],
                    slab_bytes_per_connection=med([r.get("slab_bytes_per_connection")
                                                   for r in ok]),
                    loop_objects_bytes_per_connection={
                        k: med([(r.get("loop_objects_bytes_per_connection") or {}).get(k)
                                for r in ok]) for k in ("epoll", "io-uring")},
                )
            out.append(entry)
    return out




def load_average():
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return None


def compare_backends(args, command_line):
    if not args.no_build:
        build()
    for exe in ("junctiond", "junction-echo", "junction-bench"):
        if not (RELEASE / exe).exists():
            raise SystemExit(f"compare: {RELEASE / exe} is missing (build the workspace first)")
    table = backend_targets(args)
    bl = args.backend_list
    cells, _ = plan(args)
    lat_cells = [{"mode": "latency", "transport": t, "connections": 1, "pipeline": 1,
                  "method": "ping", "size": 0} for t in args.transports]
    servers = {}
    load_before = load_average()
    started = time.monotonic()
    runner = None
    try:
        log("starting servers")
        for b in bl:
            name = f"junctiond-{b}"
            servers[name] = BackendServer(name, junctiond_backend_cmd(b, args.max_connections), b)
        if "echo" in table:
            servers["junction-echo"] = Server("junction-echo", echo_cmd)
            table["echo"]["server"] = "junction-echo"
        for s in servers.values():
            try:
                s.start()
            except (RuntimeError, OSError) as e:
                raise SystemExit(f"compare: {s.name} did not start: {e}")
        runner = BackendRunner(args, servers, False, targets=table)
        n_proto_targets = len(args.protos) * len(bl)
        idle_runs = (len(args.transports) * len(bl) * args.idle_repeats) if args.idle else 0
        burst_runs = (len(args.transports) * len(bl) * args.repeats) if args.burst else 0
        runner.planned = (args.repeats * len(cells) * (n_proto_targets + ("echo" in table))
                          + args.repeats * len(lat_cells) * n_proto_targets
                          + idle_runs + burst_runs)
        per_run = args.duration + span_seconds(args.warmup) + 0.4
        estimate = (args.repeats * (len(cells) * (n_proto_targets + ("echo" in table))
                                    + len(lat_cells) * n_proto_targets) * per_run
                    + idle_runs * (2 * span_seconds(args.settle) + args.idle / 6000 + 0.5
                                   + 2 * span_seconds(args.close_wait) + 1)
                    + burst_runs * (1.5 + args.burst / 10000))
        log(f"{runner.planned} runs: about {estimate / 60:.1f} minutes; "
            f"load average {' '.join(load_before or ['?'])}")

        # 1. Idle memory first, each reading on a fresh daemon.
        if args.idle:
            for transport in args.transports:
                for repeat in range(args.idle_repeats):
                    for b in backend_order(bl, repeat):
                        runner.idle(b, transport, repeat)
        # 2. Throughput, one protocol after the other (MCP1 first): in each cell the
        #    backends run next to each other, then the ceiling (with the first protocol).
        for i, proto in enumerate(args.protos):
            for cell in cells:
                for repeat in range(args.repeats):
                    for b in backend_order(bl, repeat):
                        runner.bench(backend_target(b, proto), cell, repeat)
                    if i == 0 and "echo" in table:
                        runner.bench("echo", cell, repeat)
        # 3. One-connection latency.
        for cell in lat_cells:
            for proto in args.protos:
                for repeat in range(args.repeats):
                    for b in backend_order(bl, repeat):
                        runner.bench(backend_target(b, proto), cell, repeat)
        # 4. Bursts (last: they leave TIME_WAIT sockets behind).
        if args.burst:
            for transport in ("tcp", "unix"):
                if transport not in args.transports:
                    continue
                for repeat in range(args.repeats):
                    for b in backend_order(bl, repeat):
                        runner.burst(b, transport, repeat)
        final_stats = {s.name: rpc_stats(s) for s in servers.values()
                       if isinstance(s, BackendServer) and s.alive()}
        restarts = {s.name: s.starts for s in servers.values()}
    finally:
        for s in servers.values():
            s.stop()
    elapsed = time.monotonic() - started
    load_after = load_average()

    names = list(table)
    matrix = summarize_backends(cells, [r for r in runner.runs if "kind" not in r], names, args)
    latency = summarize_backends(lat_cells, [r for r in runner.runs if "kind" not in r],
                                 [n for n in names if n != "echo"], args)
    bursts = summarize_side("burst", runner.runs, args)
    idle = summarize_side("idle", runner.runs, args)
    info = machine_info()
    info["load_average_before"] = load_before
    info["load_average_after"] = load_after
    failed_runs = sum(1 for r in runner.runs if not r["ok"])
    report = {
        "command": command_line,
        "machine": info,
        "settings": {
            "backends": bl, "protos": args.protos, "transports": args.transports,
            "pipelines": args.pipelines, "connections": args.connections,
            "methods": args.methods, "size": args.size, "duration_secs": args.duration,
            "warmup": args.warmup, "threads": args.threads, "repeats": args.repeats,
            "burst": args.burst, "idle": args.idle, "idle_repeats": args.idle_repeats,
            "settle": args.settle, "max_connections": args.max_connections,
            "close_wait": args.close_wait, "partial": args.partial,
            "ceiling": "echo" in table, "quick": args.quick,
        },
        "targets": table,
        "elapsed_secs": round(elapsed, 1),
        "failed_runs": failed_runs,
        "server_starts": restarts,
        "final_stats": final_stats,
        "medians": {"matrix": matrix, "latency": latency, "burst": bursts, "idle": idle},
        "runs": runner.runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backends.json").write_text(json.dumps(report, indent=1) + "\n")
    md = backends_markdown(report, args)
    (args.out / "backends.md").write_text(md)
    if len(bl) == 2:
        (args.out / "backends.svg").write_text(backends_svg(matrix, args))
    print(md)
    log(f"{len(runner.runs)} runs, {failed_runs} failed, {elapsed / 60:.1f} minutes; "
        f"wrote {args.out}/backends.{{json,md" + (",svg" if len(bl) == 2 else "") + "}")
    if failed_runs:
        return 1 if failed_runs == len(runner.runs) else 2
    return 0


PROTO_LABEL = {"mcp1": "MCP1", "jsonrpc": "JSON-RPC"}


def load_span(runs):
    loads = sorted(r["load1"] for r in runs if isinstance(r.get("load1"), (int, float)))
    if not loads:
        return "?"
    return (f"min {loads[0]:.2f}, median {statistics.median(loads):.2f}, "
            f"max {loads[-1]:.2f}")


def backends_tables(report, args):
    """(title, head, rows) of every table of the --backends report."""
    bl = args.backend_list
    two = len(bl) == 2
    med = report["medians"]
    tables = []
    # Throughput.
    head = ["cell"]
    for proto in args.protos:
        head += [f"{b} {PROTO_LABEL[proto]}" for b in bl]
        if two:
            head += [f"**{bl[1]}/{bl[0]}**", "per repeat"]
    if args.protos and not args.no_ceiling:
        head += ["echo"] + [f"{b} {PROTO_LABEL[args.protos[0]]}/echo" for b in bl]
    rows = []
    for e in med["matrix"]:
        row = [cell_label(e)]
        for proto in args.protos:
            row += [ops_cell(e["targets"].get(backend_target(b, proto))) for b in bl]
            if two:
                key = f"{bl[1]}/{bl[0]} {proto}"
                row += [f"**{ratio(e['ratios'].get(key))}**",
                        " ".join(f"{x:.2f}" for x in e["ratios"].get(f"paired {key}", []))
                        or "-"]
        if args.protos and not args.no_ceiling:
            row.append(ops_cell(e["targets"].get("echo")))
            row += [ratio(e["ratios"].get(f"{b}-{args.protos[0]}/echo")) for b in bl]
        rows.append(row)
    tables.append(("throughput", head, rows))
    # Server CPU per million requests.
    head = ["cell"]
    for proto in args.protos:
        head += [f"{b} {PROTO_LABEL[proto]}" for b in bl] + ([f"{bl[1]}/{bl[0]}"] if two else [])
    rows = []
    for e in med["matrix"]:
        row = [cell_label(e)]
        for proto in args.protos:
            for b in bl:
                v = (e["targets"].get(backend_target(b, proto)) or {}).get(
                    "server_cpu_secs_per_million")
                row.append("-" if v is None else f"{v:.2f}")
            if two:
                row.append(ratio(e["ratios"].get(f"cpu {bl[1]}/{bl[0]} {proto}")))
        rows.append(row)
    tables.append(("cpu", head, rows))
    # Latency under load (p50 / p99 of the throughput runs).
    head = ["cell"] + [f"{b} {PROTO_LABEL[proto]}" for proto in args.protos for b in bl]
    rows = []
    for e in med["matrix"]:
        row = [cell_label(e)]
        for proto in args.protos:
            for b in bl:
                lat = ((e["targets"].get(backend_target(b, proto)) or {}).get("latency_us") or {})
                row.append(f"{us(lat.get('p50'))} / {us(lat.get('p99'))}" if lat else "FAILED")
        rows.append(row)
    tables.append(("loaded latency", head, rows))
    # One-connection latency.
    head = ["transport, protocol"] + [f"{b} p50 / p99" for b in bl]
    if two:
        head += [f"p50 {bl[1]}/{bl[0]}", f"p99 {bl[1]}/{bl[0]}"]
    head += [f"{b} ops/s" for b in bl]
    rows = []
    for e in med["latency"]:
        for proto in args.protos:
            ms = [e["targets"].get(backend_target(b, proto)) for b in bl]
            lats = [(m or {}).get("latency_us") or {} for m in ms]
            row = [f"{e['transport']} {PROTO_LABEL[proto]}"]
            row += [f"{us(l.get('p50'))} / {us(l.get('p99'))}" if l else "FAILED" for l in lats]
            if two:
                for k in ("p50", "p99"):
                    x, y = lats[0].get(k), lats[1].get(k)
                    row.append(ratio(y / x) if x and y else "-")
            row += [si((m or {}).get("ops_per_sec")) for m in ms]
            rows.append(row)
    tables.append(("latency", head, rows))
    # Bursts.
    head = ["transport", "backend", "connections", "answered (per run)", "failed (per run)",
            "burst took", "connect p99", "answer p50", "answer p99", "left open after"]
    rows = []
    for e in med["burst"]:
        rows.append([e["transport"], e["backend"], f"{e['connections']:,}",
                     " / ".join(f"{x:,}" for x in e["answered"]) or "-",
                     " / ".join(str(x) for x in e["failed"]) or "-",
                     "-" if e["seconds"] is None else f"{e['seconds']:.2f} s",
                     us(e["connect_p99_us"]), us(e["answer_p50_us"]), us(e["answer_p99_us"]),
                     " / ".join(str(x) for x in e["connections_left"])])
    tables.append(("burst", head, rows))
    # Idle memory.
    head = ["transport"] + [f"{b} RSS B/conn" for b in bl] + [
        f"{b} after close, KiB over baseline" for b in bl] + [
        f"{b} after {args.partial:,} partial frames, KiB over baseline" for b in bl] + [
        f"{b} kernel slab B/conn" for b in bl] + [f"{b}: its loop's kernel objects B/conn"
                                                   for b in bl]
    rows = []
    for transport in ("tcp", "unix"):
        es = {e["backend"]: e for e in med["idle"] if e["transport"] == transport}
        if not es:
            continue
        row = [transport]
        for b in bl:
            e = es.get(b)
            row.append("FAILED" if not e or e["bytes_per_connection"] is None else
                       f"{e['bytes_per_connection']:,.0f} ("
                       + ", ".join(f"{x:,.0f}" for x in e["all_bytes_per_connection"]) + ")")
        for key in ("after_close_growth_kib", "after_partial_growth_kib"):
            for b in bl:
                e = es.get(b) or {}
                v = e.get(key)
                row.append("-" if v is None else f"{v:+,.0f} (" + ", ".join(
                    f"{x:+,.0f}" for x in e.get("all_" + key) or [] if x is not None) + ")")
        for b in bl:
            v = (es.get(b) or {}).get("slab_bytes_per_connection")
            row.append("-" if v is None else f"{v:,.0f}")
        for b in bl:
            v = ((es.get(b) or {}).get("loop_objects_bytes_per_connection") or {}).get(b)
            row.append("-" if v is None else f"{v:,.0f}")
        rows.append(row)
    tables.append(("idle", head, rows))
    return tables


def backends_markdown(report, args):
    m = report["machine"]
    s = report["settings"]
    bl = args.backend_list
    reps = args.repeats
    t = {name: (head, rows) for name, head, rows in backends_tables(report, args)}
    lines = [
        "# Junction event-loop backends side by side",
        "",
        f"Generated by `{report['command']}` on {m['date']} at commit `{m['commit']}` "
        f"in {report['elapsed_secs'] / 60:.1f} minutes.",
        "",
        f"One junctiond per backend (`--backend {'` and `--backend '.join(bl)}`, both with "
        f"`--max-connections {s['max_connections']}`), each checked to run the event loop it was "
        "asked for (its start-up log), driven by the same generator, `junction-bench` "
        f"({args.threads} threads, {args.duration:g} s per run). In every cell the backends run "
        "next to each other, in turn, the order reversed every other repeat; each figure is the "
        f"median of {reps} run{'s' if reps > 1 else ''}. `echo` is `junction-echo`, a raw epoll "
        "echo server with no parsing: the ceiling of this machine.",
        "",
        "## Machine",
        "",
        f"- Command: `{report['command']}`",
        f"- Commit: `{m['commit']}`, {m['date']}",
        f"- Kernel: {m['uname']}",
        f"- CPU: {m['cpu']} ({m['nproc']} logical cores)",
        f"- Memory: {m['memory']}",
        f"- {m.get('rustc')}",
        f"- Load average (1, 5, 15 min) before: {' '.join(m.get('load_average_before') or ['?'])}"
        f"; after: {' '.join(m.get('load_average_after') or ['?'])}; 1-minute load at the end "
        f"of each run (this comparison's own load included): {load_span(report['runs'])}",
    ]
    if m.get("junction_env"):
        lines.append(f"- JUNCTION_* environment: `{m['junction_env']}`")
    lines += ["", f"## Throughput (ops/s, C={args.connections})", ""]
    lines += [md_table(*t["throughput"]), ""]
    if len(bl) == 2:
        lines += [f"`{bl[1]}/{bl[0]}`: ratio of the medians; `per repeat`: the ratio within each "
                  "repeat, where the two ran back to back (its spread is the noise).",
                  "", "![backend ratios](backends.svg)", ""]
    lines += ["## Server CPU (seconds per million requests; lower is better)", "",
              md_table(*t["cpu"]), "",
              "## Latency under load (p50 / p99 of the throughput runs)", "",
              md_table(*t["loaded latency"]), "",
              "## Latency (one connection, one request at a time, ping)", "",
              md_table(*t["latency"]), ""]
    if args.burst:
        lines += [f"## Connection bursts (`junction-bench burst -c {args.burst}`, "
                  f"{PROTO_LABEL[args.protos[0]]})", "", md_table(*t["burst"]), "",
                  "`left open after`: connections the daemon still held (rpc.stats, its own query "
                  "included) once the burst was over and its clients gone.", ""]
    if args.idle:
        lines += [f"## Memory per idle connection (`junction-bench idle -k {args.idle} "
                  f"--settle {args.settle} --close-wait {args.close_wait} --partial "
                  f"{args.partial}`, fresh daemon per reading)", "",
                  md_table(*t["idle"]), "",
                  "RSS: the daemon's RSS growth per connection after every connection sent its "
                  f"request at once and all sat idle for {args.settle}, median (each reading in "
                  f"parentheses). After close: RSS {args.close_wait} after they all closed, "
                  "against the baseline before the burst; after partial frames: the same once "
                  f"{args.partial:,} connections each sent the start of a frame and closed. "
                  "Kernel slab: the growth of the kernel's slab caches "
                  "(/proc/slabinfo, or `Slab:` of /proc/meminfo without root) while the "
                  "connections were open, per connection: system wide and both ends of each "
                  "socket, so indicative only. Its loop's kernel objects: the part of it in the "
                  "caches of the backend's own per-connection objects (epoll: "
                  f"{', '.join(EPOLL_CACHES)}; io_uring: {', '.join(URING_CACHES)}, the pending "
                  "poll of each idle connection); these do not count in the daemon's RSS.", ""]
    failed = [r for r in report["runs"] if not r["ok"]]
    warned = [r for r in report["runs"] if r["ok"] and r.get("warning")]
    if failed or warned:
        lines += ["## Failed runs and warnings", ""]
        for r in failed + warned:
            what = r.get("kind") or cell_label(r)
            msg = r.get("error") if not r["ok"] else r.get("warning")
            lines.append(f"- {what} {r['transport']} {r['target']} (repeat {r['repeat'] + 1}): "
                         f"{(msg or '').strip().splitlines()[0] if msg else ''}")
        lines.append("")
    lines += ["Every raw run, with its exact command, is in [backends.json](backends.json).", ""]
    return "\n".join(lines)


def backends_svg(matrix, args):
    """Horizontal bars: io-uring/epoll ops/s per cell and protocol, around 1.0."""
    bl = args.backend_list
    protos = args.protos
    key = lambda proto: f"{bl[1]}/{bl[0]} {proto}"
    rows = [(cell_label(e), proto, e["ratios"].get(key(proto)), e["ratios"].get(f"paired {key(proto)}", []))
            for e in matrix for proto in protos]
    values = [v for _, _, v, p in rows if v] + [x for _, _, _, p in rows for x in p]
    lo = min([0.8] + [v - 0.05 for v in values])
    hi = max([1.2] + [v + 0.05 for v in values])
    W, L, R, T, B, rh = 820, 200, 40, 60, 50, 18
    H = T + B + rh * len(rows) + 6 * len(matrix)
    pw = W - L - R
    px = lambda v: L + (v - lo) / (hi - lo) * pw
    colors = {"mcp1": "#2a9d3a", "jsonrpc": "#1f6fb4"}
    body = [text(W / 2, 26, f"{bl[1]} / {bl[0]} throughput (ops/s ratio; > 1: {bl[1]} faster)",
                 size=15, weight="bold"),
            text(W / 2, 44, f"C={args.connections}; bar: ratio of the medians, ticks: each repeat",
                 size=11, fill="#555")]
    step = nice_step(hi - lo, 8)
    v = math.ceil(lo / step) * step
    while v <= hi + 1e-9:
        body.append(f'<line x1="{px(v):.1f}" y1="{T}" x2="{px(v):.1f}" y2="{H - B}" '
                    f'stroke="{"#555" if abs(v - 1) < 1e-9 else "#e4e4e4"}"/>')
        body.append(text(px(v), H - B + 16, f"{v:g}", size=11))
        v += step
    y = T
    last = None
    for label, proto, r, paired in rows:
        if last is not None and label != last:
            y += 6
        last = label
        if r:
            x0, x1 = sorted((px(1.0), px(r)))
            body.append(f'<rect x="{x0:.1f}" y="{y + 2}" width="{x1 - x0:.1f}" height="{rh - 4}" '
                        f'fill="{colors[proto]}"><title>{escape(label)} {proto}: {r:.2f}'
                        f'</title></rect>')
        for p_ in paired:
            body.append(f'<line x1="{px(p_):.1f}" y1="{y + 1}" x2="{px(p_):.1f}" '
                        f'y2="{y + rh - 1}" stroke="#000" stroke-width="1.5"/>')
        body.append(text(L - 8, y + rh - 5, f"{label} {PROTO_LABEL[proto]}", anchor="end", size=11))
        y += rh
    body.append(text(L + pw / 2, H - 14, f"{bl[1]} ops/s / {bl[0]} ops/s"))
    return svg_doc(W, H, body)
