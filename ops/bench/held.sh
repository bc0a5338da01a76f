#!/usr/bin/env bash
# (h) Guests held on this box, and (i) a live event: the `chatty up` cluster
# (MariaDB and Redis shared, a fresh database and key prefix; two chat-api
# nodes; one edge) with every guest holding an event stream or a held poll.
#   held - G guests (100,000) in G/50 rooms, 1 message/s in all, the checker
#          on: edge RSS before the joins and with every guest held (memory
#          per held guest), CPU of every process over the window (CPU per
#          1,000 guests, nearly idle), delivery, errors.
#   live - one room, LIVE_GUESTS (10,000) guests, LIVE_RATE (10) messages/s:
#          delivery p99, API page fetches per message, nothing lost.
# Env: SCENARIOS ("held live"), TRANSPORT (stream | hold), G (100000),
#      LIVE_GUESTS (10000), LIVE_RATE (10), WINDOW (30), BENCH_SKIP_BUILD.
. "$(dirname "$0")/lib.sh"

SCENARIOS="${SCENARIOS:-held live}"
TRANSPORT="${TRANSPORT:-stream}"
G="${G:-100000}"; LIVE_GUESTS="${LIVE_GUESTS:-10000}"; LIVE_RATE="${LIVE_RATE:-10}"
export WINDOW="${WINDOW:-30}"
MAX_G=$(( G > LIVE_GUESTS ? G : LIVE_GUESTS ))
FILES=$(( 2 * MAX_G + 4096 ))
ulimit -n "$FILES" 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
RUNS_JSONL="$OUT/held.jsonl"; : > "$RUNS_JSONL"

build_release
need_bin chat-api chatty
export CHATTY_EDGE_MAX_HELD=$(( MAX_G + 1000 ))
chatty_up stack "${CLUSTER[@]}" --api-nodes 2
CPU_PROCS=("api1=${API_PIDS[0]}" "api2=${API_PIDS[1]}" "edge=$CHATTY_PID" "mariadb=$(mariadb_pid)" "redis=$(redis_pid)")

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# sample_rss FILE: the edge's RSS and open streams every second, until killed.
sample_rss() {
  while :; do
    echo "$(date +%s) $(rss_kb "$CHATTY_PID") $(metric "$CHATTY_EDGE_METRICS" chatty_edge_open_streams) $(metric "$CHATTY_EDGE_METRICS" chatty_edge_held_polls)"
    sleep 1
  done > "$1"
}

run_scenario() { # LABEL GUESTS ROOMS RATE SOURCE_ADDRS
  local label="$1" g="$2" rooms="$3" rate="$4" addrs="$5" r0 samples sampler
  r0=$(rss_kb "$CHATTY_PID"); samples="$OUT/$label-rss.txt"
  sample_rss "$samples" & sampler=$!
  LOAD_FLAGS=(--transport "$TRANSPORT" --check --source-addrs "$addrs")
  ROOMS_OVERRIDE="$rooms" SEND_RATE="$rate" RAMP_OVERRIDE="${RAMP:-$(( g / 1000 < 10 ? 10 : g / 1000 ))}" \
    LOAD_TIMEOUT=$(( g / 500 + 300 )) load_run "$label-$TRANSPORT" "$g" "$CHATTY_URL" >/dev/null
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  python3 - "$RUNS_JSONL" "$samples" "$r0" "$label" "$TRANSPORT" <<'PY'
import json, sys
path, samples, r0, label, transport = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
lines = open(path).read().strip().splitlines()
r = json.loads(lines[-1])
rows = [l.split() for l in open(samples) if len(l.split()) == 4]
held = [(int(t), int(rss), float(s) + float(p)) for t, rss, s, p in rows]
top = max(held, key=lambda x: x[2]) if held else (0, r0, 0)
r.update({"scenario": label, "transport": transport, "edge_rss_kb_before": r0,
          "edge_rss_kb_held": top[1], "held_max": top[2],
          "edge_bytes_per_held": round((top[1] - r0) * 1024 / top[2]) if top[2] else None})
lines[-1] = json.dumps(r, sort_keys=True)
open(path, "w").write("\n".join(lines) + "\n")
print(json.dumps({x: r.get(x) for x in ("scenario", "transport", "guests", "rooms", "delivery_p50_ms", "delivery_p99_ms",
      "errors_total", "errors", "held_max", "edge_rss_kb_before", "edge_rss_kb_held", "edge_bytes_per_held",
      "api_requests_per_s", "api_polls_per_s", "cpu_pct_per_1000_guests")}, indent=1))
PY
}

for s in $SCENARIOS; do
  case $s in
    held) run_scenario held "$G" $(( G / 50 )) 1 $(( G / 20000 + 1 )) ;;
    live) run_scenario live "$LIVE_GUESTS" 1 "$LIVE_RATE" $(( LIVE_GUESTS / 20000 + 1 )) ;;
  esac
  sleep 5
done
show "$REL/chatty" metrics "$CHATTY_EDGE_METRICS" chatty_edge_stream_ends_total
