#!/usr/bin/env bash
# (f) The API alone (one chat-api node, cluster mode on MariaDB + Redis,
# pinned to core 0; wrk on core 1): polls/s on its 304 path and its 200 path,
# and sends/s into MariaDB (POST with a guest token, a unique client_id per
# request). Env: DURATION (10s), CONNS (100), SEND_CONNS (32), SEND_ROOMS (16),
# ROUNDS (2), BENCH_SKIP_BUILD.
. "$(dirname "$0")/lib.sh"

DURATION="${DURATION:-10s}"; CONNS="${CONNS:-100}"; SEND_CONNS="${SEND_CONNS:-32}"
SEND_ROOMS="${SEND_ROOMS:-16}"; ROUNDS="${ROUNDS:-2}"
build_release
need_bin chat-api chatty
# One node (its edge, idle, shares core 0 with it; wrk talks to the node).
chatty_up --pin 0 api-alone "${CLUSTER[@]}" --api-nodes 1
P=${API_PIDS[0]}
B="${API_URLS[0]}/v1/sites/demo/rooms"

join() { # room -> token
  curl -fsS -X POST -H 'content-type: application/json' -d '{"nick":"bench"}' "$B/$1/join" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
show curl -fsS -X POST -H 'content-type: application/json' -d '{"nick":"bench"}' "$B/lobby/join"
TOK=$(join lobby)
for i in $(seq 1 10); do
  curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -H "authorization: Bearer $TOK" \
    -d "{\"text\":\"message $i\",\"client_id\":\"seed-$i\"}" "$B/lobby/messages"
done
ETAG=$(curl -si "$B/lobby/messages?after=10" | awk -F': ' 'tolower($1)=="etag" {print $2}' | tr -d '\r')
log "lobby has 10 messages, ETag $ETAG"
show curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ETAG" "$B/lobby/messages?after=10"
log "304 check: $(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ETAG" "$B/lobby/messages?after=10")"
log "200 check: $(curl -s -o /dev/null -w '%{http_code} %{size_download} bytes' "$B/lobby/messages?after=0")"

# The send script: one token per room, rooms in turn, a unique client_id per request.
LUA="$TMPROOT/send.lua"
{
  echo "local rooms, tokens = {}, {}"
  for i in $(seq 0 $((SEND_ROOMS - 1))); do
    echo "rooms[$((i + 1))] = '/v1/sites/demo/rooms/send-$i/messages'; tokens[$((i + 1))] = 'Bearer $(join "send-$i")'"
  done
  cat <<'LUA'
local n, counter, run = #rooms, 0, tostring(os.time()) .. tostring(math.random(1000000))
request = function()
  counter = counter + 1
  local i = counter % n + 1
  local body = '{"text":"bench message","client_id":"w' .. run .. '-' .. counter .. '"}'
  return wrk.format("POST", rooms[i], {["Authorization"] = tokens[i], ["Content-Type"] = "application/json"}, body)
end
LUA
} > "$LUA"
cp "$LUA" "$OUT/logs/api-send.lua"

declare -A RPS
RESULTS="$TMPROOT/api.tsv"; : > "$RESULTS"
M0=$(mariadb_pid)
for r in $(seq 1 "$ROUNDS"); do
  for kind in poll304 poll200 send; do
    f="$OUT/logs/api-$kind-$r.txt"
    c0=$(cpu_secs "$P"); m0=$(cpu_secs "$M0"); la=$(loadavg1)
    case $kind in
      poll304) run taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "If-None-Match: $ETAG" "$B/lobby/messages?after=10" > "$f" 2>&1 ;;
      poll200) run taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$B/lobby/messages?after=0" > "$f" 2>&1 ;;
      send) run taskset -c 1 wrk -t1 -c"$SEND_CONNS" -d"$DURATION" --latency -s "$LUA" "$B/send-0/messages" > "$f" 2>&1 ;;
    esac
    c1=$(cpu_secs "$P"); m1=$(cpu_secs "$M0")
    p99=$(awk '$1=="99%" {print $2}' "$f")
    log "round $r $kind: $(wrk_rps "$f") req/s, p99 $p99, non-2xx/3xx $(wrk_non2xx "$f"), socket errors $(wrk_errors "$f"), api cpu $(python3 -c "print(round($c1-$c0,2))") s, mariadb cpu $(python3 -c "print(round($m1-$m0,2))") s, load $la"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$kind" "$(wrk_rps "$f")" "$p99" "$(wrk_non2xx "$f")" "$(python3 -c "print(round($c1-$c0,2))")" "$(python3 -c "print(round($m1-$m0,2))")" "$la" >> "$RESULTS"
  done
done
STORED=$(mariadb -uroot -h"$MYSQL_HOST" -P"$MYSQL_PORT" -N -e "SELECT table_name, table_rows FROM information_schema.tables WHERE table_schema='$CHATTY_DATABASE'" 2>/dev/null | tr '\n' ' ')
log "tables in $CHATTY_DATABASE (approximate rows): $STORED"
python3 - "$RESULTS" "$OUT/api.json" "$DURATION" <<'PY'
import json, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
d = {}
for r, kind, rps, p99, bad, cpu, mcpu, la in rows:
    d.setdefault(kind, []).append({"round": int(r), "rps": float(rps or 0), "p99": p99, "non_2xx_3xx": int(bad or 0),
                                   "api_cpu_s": float(cpu), "mariadb_cpu_s": float(mcpu), "loadavg_before": float(la)})
summary = {k: {"runs": v, "median_rps": statistics.median(x["rps"] for x in v)} for k, v in d.items()}
json.dump({"what": "one chat-api (core 0) on MariaDB + Redis, wrk on core 1, " + sys.argv[3] + " runs", "paths": summary}, open(sys.argv[2], "w"), indent=2)
for k, v in summary.items():
    print("%-8s median %9.0f req/s   runs: %s" % (k, v["median_rps"], ", ".join("%.0f (p99 %s)" % (x["rps"], x["p99"]) for x in v["runs"])))
PY
