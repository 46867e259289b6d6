#!/bin/bash
# Server instructions per request under callgrind, for comparing two junctiond
# builds on a loaded machine (where time is too noisy): the Ir of a run of N2
# requests minus that of N1, over N2 - N1, so start-up and shutdown cancel out.
#
#   harness/instructions_per_request.sh BIN [PROTO] [-- EXTRA DAEMON FLAGS]
#   e.g. harness/instructions_per_request.sh /tmp/before/junctiond mcp1
#        harness/instructions_per_request.sh target/release/junctiond mcp1 -- --slowlog-threshold 1h
#        BENCH_FLAGS=--monitor harness/instructions_per_request.sh target/release/junctiond mcp1
#   (BENCH_FLAGS: extra junction-bench throughput flags, e.g. --monitor to attach one monitor)
#
# Needs valgrind and target/release/junction-bench. C=16, P=16, ping over Unix,
# epoll, one worker. Under callgrind every call is slow: give a daemon with a
# slow log a threshold it never reaches, or the log's work is counted too.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1; PROTO=${2:-mcp1}; shift $(( $# >= 2 ? 2 : 1 ))
[ "${1:-}" = "--" ] && shift
run() {
  local d; d=$(mktemp -d)
  valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" "$BIN" "$@" --unix "$d/s" --tcp off \
    --workers 1 --backend epoll >/dev/null 2>"$d/vg.log" &
  local pid=$!
  for _ in $(seq 100); do [ -S "$d/s" ] && break; sleep 0.2; done
  target/release/junction-bench throughput --unix "$d/s" --proto "$PROTO" -c 16 -P 16 -n "$N" \
    --warmup 0s --json ${BENCH_FLAGS:-} 2>/dev/null >"$d/run.json"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(grep -E '^(summary|totals):' "$d/cg.out" | head -1 | awk '{print $2}')" \
    "$(python3 -c "import json; print(json.load(open('$d/run.json'))['requests'])")"
  rm -rf "$d"
}
N=50000; read -r I1 R1 < <(run "$@")
N=250000; read -r I2 R2 < <(run "$@")
python3 -c "print('$PROTO: %.1f instructions per request (runs of $R1 and $R2 requests)' % (($I2 - $I1) / ($R2 - $R1)))"
