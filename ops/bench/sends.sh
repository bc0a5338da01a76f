#!/usr/bin/env bash
# (d) Send throughput into MariaDB at send p99 <= 50 ms, one send per
# transaction ("before": every node with --send-batch 1 and up to 8 such
# transactions side by side, the most the flag allows) against group commit
# ("after": the nodes' defaults), through one API node and through two.
# Beside every run a crowd of guests stays connected (polling through the
# edge, rooms of their own, sending nothing). The senders talk to the nodes
# directly, one generator per node, --check on:
#   spread: SEND_GUESTS_SPREAD guests in SEND_ROOMS rooms, sends spread over them;
#   hot:    SEND_GUESTS_HOT guests in one room, every send into it.
# The rate is stepped up until the send p99 passes 50 ms, errors pass 1 %, or
# the checker finds an anomaly.
# Env: MODES ("before after"), NODES ("1 2"), SCENARIOS ("spread hot"),
#      RATES ("250 500 1000 2000 3000 4000"), HOT_RATES ("250 500 1000 1500 2000"),
#      CROWD (2000), SEND_GUESTS_SPREAD (400), SEND_ROOMS (200),
#      SEND_GUESTS_HOT (20), WINDOW (20), BENCH_SKIP_BUILD.
. "$(dirname "$0")/lib.sh"

MODES="${MODES:-before after}"
NODES="${NODES:-1 2}"
SCENARIOS="${SCENARIOS:-spread hot}"
RATES="${RATES:-250 500 1000 2000 3000 4000}"
HOT_RATES="${HOT_RATES:-250 500 1000 1500 2000}"
CROWD="${CROWD:-2000}"
export WINDOW="${WINDOW:-20}" RAMP_OVERRIDE="${RAMP_OVERRIDE:-5}"

build_release
need_bin chat-api chatty
mkdir -p "$OUT/runs"
RUNS_JSONL="$OUT/sends.jsonl"; : > "$RUNS_JSONL"

# over LINE: whether a run missed the bound (p99, errors, anomalies, reports).
over() {
  python3 -c 'import json,sys
r = json.loads(sys.argv[1])
bad = (r.get("reports_missing") or r.get("send_p99_ms", 1e9) > 50
       or r.get("errors_total", 0) > 0.01 * max(r.get("sends", 1), 1) or r.get("check_anomalies", 0) > 0)
sys.exit(0 if bad else 1)' "$1"
}

for mode in $MODES; do
  if [[ $mode == before ]]; then export CHATTY_SEND_BATCH=1 CHATTY_SEND_BATCHES_IN_FLIGHT=8
  else unset CHATTY_SEND_BATCH CHATTY_SEND_BATCHES_IN_FLIGHT; fi
  chatty_up "sends-$mode" "${CLUSTER[@]}" --api-nodes 2
  CPU_PROCS=("api1=${API_PIDS[0]}" "api2=${API_PIDS[1]}" "edge=$CHATTY_PID" "mariadb=$(mariadb_pid)" "redis=$(redis_pid)")
  for scenario in $SCENARIOS; do
    if [[ $scenario == hot ]]; then
      rates=$HOT_RATES g="${SEND_GUESTS_HOT:-20}" rooms=1
    else
      rates=$RATES g="${SEND_GUESTS_SPREAD:-400}" rooms="${SEND_ROOMS:-200}"
    fi
    export ROOMS_OVERRIDE=$rooms
    LOAD_FLAGS=(--check --room-prefix "$scenario")
    for n in $NODES; do
      for rate in $rates; do
        export SEND_RATE="$rate"
        label="$scenario-${n}node-$mode-r$rate"
        log "$label: $CROWD guests connected, $g senders in $rooms room(s), $rate sends/s, $mode"
        # The crowd's window lines up with the senders' (same ramp and length).
        crowd="$OUT/runs/$label-crowd.json"
        chatty_load "$crowd" --target "$CHATTY_URL" --guests "$CROWD" --rooms $((CROWD / 10)) \
          --room-prefix crowd --send-rate 0 --duration "${WINDOW}s" --ramp "${RAMP_OVERRIDE}s" \
          --seed 9 &
        crowd_pid=$!
        if [[ $n == 1 ]]; then line=$(load_run "$label" "$g" "${API_URLS[0]}")
        else line=$(load_run "$label" "$g" "${API_URLS[0]}" "${API_URLS[1]}"); fi
        wait "$crowd_pid" || true
        # The crowd's own figures go on the run's line.
        line=$(python3 - "$RUNS_JSONL" "$crowd" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
r = json.loads(lines[-1])
try:
    c = json.load(open(sys.argv[2]))
    r.update(crowd_joined=c.get("guests_joined"), crowd_errors=sum((c.get("errors") or {}).values()),
             crowd_poll_p99_ms=(c.get("poll_latency_ms") or {}).get("p99"))
except (OSError, ValueError):
    r.update(crowd_joined=None)
lines[-1] = json.dumps(r, sort_keys=True)
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print(lines[-1])
PY
)
        if over "$line"; then log "stop: p99 > 50 ms, errors or anomalies at $rate/s"; break; fi
        sleep 2
      done
    done
  done
  stop_all
