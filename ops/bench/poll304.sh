#!/usr/bin/env bash
# (a) The unchanged poll answered 304 by three servers, each pinned to core 0,
# with wrk pinned to core 1, alternating runs:
#   nginx   - nginx `return 304` on a matching If-None-Match (the ceiling)
#   nchan   - nginx + nchan interval-poll subscriber (closest existing software)
#   edge    - the Chatty edge in front of a chat-api, answering from memory
#             (`chatty up`: the edge and an embedded API node, one process)
# Then a cpu-clock profile of the edge's 304 path.
# Env: ROUNDS (3), DURATION (10s), CONNS (100), SERVERS ("nginx nchan edge"),
#      PROFILE (1), BENCH_SKIP_BUILD (0).
. "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-100}"
SERVERS="${SERVERS:-nginx nchan edge}"
PROFILE="${PROFILE:-1}"
ROOM_PATH="/v1/sites/demo/rooms/lobby/messages"
SERVER_CORE=0
CLIENT_CORE=1

have_edge=0
if [[ " $SERVERS " == *" edge "* ]]; then
  build_release
  if need_bin chatty; then have_edge=1; else log "edge skipped: binaries missing"; fi
fi

# ---- the Chatty side first: its ETag is used for every server --------------
ETAG='"r1.1"'
AFTER=1
if [[ $have_edge == 1 ]]; then
  # The edge and its API node (embedded store) in one process on core 0;
  # wrk's connections all come from one address: no per-address rate.
  chatty_up --pin $SERVER_CORE edge --edge-threads 1 --ip-rate off --guest-rate off
  EDGE_PID=$CHATTY_PID; API="${API_URLS[0]}"
  # Give the room a version: join, send one message.
  run curl -fsS -o "$TMPROOT/join.json" -X POST -H 'content-type: application/json' \
    -d '{"nick":"bench"}' "$API/v1/sites/demo/rooms/lobby/join"
  TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$TMPROOT/join.json")
  run curl -fsS -o "$TMPROOT/send.json" -X POST -H 'content-type: application/json' \
    -H "authorization: Bearer $TOKEN" -d '{"text":"hello","client_id":"bench-1"}' \
    "$API$ROOM_PATH"
  AFTER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seq"])' "$TMPROOT/send.json")
  # One poll through the edge: 200 and the ETag (the edge learns the version).
  show curl -si "$CHATTY_URL$ROOM_PATH?after=$AFTER"
  ETAG=$(curl -si "$CHATTY_URL$ROOM_PATH?after=$AFTER" | awk -F': ' 'tolower($1)=="etag" {print $2}' | tr -d '\r')
  log "room ETag $ETAG (after=$AFTER)"
  [[ -n "$ETAG" ]] || { log "no ETag from the edge"; exit 1; }
fi
URL_PATH="$ROOM_PATH?after=$AFTER"

# ---- nginx return 304 -------------------------------------------------------
nginx_common() { # $1 dir
  cat <<CONF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/cb; proxy_temp_path $1/pt; fastcgi_temp_path $1/ft;
  uwsgi_temp_path $1/ut; scgi_temp_path $1/st;
CONF
}

if [[ " $SERVERS " == *" nginx "* ]]; then
  NGINX_PORT=$(free_port); d="$TMPROOT/nginx"; mkdir -p "$d"
  { nginx_common "$d"; cat <<CONF
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location $ROOM_PATH {
      add_header ETag '$ETAG';
      add_header Cache-Control no-cache;
      if (\$http_if_none_match = '$ETAG') { return 304; }
      return 200 '{"events":[]}';
    }
  }
}
CONF
  } > "$d/nginx.conf"
  start_bg nginx taskset -c $SERVER_CORE /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
  NGINX_PID=$BG_PID
  wait_port $NGINX_PORT 10
fi

# ---- nginx + nchan interval-poll -------------------------------------------
if [[ " $SERVERS " == *" nchan "* ]]; then
  NCHAN_PORT=$(free_port); d="$TMPROOT/nchan"; mkdir -p "$d"
  { echo "load_module /usr/lib/nginx/modules/ngx_nchan_module.so;"; nginx_common "$d"; cat <<CONF
  server {
    listen 127.0.0.1:$NCHAN_PORT;
    location = /pub { nchan_publisher; nchan_channel_id lobby; }
    location $ROOM_PATH { nchan_subscriber interval-poll; nchan_channel_id lobby; }
  }
}
CONF
  } > "$d/nginx.conf"
  start_bg nchan taskset -c $SERVER_CORE /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
  NCHAN_PID=$BG_PID
  wait_port $NCHAN_PORT 10
  run curl -fsS -o /dev/null -X POST -d 'hello' "http://127.0.0.1:$NCHAN_PORT/pub"
  H=$(curl -si "http://127.0.0.1:$NCHAN_PORT$URL_PATH")
  NCHAN_LM=$(awk -F': ' 'tolower($1)=="last-modified" {print $2}' <<<"$H" | tr -d '\r')
  NCHAN_ET=$(awk -F': ' 'tolower($1)=="etag" {print $2}' <<<"$H" | tr -d '\r')
  log "nchan message: Last-Modified '$NCHAN_LM', Etag '$NCHAN_ET'"
