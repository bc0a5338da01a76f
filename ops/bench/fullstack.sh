#!/usr/bin/env bash
# (b) The full stack on one machine: MariaDB and Redis (shared; a fresh
# database and key prefix), two chat-api nodes, one edge, and `chatty load`
# with G guests in mostly idle rooms (G/50 rooms, 2 messages/s in total).
# Modes: edge    - every guest polls through the edge (two API nodes behind it)
#        direct1 - every guest polls API node 1 directly
#        direct2 - half the guests on each API node (one generator per node)
# Each run: WINDOW seconds (30) after a ramp of max(5, G/1000) s. A mode's
# ladder stops at the first run with errors above 1% or poll p99 > 2 s.
# Env: GUESTS ("1000 2000 5000 10000 20000"), MODES ("edge direct1 direct2"),
#      RAMP_OVERRIDE (seconds of join ramp), RUNS_NAME (fullstack: out/NAME.jsonl),
#      WINDOW (30), SEND_RATE (2), BENCH_SKIP_BUILD.
. "$(dirname "$0")/lib.sh"

GUESTS="${GUESTS:-1000 2000 5000 10000 20000}"
MODES="${MODES:-edge direct1 direct2}"
export WINDOW="${WINDOW:-30}" SEND_RATE="${SEND_RATE:-2}"

build_release
need_bin chat-api chatty
chatty_up stack "${CLUSTER[@]}" --api-nodes 2
A1=${API_URLS[0]}; A2=${API_URLS[1]}
CPU_PROCS=("api1=${API_PIDS[0]}" "api2=${API_PIDS[1]}" "edge=$CHATTY_PID" "mariadb=$(mariadb_pid)" "redis=$(redis_pid)")
RUNS_JSONL="$OUT/${RUNS_NAME:-fullstack}.jsonl"; : > "$RUNS_JSONL"

too_bad() { # last line of RUNS_JSONL
  tail -1 "$RUNS_JSONL" | python3 -c 'import json,sys
r = json.loads(sys.stdin.read())
req = (r.get("poll_requests") or 0) + (r.get("sends") or 0) + (r.get("guests") or 0)
bad = r.get("reports_missing") or (r.get("errors_total", 0) > 0.01 * max(req, 1)) or (r.get("poll_p99_ms", 0) > 2000)
sys.exit(0 if bad else 1)'
}

for mode in $MODES; do
  for g in $GUESTS; do
    log "mode $mode, $g guests"
    case $mode in
      edge) load_run edge "$g" "$CHATTY_URL" ;;
      direct1) load_run direct1 "$g" "$A1" ;;
      direct2) load_run direct2 "$g" "$A1" "$A2" ;;
    esac
    if too_bad; then log "mode $mode stops at $g guests (errors or p99)"; break; fi
    sleep 2
  done
done
show "$REL/chatty" metrics "$CHATTY_EDGE_METRICS"
metric "$CHATTY_EDGE_METRICS" | grep -E '^chatty_edge_(requests_total|map_entries|upstreams_healthy|bus_up)' || true

python3 "$BENCH_DIR/benchlib.py" table "$RUNS_JSONL" | tee "$OUT/${RUNS_NAME:-fullstack}.txt"
python3 - "$RUNS_JSONL" "$OUT/${RUNS_NAME:-fullstack}.json" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"what": "full stack: 2 chat-api nodes, 1 edge, MariaDB, Redis; chatty load, G/50 rooms, 2 msg/s", "runs": runs}, open(sys.argv[2], "w"), indent=2)
PY
run python3 "$BENCH_DIR/benchlib.py" plot "$RUNS_JSONL" "$OUT/${RUNS_NAME:+$RUNS_NAME-}delivery-latency.png" --y delivery_p99_ms --y2 delivery_p50_ms \
  --ylabel "delivery latency, ms (p99 solid, p50 dashed)" --title "Send-to-seen latency vs guests (polls every 2 s)" --logx
run python3 "$BENCH_DIR/benchlib.py" plot "$RUNS_JSONL" "$OUT/${RUNS_NAME:+$RUNS_NAME-}api-load.png" --y api_polls_per_s --y2 api_requests_per_s \
  --ylabel "API requests/s (solid polls, dashed all)" --title "API load vs guests (edge vs polls straight to the API)" --logx
