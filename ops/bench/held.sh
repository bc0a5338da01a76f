#!/usr/bin/env bash
# (h) Guests held on this box, and (i) a live event: the `chatty up` cluster
# (MariaDB and Redis shared, a fresh database and key prefix; two chat-api
# nodes; its edge) with every guest holding an event stream or a held poll.
#   held - G guests (100,000) in G/50 rooms, HELD_RATE (1) message/s in all, the checker
#          on, spread over E = ceil(G / PER_EDGE) edges: chatty up's edge and
#          E-1 more `edge-proxy` processes on the same API nodes, Redis and
#          key prefix, and E `chatty load` processes, generator k against
#          edge k in rooms of its own (G/E guests in (G/50)/E rooms, 1/E
#          messages/s). One process cannot hold 100,000 sockets here: the
#          open-file hard limit is 20,000 per process (`ulimit -Hn`); a
#          deployment runs several edges anyway. Reported: edge RSS before
#          the joins and with every guest held, summed over the edges (memory
#          per held guest); CPU of every process over the middle half of the
#          window (CPU per 1,000 guests, nearly idle) and over the whole run;
#          delivery, errors, lost messages.
#   live - one room, LIVE_GUESTS (10,000) guests, LIVE_RATE (10) messages/s,
#          on chatty up's edge alone: delivery p99, API page fetches per
#          message, nothing lost.
# Env: SCENARIOS ("held live"), TRANSPORT (stream | hold | poll), G (100000), HELD_RATE (1),
#      PER_EDGE (17000: guests per edge and per generator), LIVE_GUESTS
#      (10000), LIVE_RATE (10), WINDOW (30), RAMP (max(10, guests/1000)),
#      BENCH_SKIP_BUILD, BENCH_BIN_DIR.
# Delivery p50 and p99 of a row are the largest of the generators' p50s and
# p99s (each generator measures its own rooms), not percentiles of the union.
. "$(dirname "$0")/lib.sh"

SCENARIOS="${SCENARIOS:-held live}"
TRANSPORT="${TRANSPORT:-stream}"
G="${G:-100000}"; PER_EDGE="${PER_EDGE:-17000}"
LIVE_GUESTS="${LIVE_GUESTS:-10000}"; LIVE_RATE="${LIVE_RATE:-10}"; HELD_RATE="${HELD_RATE:-1}"
export WINDOW="${WINDOW:-30}"
EDGES=$(( (G + PER_EDGE - 1) / PER_EDGE ))
PER=$(( (G + EDGES - 1) / EDGES ))           # most guests on one edge (held)
MAX_PER=$(( PER > LIVE_GUESTS ? PER : LIVE_GUESTS ))
# Every process (edge, generator) holds about one socket per guest of its
# share, and some more files.
ulimit -n $(( MAX_PER + 4096 )) 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
if (( MAX_PER + 2048 > $(ulimit -n) )); then
  log "open-file limit $(ulimit -n): $MAX_PER guests per process do not fit; lower PER_EDGE (or LIVE_GUESTS)"
  exit 64
fi
RUNS_JSONL="$OUT/held.jsonl"; : > "$RUNS_JSONL"

build_release
need_bin chat-api chatty edge-proxy
MAX_HELD=$(( MAX_PER + 1000 ))
export CHATTY_EDGE_MAX_HELD="$MAX_HELD"
chatty_up stack "${CLUSTER[@]}" --api-nodes 2
# The generators and the edge sampler of a scenario under way (background
# subshells, stopped with their children should the script stop early).
RUN_PIDS=()
on_exit 'kill_tree ${RUN_PIDS[@]+"${RUN_PIDS[@]}"}'
SHARED_PROCS=("api1=${API_PIDS[0]}" "api2=${API_PIDS[1]}" "mariadb=$(mariadb_pid)" "redis=$(redis_pid)")

# The edges of a scenario: edge 0 is chatty up's own.
EDGE_URLS=("$CHATTY_URL"); EDGE_METRICS_URLS=("$CHATTY_EDGE_METRICS"); EDGE_PIDS=("$CHATTY_PID")