fi

# ---- checks: every server answers the poll with 304 --------------------------
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
declare -A URL HDRS SPID
if [[ -n "${NGINX_PORT:-}" ]]; then URL[nginx]="http://127.0.0.1:$NGINX_PORT$URL_PATH"; SPID[nginx]=$NGINX_PID; HDRS[nginx]="If-None-Match: $ETAG"; fi
if [[ -n "${NCHAN_PORT:-}" ]]; then URL[nchan]="http://127.0.0.1:$NCHAN_PORT$URL_PATH"; SPID[nchan]=$NCHAN_PID; HDRS[nchan]="If-None-Match: $NCHAN_ET|If-Modified-Since: $NCHAN_LM"; fi
if [[ $have_edge == 1 ]]; then URL[edge]="$CHATTY_URL$URL_PATH"; SPID[edge]=$EDGE_PID; HDRS[edge]="If-None-Match: $ETAG"; fi

hdr_args() { local IFS='|' h; for h in ${HDRS[$1]}; do printf '%s\0%s\0' -H "$h"; done; }
ACTIVE=()
for s in nginx nchan edge; do
  [[ -n "${URL[$s]:-}" ]] || continue
  mapfile -d '' H < <(hdr_args "$s")
  show curl -s -o /dev/null -w '%{http_code}' "${H[@]}" "${URL[$s]}"
  code=$(status_of "${H[@]}" "${URL[$s]}")
  log "$s answers $code"
  if [[ "$code" != 304 ]]; then log "$s does not answer 304: left out"; continue; fi
  ACTIVE+=("$s")
done

api_polls() { api_sum route=messages_get "$API"; }

# ---- alternating runs ------------------------------------------------------
RESULTS="$TMPROOT/results.tsv"; : > "$RESULTS"
for r in $(seq 1 "$ROUNDS"); do
  for s in "${ACTIVE[@]}"; do
    mapfile -d '' H < <(hdr_args "$s")
    f="$OUT/logs/poll304-$s-$r.txt"
    [[ $s == edge ]] && a0=$(api_polls)
    c0=$(tree_cpu_secs "${SPID[$s]}"); la=$(loadavg1)
    show taskset -c $CLIENT_CORE wrk -t1 -c"$CONNS" -d"$DURATION" "${H[@]}" "${URL[$s]}"
    taskset -c $CLIENT_CORE wrk -t1 -c"$CONNS" -d"$DURATION" "${H[@]}" "${URL[$s]}" > "$f" 2>&1
    c1=$(tree_cpu_secs "${SPID[$s]}")
    extra="server_cpu_s=$(python3 -c "print(round($c1-$c0,2))") loadavg_before=$la"
    [[ $s == edge ]] && extra="$extra api_polls_during_run=$(( $(api_polls) - a0 ))"
    rps=$(wrk_rps "$f"); err=$(wrk_errors "$f"); bad=$(wrk_non2xx "$f")
    log "round $r $s: $rps req/s, socket errors $err, non-2xx/3xx $bad $extra"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$rps" "$err" "$bad" "$extra" >> "$RESULTS"
  done
done
for s in "${ACTIVE[@]}"; do
  mapfile -d '' H < <(hdr_args "$s")
  log "$s after the runs answers $(status_of "${H[@]}" "${URL[$s]}")"
done

# ---- profile of the edge's 304 path ---------------------------------------
if [[ $have_edge == 1 && $PROFILE == 1 && " ${ACTIVE[*]} " == *" edge "* ]] && command -v perf >/dev/null; then
  PD="$TMPROOT/perf.data"
  show perf record -e cpu-clock -F 4999 -g -p "$EDGE_PID" -o "$PD" -- sleep 6
  perf record -e cpu-clock -F 4999 -g -p "$EDGE_PID" -o "$PD" -- sleep 6 > "$OUT/logs/perf-record.txt" 2>&1 &
  PERF_PID=$!
  sleep 0.5
  run taskset -c $CLIENT_CORE wrk -t1 -c"$CONNS" -d5s -H "If-None-Match: $ETAG" "${URL[edge]}" > "$OUT/logs/poll304-edge-profile.txt" 2>&1 || true
  wait $PERF_PID || true
  {
    echo "# cpu-clock profile of edge-proxy (--threads 1, core $SERVER_CORE) answering 304, wrk -c$CONNS on core $CLIENT_CORE"
    echo "# perf report --no-children --sort symbol (self time), top entries"
    perf report -i "$PD" --stdio --no-children --sort symbol -g none --percent-limit 0.4 2>/dev/null | grep -v '^$' | head -80
    echo
    echo "# perf report --children --sort symbol (inclusive time), top entries"
    perf report -i "$PD" --stdio --children --sort symbol -g none --percent-limit 2 2>/dev/null | grep -v '^$' | head -70
  } > "$OUT/profile-304.txt"
  log "wrote $OUT/profile-304.txt"
fi

