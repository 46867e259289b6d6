"""harness/compare --bus: a routed call against a direct one, side by side.

A direct call is rpc.ping (or rpc.echo) answered by junctiond itself. A
routed call is bench.ping (bench.echo) forwarded by junctiond to
`junction-bench provide`, a fast provider on the Unix socket, whose answer
the daemon passes back: two hops. Both are driven by the same generator
(`junction-bench throughput`, `--routed` for the second) with the same C, P
and payload, and the answers are byte-identical, so the ratio routed/direct
is the cost of the bus. Target (issue 8): routed >= 0.5 x direct.

Per protocol the provider speaks the callers' protocol (an MCP1 provider
for MCP1 callers, a JSON-RPC one for JSON-RPC callers); callers use Unix or
TCP. Within each cell, direct and routed alternate every repeat and the
median is reported. Writes OUT/bus.{json,md} (--out; default target/bench/).

This module is loaded by harness/compare, which passes itself in (`c`):
servers, runs, medians and tables are shared with the other modes.
"""

import json
import time

PROTO_LABEL = {"mcp1": "MCP1", "jsonrpc": "JSON-RPC"}
TARGET_RATIO = 0.5


def targets(protos):
    """direct-<proto> and routed-<proto> for each protocol, in run order."""
    table = {}
    for proto in protos:
        table[f"direct-{proto}"] = {"server": "junction", "target": "junction", "proto": proto}
        table[f"routed-{proto}"] = {"server": "junction", "target": "junction", "proto": proto,
                                    "routed": True, "provider": f"provider-{proto}"}
    return table


def provider_server(c, proto, daemon):
    """`junction-bench provide` on the daemon's Unix socket: ready once it says it provides."""

    class Provider(c.Server):
        def ready(self):
            return "junction-bench: providing" in self.log_text()

    def make(_d):
        return ([str(c.RELEASE / "junction-bench"), "provide", "--proto", proto,
                 "--unix", daemon.unix], None, None)

    return Provider(f"provider-{proto}", make)


def plan(args):
    return [{"transport": t, "connections": args.connections, "pipeline": p, "method": m,
             "size": args.size if m == "echo" else 0}
            for t in args.transports for p in args.pipelines for m in args.methods]


def summarize(c, cells, runs, names, protos):
    out = c.summarize(cells, runs, names)
    for e in out:
        e["ratios"] = {}
        for proto in protos:
            d = (e["targets"].get(f"direct-{proto}") or {}).get("ops_per_sec")
            r = (e["targets"].get(f"routed-{proto}") or {}).get("ops_per_sec")
            if d and r:
                e["ratios"][f"routed/direct {proto}"] = r / d
    return out


def tables(c, matrix, protos):
    head = ["cell"]
    for proto in protos:
        head += [f"direct {PROTO_LABEL[proto]}", f"routed {PROTO_LABEL[proto]}", "routed/direct"]
    rows, lat_rows = [], []
    lat_head = ["cell"] + [f"{kind} {PROTO_LABEL[p]} p50 / p99"
                           for p in protos for kind in ("direct", "routed")]
    for e in matrix:
        row, lat = [c.cell_label(e)], [c.cell_label(e)]
        for proto in protos:
            for kind in ("direct", "routed"):
                m = e["targets"].get(f"{kind}-{proto}")
                row.append(c.ops_cell(m))
                l_ = (m or {}).get("latency_us", {})
                lat.append(f"{c.us(l_.get('p50'))} / {c.us(l_.get('p99'))}" if m else "FAILED")
            v = e["ratios"].get(f"routed/direct {proto}")
            row.append("-" if v is None else f"{v:.2f}" + ("" if v >= TARGET_RATIO else " (<0.5)"))
        rows.append(row)
        lat_rows.append(lat)
    return (head, rows), (lat_head, lat_rows)