# more_edges N: N-1 more edges beside chatty up's, on its API nodes, Redis
# and key prefix (stopped by drop_edges, or the exit trap).
more_edges() {
  local k
  for (( k = 1; k < $1; k++ )); do
    start_edge "edge$k" "$CHATTY_REDIS_PREFIX" "$MAX_HELD" "${API_URLS[@]}"
    EDGE_URLS+=("$EDGE_URL"); EDGE_METRICS_URLS+=("$EDGE_METRICS"); EDGE_PIDS+=("$EDGE_PID")
  done
}
drop_edges() {
  local k
  for (( k = 1; k < ${#EDGE_PIDS[@]}; k++ )); do stop_pid "${EDGE_PIDS[k]}"; done
  EDGE_URLS=("${EDGE_URLS[0]}"); EDGE_METRICS_URLS=("${EDGE_METRICS_URLS[0]}"); EDGE_PIDS=("${EDGE_PIDS[0]}")
}

# sample_edges FILE: each second, one line per edge: time, edge, RSS (KiB),
# open streams, held polls; until killed.
sample_edges() {
  local k
  while :; do
    for k in "${!EDGE_PIDS[@]}"; do
      echo "$(date +%s) $k $(rss_kb "${EDGE_PIDS[k]}") $(metric "${EDGE_METRICS_URLS[k]}" chatty_edge_open_streams) $(metric "${EDGE_METRICS_URLS[k]}" chatty_edge_held_polls)"
    done
    sleep 1
  done > "$1" 2>/dev/null
}

# share TOTAL K N: part K (from 0) of TOTAL split into N parts.
share() { echo $(( $1 / $3 + ($2 < $1 % $3 ? 1 : 0) )); }

# run_scenario LABEL GUESTS ROOMS RATE: GUESTS in ROOMS at RATE messages/s
# in all, over the edges in EDGE_URLS (one generator each, rooms disjoint).
run_scenario() {
  local label="$1" g="$2" rooms="$3" rate="$4" e=${#EDGE_URLS[@]} k gk rk
  local ramp="${RAMP:-$(( g / 1000 < 10 ? 10 : g / 1000 ))}" samples="$OUT/$label-rss.txt"
  local r0=() files=() pids=() sampler a0 p0 c0 t0 a1 p1 c1 t1 w0 w1 wa0 wa1 wt0 wt1
  local gen_rate; gen_rate=$(python3 -c "print($rate / $e)")
  for k in "${!EDGE_PIDS[@]}"; do r0+=("$(rss_kb "${EDGE_PIDS[k]}")"); done
  sample_edges "$samples" & sampler=$!; RUN_PIDS+=("$sampler")
  mkdir -p "$OUT/runs"
  a0=$(api_sum route!=metrics "${API_URLS[@]}"); p0=$(api_sum route=messages_get "${API_URLS[@]}")
  c0=$(cpu_snapshot "${CPU_PROCS[@]}"); t0=$(date +%s.%N)
  for (( k = 0; k < e; k++ )); do
    gk=$(share "$g" "$k" "$e"); rk=$(share "$rooms" "$k" "$e"); (( rk > 0 )) || rk=1
    local f="$OUT/runs/$label-$TRANSPORT-g$g-$k.json"; rm -f "$f"; files+=("$f")
    LOAD_TIMEOUT=$(( ramp + WINDOW + g / 500 + 300 )) chatty_load "$f" --target "${EDGE_URLS[k]}" \
      --guests "$gk" --rooms "$rk" --room-prefix "$label$k" --send-rate "$gen_rate" \
      --duration "${WINDOW}s" --ramp "${ramp}s" --connections "${LOAD_CONNS:-512}" --seed $(( k + 1 )) \
      --transport "$TRANSPORT" --check --source-addrs $(( (gk + 19999) / 20000 )) &
    pids+=($!); RUN_PIDS+=($!)
  done
  # CPU and API requests over the middle half of the window: every guest
  # joined and held, the join ramp and the leaves left out.
  sleep $(( ramp + WINDOW / 4 ))
  wa0=$(api_sum route!=metrics "${API_URLS[@]}"); w0=$(cpu_snapshot "${CPU_PROCS[@]}"); wt0=$(date +%s.%N)
  sleep $(( WINDOW / 2 > 1 ? WINDOW / 2 : 1 ))
  wa1=$(api_sum route!=metrics "${API_URLS[@]}"); w1=$(cpu_snapshot "${CPU_PROCS[@]}"); wt1=$(date +%s.%N)
  for k in "${pids[@]}"; do wait "$k" || true; done
  t1=$(date +%s.%N)
  a1=$(api_sum route!=metrics "${API_URLS[@]}"); p1=$(api_sum route=messages_get "${API_URLS[@]}")
  c1=$(cpu_snapshot "${CPU_PROCS[@]}")
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  RUN_PIDS=()
  python3 "$BENCH_DIR/benchlib.py" merge --label "$label-$TRANSPORT" --guests "$g" --rooms "$rooms" \
    --api "$a0" "$a1" --api-polls "$p0" "$p1" --cpu0 "$c0" --cpu1 "$c1" --wall "$t0" "$t1" \
    --window "$WINDOW" "${files[@]}" > "$TMPROOT/merged.json"
  python3 - "$TMPROOT/merged.json" "$samples" "${r0[*]}" "$label" "$TRANSPORT" "$e" "$rate" \
    "$w0" "$w1" "$wt0" "$wt1" "$wa0" "$wa1" "${files[@]}" >> "$RUNS_JSONL" <<'PY'
import json, sys
(merged, samples, r0, label, transport, edges, rate, w0, w1, wt0, wt1, wa0, wa1), files = sys.argv[1:14], sys.argv[14:]
r = json.load(open(merged))
edges, r0 = int(edges), [int(x) for x in r0.split()]
# Each edge's sample with the most guests held: its RSS and that count.
top = {}
for line in open(samples):
    p = line.split()
    if len(p) != 5:
        continue
    k, rss, held = int(p[1]), int(p[2]), int(float(p[3]) + float(p[4]))
    if k not in top or held > top[k][1]:
        top[k] = (rss, held)
rss_held = [top.get(k, (r0[k], 0))[0] for k in range(edges)]
held = [top.get(k, (0, 0))[1] for k in range(edges)]
reps = []
for f in files:
    try:
        reps.append(json.load(open(f)))
    except (OSError, ValueError):
        pass
g = r["guests"] / 1000.0
c0 = dict(kv.split("=") for kv in w0.split())
c1 = dict(kv.split("=") for kv in w1.split())
dt = float(wt1) - float(wt0)
cpu = {n: float(c1[n]) - float(c0[n]) for n in c1 if n in c0}
pct = {n: round(100 * v / dt / g, 3) for n, v in cpu.items()}
pct["edges"] = round(sum(v for n, v in pct.items() if n.startswith("edge")), 3)
pct["all"] = round(sum(v for n, v in pct.items() if n not in ("edges",)), 3)
grow = sum(rss_held) - sum(r0)
r.update({
    "scenario": label, "transport": transport, "edges": edges, "send_rate": float(rate),
    "guests_per_edge": [x.get("guests") for x in reps],
    "delivery_percentiles": "largest over the generators (each its own rooms)",
    "lost": sum((x.get("check") or {}).get("lost_acknowledged", 0) for x in reps),
    "streams_ended_by_edge": sum((x.get("streams") or {}).get("ended_by_edge", 0) for x in reps),
    "edge_rss_kb_before": sum(r0), "edge_rss_kb_held": sum(rss_held), "held_max": sum(held),
    "edge_rss_kb_before_by_edge": r0, "edge_rss_kb_held_by_edge": rss_held, "held_max_by_edge": held,
    "edge_bytes_per_held": round(grow * 1024 / sum(held)) if sum(held) else None,
    "window_cpu_s": {n: round(v, 2) for n, v in cpu.items()},
    "window_cpu_pct_per_1000_guests": pct, "window_s_measured": round(dt, 1),
    "window_api_requests_per_s": round((int(wa1) - int(wa0)) / dt, 1) if dt > 0 else None,
})
print(json.dumps(r, sort_keys=True))
keys = ("scenario", "transport", "guests", "guests_joined", "rooms", "edges", "delivery_p50_ms", "delivery_p99_ms",
        "errors_total", "errors", "lost", "check_anomalies", "held_max", "edge_rss_kb_before", "edge_rss_kb_held",
        "edge_bytes_per_held", "window_api_requests_per_s", "api_requests_per_s", "window_cpu_pct_per_1000_guests",
        "cpu_pct_per_1000_guests")
print(json.dumps({x: r.get(x) for x in keys}, indent=1), file=sys.stderr)
PY
}

for s in $SCENARIOS; do
  case $s in
    held)
      more_edges "$EDGES"
      CPU_PROCS=("${SHARED_PROCS[@]}")
      for k in "${!EDGE_PIDS[@]}"; do CPU_PROCS+=("edge$k=${EDGE_PIDS[k]}"); done
      run_scenario held "$G" $(( G / 50 )) "$HELD_RATE"
      for k in "${!EDGE_METRICS_URLS[@]}"; do
        log "edge$k stream ends: $(metric "${EDGE_METRICS_URLS[k]}" chatty_edge_stream_ends_total)"
      done
      drop_edges ;;
    live)
      CPU_PROCS=("${SHARED_PROCS[@]}" "edge0=$CHATTY_PID")
      run_scenario live "$LIVE_GUESTS" 1 "$LIVE_RATE" ;;
  esac
  sleep 5
done
show "$REL/chatty" metrics "$CHATTY_EDGE_METRICS" chatty_edge_stream_ends_total