# ---- syscalls per answer (strace -c; slows the server, counts stay valid) ---
if [[ "${SYSCALLS:-1}" == 1 ]] && command -v strace >/dev/null; then
  SC="$OUT/syscalls-304.txt"; : > "$SC"
  for s in "${ACTIVE[@]}"; do
    pid="${SPID[$s]}"; [[ $s != edge ]] && pid=$(pgrep -P "$pid" | head -1)
    mapfile -d '' H < <(hdr_args "$s")
    show timeout -s INT 5 strace -c -f -p "$pid"
    timeout -s INT 5 strace -c -f -p "$pid" -o "$TMPROOT/strace-$s.txt" 2>/dev/null &
    SP=$!; sleep 0.5
    taskset -c $CLIENT_CORE wrk -t1 -c"$CONNS" -d3s "${H[@]}" "${URL[$s]}" > "$TMPROOT/wrk-strace-$s.txt" 2>&1
    wait $SP || true
    n=$(awk '/requests in/ {print $1}' "$TMPROOT/wrk-strace-$s.txt")
    { echo "== $s: $n answers during the trace (wrk -c$CONNS -d3s under strace)"
      awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $NF != "total" && $4 ~ /^[0-9]+$/ && NF>=5 {printf "  %-16s %9d calls  %.2f per answer\n", $NF, $4, $4/n}' "$TMPROOT/strace-$s.txt" | sort -k2 -nr | head -8
      awk -v n="$n" '$NF == "total" {printf "  total            %9d calls  %.2f per answer\n", $4, $4/n}' "$TMPROOT/strace-$s.txt"
    } >> "$SC"
  done
  cat "$SC"; log "wrote $SC"
fi

# ---- summary ---------------------------------------------------------------
python3 - "$RESULTS" "$OUT" "$CONNS" "$DURATION" "$ETAG" <<'PY'
import json, statistics, sys
res, out, conns, dur, etag = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
by = {}
for r, s, rps, err, bad, extra in rows:
    run = {"round": int(r), "rps": float(rps or 0), "socket_errors": int(err or 0), "non_2xx_3xx": int(bad or 0)}
    for kv in extra.split():
        k, v = kv.split("=", 1); run[k] = float(v)
    if run.get("server_cpu_s"):
        run["rps_per_server_cpu_s"] = round(run["rps"] * float(dur.rstrip("s")) / run["server_cpu_s"])
    by.setdefault(s, []).append(run)
summary = {}
for s, runs in by.items():
    v = [x["rps"] for x in runs]
    summary[s] = {"runs": runs, "median_rps": statistics.median(v), "min_rps": min(v), "max_rps": max(v)}
    e = [x["rps_per_server_cpu_s"] for x in runs if "rps_per_server_cpu_s" in x]
    if e: summary[s]["median_answers_per_server_cpu_s"] = statistics.median(e)
base = summary.get("nginx", {}).get("median_rps")
for s in summary:
    if base:
        summary[s]["ratio_vs_nginx_median"] = round(summary[s]["median_rps"] / base, 3)
        summary[s]["ratio_vs_nginx_range"] = [round(min(x["rps"] for x in summary[s]["runs"]) / max(x["rps"] for x in by["nginx"]), 3),
                                              round(max(x["rps"] for x in summary[s]["runs"]) / min(x["rps"] for x in by["nginx"]), 3)]
doc = {"what": "unchanged poll answered 304; server on core 0, wrk -t1 -c%s -d%s on core 1" % (conns, dur), "etag": etag, "servers": summary}
json.dump(doc, open(out + "/poll304.json", "w"), indent=2)
print("\nserver   median req/s   min..max            ratio vs nginx return-304   answers per server CPU-second")
for s in ("nginx", "nchan", "edge"):
    if s in summary:
        x = summary[s]
        print("%-8s %12.0f   %8.0f..%-8.0f  %-26s  %s" % (s, x["median_rps"], x["min_rps"], x["max_rps"], x.get("ratio_vs_nginx_median", "-"), x.get("median_answers_per_server_cpu_s", "-")))
try:
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    names = [s for s in ("nginx", "nchan", "edge") if s in summary]
    labels = {"nginx": "nginx return 304", "nchan": "nginx + nchan\ninterval-poll", "edge": "Chatty edge"}
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=100)
    med = [summary[s]["median_rps"] / 1000 for s in names]
    lo = [med[i] - summary[s]["min_rps"] / 1000 for i, s in enumerate(names)]
    hi = [summary[s]["max_rps"] / 1000 - med[i] for i, s in enumerate(names)]
    ax.bar([labels[s] for s in names], med, yerr=[lo, hi], capsize=4, color=["#888", "#aa7", "#38a"][:len(names)])
    ax.set_ylabel("304 answers per second (thousands)")
    ax.set_title("Unchanged poll, one server core, wrk -c%s" % conns, fontsize=10)
    fig.tight_layout(); fig.savefig(out + "/poll304.png"); print("wrote", out + "/poll304.png")
except ImportError:
    print("matplotlib missing: no plot (pip install matplotlib)")
PY
