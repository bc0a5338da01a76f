#!/usr/bin/env bash
# (d) Send throughput into MariaDB at p99 send latency <= 50 ms: many guests
# over many rooms, --send-rate stepped up until the send p99 passes 50 ms (or
# errors appear), through one API node (one generator) and through two (one
# generator per node, half the guests and half the rate each).
# Env: RATES ("25 50 100 200 400 800 1600"), NODES ("1 2"), SEND_GUESTS (2000),
#      SEND_ROOMS (200), WINDOW (20), BENCH_SKIP_BUILD.
. "$(dirname "$0")/lib.sh"

RATES="${RATES:-25 50 100 200 400 800 1600}"
NODES="${NODES:-1 2}"
G="${SEND_GUESTS:-2000}"
export WINDOW="${WINDOW:-20}" ROOMS_OVERRIDE="${SEND_ROOMS:-200}"

build_release
need_bin chat-api chatty
# Two nodes; the generators talk to them directly (the edge stays idle).
chatty_up stack "${CLUSTER[@]}" --api-nodes 2
A1=${API_URLS[0]}; A2=${API_URLS[1]}
CPU_PROCS=("api1=${API_PIDS[0]}" "api2=${API_PIDS[1]}" "mariadb=$(mariadb_pid)" "redis=$(redis_pid)")
RUNS_JSONL="$OUT/sends.jsonl"; : > "$RUNS_JSONL"
for n in $NODES; do
  for rate in $RATES; do
    export SEND_RATE="$rate"
    log "$n node(s), $rate sends/s, $G guests in $ROOMS_OVERRIDE rooms"
    if [[ $n == 1 ]]; then line=$(load_run "sends-1node-r$rate" "$G" "$A1")
    else line=$(load_run "sends-2nodes-r$rate" "$G" "$A1" "$A2"); fi
    if python3 -c 'import json,sys
r = json.loads(sys.argv[1])
bad = r.get("reports_missing") or r.get("send_p99_ms", 1e9) > 50 or r.get("errors_total", 0) > 0.01 * max(r.get("sends", 1), 1)
sys.exit(0 if bad else 1)' "$line"; then log "stop: p99 > 50 ms or errors at $rate/s"; break; fi
    sleep 2
  done
done
python3 - "$RUNS_JSONL" "$OUT/sends.json" "$WINDOW" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
win = float(sys.argv[3])
best = {}
for r in runs:
    nodes = "1 node" if "1node" in r["label"] else "2 nodes"
    r["sends_acked_per_s"] = round(r.get("sends_acknowledged", 0) / win, 1)
    ok = r.get("send_p99_ms", 1e9) <= 50 and r.get("errors_total", 0) <= 0.01 * max(r.get("sends", 1), 1)
    print("%-26s acked/s %7.1f  send p50 %6.1f ms  p99 %7.1f ms  errors %d  %s" % (r["label"], r["sends_acked_per_s"], r.get("send_p50_ms", 0), r.get("send_p99_ms", 0), r.get("errors_total", 0), "ok" if ok else "over"))
    if ok and r["sends_acked_per_s"] > best.get(nodes, {}).get("sends_acked_per_s", -1):
        best[nodes] = r
print({k: v["sends_acked_per_s"] for k, v in best.items()})
json.dump({"what": "sends/s into MariaDB at send p99 <= 50 ms", "best": {k: {"sends_per_s": v["sends_acked_per_s"], "send_p99_ms": v["send_p99_ms"], "label": v["label"]} for k, v in best.items()}, "runs": runs}, open(sys.argv[2], "w"), indent=2)
PY