done
unset CHATTY_SEND_BATCH CHATTY_SEND_BATCHES_IN_FLIGHT

python3 - "$RUNS_JSONL" "$OUT/sends.json" "$WINDOW" "$OUT/sends.png" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
win = float(sys.argv[3])
best = {}
for r in runs:
    scenario, nodes, mode, rate = r["label"].split("-")
    r.update(scenario=scenario, nodes=nodes, mode=mode, rate_asked=int(rate[1:]))
    r["sends_acked_per_s"] = round(r.get("sends_acknowledged", 0) / win, 1)
    ok = (r.get("send_p99_ms", 1e9) <= 50 and r.get("errors_total", 0) <= 0.01 * max(r.get("sends", 1), 1)
          and not r.get("check_anomalies") and not r.get("reports_missing"))
    r["within_bound"] = ok
    print("%-28s acked/s %7.1f  send p50 %6.1f ms  p99 %7.1f ms  errors %d  anomalies %d  crowd %s joined, %s errors  %s" % (
        r["label"], r["sends_acked_per_s"], r.get("send_p50_ms", 0), r.get("send_p99_ms", 0),
        r.get("errors_total", 0), r.get("check_anomalies", 0), r.get("crowd_joined"), r.get("crowd_errors"),
        "ok" if ok else "over"))
    key = "%s %s %s" % (scenario, nodes, mode)
    if ok and r["sends_acked_per_s"] > best.get(key, {}).get("sends_acked_per_s", -1):
        best[key] = r
for k, v in sorted(best.items()):
    print("best %-20s %7.1f sends/s (p99 %.1f ms)" % (k, v["sends_acked_per_s"], v["send_p99_ms"]))
json.dump({"what": "sends/s into MariaDB at send p99 <= 50 ms, one send per transaction (before) and group commit (after)",
           "best": {k: {"sends_per_s": v["sends_acked_per_s"], "send_p99_ms": v["send_p99_ms"], "label": v["label"]} for k, v in best.items()},
           "runs": runs}, open(sys.argv[2], "w"), indent=2)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(0)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100, sharey=True)
for ax, scenario in zip(axes, ("spread", "hot")):
    if not any(r["scenario"] == scenario for r in runs):
        continue
    for key in sorted({(r["nodes"], r["mode"]) for r in runs if r["scenario"] == scenario}):
        rs = sorted((r for r in runs if r["scenario"] == scenario and (r["nodes"], r["mode"]) == key), key=lambda r: r["rate_asked"])
        ax.plot([r["sends_acked_per_s"] for r in rs], [r.get("send_p99_ms", 0) for r in rs], marker="o",
                linestyle="-" if key[1] == "after" else "--", label="%s, %s" % (key[0].replace("node", " node(s)"), key[1]))
    ax.axhline(50, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("sends acknowledged per second")
    ax.set_title("%s" % ("many rooms" if scenario == "spread" else "one hot room"), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
axes[0].set_ylabel("send p99 ms")
fig.tight_layout()
fig.savefig(sys.argv[4])
print("wrote", sys.argv[4])
PY