def run(args, command_line, c):
    protos = args.protos
    if not args.no_build:
        c.build()
    for exe in ("junctiond", "junction-bench"):
        if not (c.RELEASE / exe).exists():
            raise SystemExit(f"compare: {c.RELEASE / exe} is missing (build the workspace first)")
    table = targets(protos)
    names = list(table)
    cells = plan(args)
    servers = {"junction": c.Server("junctiond", c.junctiond_cmd)}
    started = time.monotonic()
    runner = None
    try:
        c.log("starting junctiond")
        servers["junction"].start()
        runner = c.Runner(args, servers, False, targets=table)
        runner.planned = args.repeats * len(cells) * len(names)
        per_run = args.duration + c.span_seconds(args.warmup) + 0.5
        c.log(f"{runner.planned} runs of ~{per_run:.1f}s each: about "
              f"{runner.planned * per_run / 60:.1f} minutes")
        for proto in protos:
            # One provider at a time: it owns bench.* while its protocol runs.
            provider = provider_server(c, proto, servers["junction"])
            servers[provider.name] = provider
            provider.start()
            try:
                pair = [f"direct-{proto}", f"routed-{proto}"]
                for cell in cells:
                    for repeat in range(args.repeats):
                        # Alternate which goes first, so neither always follows the other.
                        for name in (pair if repeat % 2 == 0 else pair[::-1]):
                            if name.startswith("routed") and not provider.alive():
                                c.log(f"warning: {provider.name} is down: restarting it")
                                provider.stop()
                                provider.start()
                            runner.bench(name, cell, repeat)
            finally:
                provider.stop()
                del servers[provider.name]
    finally:
        for s in servers.values():
            s.stop()
    elapsed = time.monotonic() - started
    matrix = summarize(c, cells, runner.runs, names, protos)
    report = {
        "command": command_line,
        "machine": c.machine_info(),
        "settings": {"transports": args.transports, "pipelines": args.pipelines,
                     "connections": args.connections, "methods": args.methods, "size": args.size,
                     "protos": protos, "duration_secs": args.duration, "warmup": args.warmup,
                     "threads": args.threads, "repeats": args.repeats, "quick": args.quick,
                     "target_ratio": TARGET_RATIO},
        "targets": table,
        "elapsed_secs": round(elapsed, 1),
        "failed_runs": sum(1 for r in runner.runs if not r["ok"]),
        "medians": {"matrix": matrix},
        "runs": runner.runs,
    }
    write_outputs(c, args, report, protos)
    (head, rows), (lat_head, lat_rows) = tables(c, matrix, protos)
    print(f"\nops/s (median of {args.repeats}; C={args.connections}; routed = two hops "
          f"through a provider)\n")
    print(c.text_table(head, rows))
    print("\nlatency p50 / p99\n")
    print(c.text_table(lat_head, lat_rows))
    failed = report["failed_runs"]
    print(f"\n{len(runner.runs)} runs, {failed} failed, {elapsed / 60:.1f} minutes; "
          f"wrote {args.out}/bus.{{json,md}}")
    if failed:
        return 1 if failed == len(runner.runs) else 2
    return 0


def write_outputs(c, args, report, protos):
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "bus.json").write_text(json.dumps(report, indent=1) + "\n")
    m = report["machine"]
    (head, rows), (lat_head, lat_rows) = tables(c, report["medians"]["matrix"], protos)
    reps = args.repeats
    lines = [
        "# Routed calls against direct calls (service bus)",
        "",
        f"Generated by `{report['command']}` on {m['date']} at commit `{m['commit']}` "
        f"in {report['elapsed_secs'] / 60:.1f} minutes.",
        "",
        "*Direct*: `rpc.ping` / `rpc.echo`, answered by junctiond. *Routed*: `bench.ping` / "
        "`bench.echo`, forwarded by junctiond to `junction-bench provide` (one connection on the "
        "Unix socket, speaking the callers' protocol) and its answer passed back: two hops. "
        "Both driven by `junction-bench throughput` "
        f"(C={args.connections} connections, {args.threads} generator threads, "
        f"{args.duration:g} s per run, `--routed` for the second); the answers are the same "
        f"bytes. Each figure is the median of {reps} run{'s' if reps > 1 else ''}, direct and "
        f"routed alternating. Target (issue 8): routed/direct >= {TARGET_RATIO}.",
        "",
        "## Machine",
        "",
        f"- Command: `{report['command']}`",
        f"- Commit: `{m['commit']}`, {m['date']}",
        f"- OS: {m['uname']}",
        f"- CPU: {m['cpu']} ({m['nproc']} logical cores), shared by the daemon, the provider "
        "and the generator",
        f"- Memory: {m['memory']}",
        f"- {m.get('rustc')}",
        "",
        "## Throughput (ops/s)",
        "",
        c.md_table(head, rows),
        "",
        "## Latency (p50 / p99, median over runs)",
        "",
        c.md_table(lat_head, lat_rows),
        "",
    ]
    failed = [r for r in report["runs"] if not r["ok"]]
    if failed:
        lines += ["## Failed runs", ""]
        for r in failed:
            lines.append(f"- {c.cell_label(r)} {r['target']} (repeat {r['repeat'] + 1}): "
                         f"{(r.get('error') or '').strip().splitlines()[0] if r.get('error') else ''}")
        lines.append("")
    lines += ["Every raw run, with its exact command, is in [bus.json](bus.json).", ""]
    (out / "bus.md").write_text("\n".join(lines))
