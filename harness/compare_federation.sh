#!/usr/bin/env bash
# Direct, routed locally, and routed through NATS to another daemon on the
# same machine, interleaved, at P=1 and P=16 (docs/benchmarks.md,
# "Federation"). Needs nats-server (.ci/needs/nats.sh) and release builds:
#   cargo build --release -p junction -p junction-harness
# Usage: harness/compare_federation.sh [SECONDS] [REPEATS] [PROTO]
# Prints one JSON line per run, then the medians and the ratios to direct.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3}
REPEATS=${2:-3}
PROTO=${3:-mcp1}
BIN=target/release
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NATS_PORT=$(port)
nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$DIR/nats.log" 2>&1 &
PIDS+=($!)
daemon() { # NAME EXTRA...
    local name=$1; shift
    "$BIN/junctiond" --unix "$DIR/$name.sock" --tcp off --backend "${JUNCTION_BACKEND:-epoll}" \
        --nats "nats://127.0.0.1:$NATS_PORT" --nats-cluster bench "$@" >"$DIR/$name.log" 2>&1 &
    PIDS+=($!)
}
daemon a --allow 'token:cluster:call:bench.*'
daemon b
for _ in $(seq 100); do
    grep -q "nats: connected" "$DIR/a.log" 2>/dev/null && grep -q "nats: connected" "$DIR/b.log" 2>/dev/null && break
    sleep 0.1
done
"$BIN/junction-bench" provide --proto "$PROTO" --unix "$DIR/a.sock" >"$DIR/provider.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    grep -q "providing" "$DIR/provider.log" 2>/dev/null && break
    sleep 0.1
done
run() { # CASE SOCKET P EXTRA...
    local case=$1 sock=$2 p=$3; shift 3
    local out
    out=$("$BIN/junction-bench" throughput --proto "$PROTO" --unix "$sock" -c 1 -P "$p" \
        -d "${SECS}s" --warmup 1s --json "$@")
    echo "{\"case\":\"$case\",\"pipeline\":$p,\"run\":$out}"
}
RESULTS=$DIR/results.jsonl
for _ in $(seq "$REPEATS"); do
    for p in 1 16; do
        run direct "$DIR/b.sock" "$p" | tee -a "$RESULTS"
        run routed-local "$DIR/a.sock" "$p" --routed | tee -a "$RESULTS"
        run routed-nats "$DIR/b.sock" "$p" --routed | tee -a "$RESULTS"
    done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def rate(r):
    run = r["run"]
    return run["ops_per_sec"]
print("\ncase            P   median req/s   ratio to direct   median p50 us")
for p in (1, 16):
    med = {c: statistics.median(rate(r) for r in rows if r["case"] == c and r["pipeline"] == p)
           for c in ("direct", "routed-local", "routed-nats")}
    for c, v in med.items():
        p50 = statistics.median(r["run"]["latency_us"]["p50"] for r in rows
                                if r["case"] == c and r["pipeline"] == p)
        print(f"{c:<14} {p:>3} {v:>14.0f} {v / med['direct']:>17.3f} {p50:>15.1f}")
PY
