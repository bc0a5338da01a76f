#!/usr/bin/env bash
# Push delivery, Chatty against nginx + nchan: the same load (G guests in
# G/50 rooms, 2 messages/s in total, `chatty load --check`) against
#   chatty - the full stack as in fullstack.sh (`chatty up` cluster: MariaDB
#            and Redis (shared; a fresh database and key prefix), two chat-api
#            nodes, one edge), guests on timed polls (poll), held polls
#            (hold) or the edge's event stream (stream);
#   nchan  - nginx + nchan (Debian's module, one worker per core, the config
#            written below), messages published to nchan directly, guests on
#            its long-poll (hold) or EventSource (stream) subscriber
#            (`chatty load --nchan`).
# Each run: WINDOW seconds after a ramp of max(5, G/1000) s. Records
# delivery p50/p99 (send or publish acknowledged -> seen by each other guest
# of the room), errors, check anomalies, API requests/s (chatty) and CPU
# seconds of every process (edge, API nodes, MariaDB, Redis, nginx master and
# workers, the generator) into out/push.jsonl; prints a table; plots delivery
# p99 vs guests (out/push-delivery.png) and server CPU per 1,000 guests
# (out/push-cpu.png) per (server, transport).
# Env: GUESTS ("1000 5000 20000"), MODES ("chatty-poll chatty-hold
#      chatty-stream nchan-hold nchan-stream"), WINDOW (30), SEND_RATE (2),
#      HOLD_WAIT (25: Prefer: wait and nchan's subscriber timeout),
#      SOURCE_ADDRS (guests' source addresses, default one per 10,000
#      guests), BENCH_SKIP_BUILD.
. "$(dirname "$0")/lib.sh"

GUESTS="${GUESTS:-1000 5000 20000}"
MODES="${MODES:-chatty-poll chatty-hold chatty-stream nchan-hold nchan-stream}"
export WINDOW="${WINDOW:-30}" SEND_RATE="${SEND_RATE:-2}"
HOLD_WAIT="${HOLD_WAIT:-25}"
MAX_G=$(tr ' ' '\n' <<<"$GUESTS" | sort -n | tail -1)
SOURCE_ADDRS="${SOURCE_ADDRS:-$(( MAX_G / 10000 + 1 ))}"
PUSH_JSONL="$OUT/push.jsonl"; : > "$PUSH_JSONL"
RUNS_JSONL="$TMPROOT/run.jsonl"

# mode NAME: NAME (server-transport) is among MODES; server NAME: one of its
# modes is.
mode() { [[ " $MODES " == *" $1 "* ]]; }
server() { [[ " $MODES " == *" $1-"* ]]; }
EXTRA_JSON='{}'

# Every guest on held polls or streams holds a connection on both sides:
# the generator needs two files per guest (sockets.rs), the edge and nginx
# one or two. Raised as far as the hard limit allows.
FILES=$(( 2 * MAX_G + 4096 ))
ulimit -n "$FILES" 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
if (( $(ulimit -n) < FILES )); then
  log "open files limited to $(ulimit -n) (hard limit), $FILES wanted: runs above $(( ($(ulimit -n) - 4096) / 2 )) guests may be refused"
fi

build_release
need_bin chat-api chatty

# push_run SERVER TRANSPORT G URL [FLAGS...]: one load_run, its JSON line
# completed with the server, transport, the server's CPU (the processes
# named in SERVER_PROCS) and the load average before, appended to push.jsonl.
push_run() {
  local server="$1" transport="$2" g="$3" url="$4" la; shift 4
  LOAD_FLAGS=(--transport "$transport" --check --hold-wait "${HOLD_WAIT}s"
    --source-addrs "$SOURCE_ADDRS" "$@")
  la=$(loadavg1)
  : > "$RUNS_JSONL"
  log "$server $transport, $g guests (load average $la)"
  load_run "$server-$transport" "$g" "$url" >/dev/null
  python3 - "$RUNS_JSONL" "$PUSH_JSONL" "$server" "$transport" "$la" "${SERVER_PROCS[*]}" "$EXTRA_JSON" <<'PY'
import json, sys
src, dst, server, transport, la, procs, extra = sys.argv[1:]
r = json.loads(open(src).read().strip().splitlines()[-1])
r.update({"server": server, "transport": transport, "loadavg_before": float(la)}, **json.loads(extra))
procs = procs.split()
r["server_procs"] = procs
r["server_cpu_s"] = round(sum(v for k, v in r["cpu_s"].items() if k in procs), 2)
k = r["guests"] / 1000.0
r["server_cpu_s_per_1000_guests"] = round(r["server_cpu_s"] / k, 3)
r["server_cpu_pct_per_1000_guests"] = round(100 * r["server_cpu_s"] / r["wall_s"] / k, 2) if r["wall_s"] else None
line = json.dumps(r, sort_keys=True)
open(dst, "a").write(line + "\n")
print(line)
PY
  sleep 2
}

# ---- Chatty: the cluster -----------------------------------------------------
if server chatty; then
  # The edge holds at most --max-held polls and streams; more guests than
  # that would be answered at once (as timed polls). The edge reads
  # CHATTY_EDGE_MAX_HELD when started on its own; the figure in force is
  # read back from its metrics and recorded with each run.
  export CHATTY_EDGE_MAX_HELD=$(( MAX_G + 1000 ))
  chatty_up stack "${CLUSTER[@]}" --api-nodes 2
  STACK_PID=$BG_PID
  SERVER_PROCS=(edge api1 api2 mariadb redis)
  CPU_PROCS=("api1=${API_PIDS[0]}" "api2=${API_PIDS[1]}" "edge=$CHATTY_PID" "mariadb=$(mariadb_pid)" "redis=$(redis_pid)")
  MAX_HELD=$(metric "$CHATTY_EDGE_METRICS" chatty_edge_max_held || echo 0)
  MAX_HELD=${MAX_HELD%.*}
  (( MAX_HELD >= MAX_G )) || log "the edge holds $MAX_HELD polls/streams at most (< $MAX_G guests): hold and stream runs above it are partly answered at once"
  EXTRA_JSON="{\"edge_max_held\": ${MAX_HELD:-0}}"
  for g in $GUESTS; do
    for t in poll hold stream; do
      if mode "chatty-$t"; then push_run chatty "$t" "$g" "$CHATTY_URL"; fi
    done
  done
  stop_pid "$STACK_PID"
  API_URLS=(); EXTRA_JSON='{}'
fi

# ---- nginx + nchan ---------------------------------------------------------
if server nchan; then
  API_URLS=()
  NCHAN_PORT=$(free_port); d="$TMPROOT/nchan"; mkdir -p "$d"
  cat > "$d/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes $(nproc);
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $(ulimit -n); }
http {
  access_log off;
  client_body_temp_path $d/cb; proxy_temp_path $d/pt; fastcgi_temp_path $d/ft;
  uwsgi_temp_path $d/ut; scgi_temp_path $d/st;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NCHAN_PORT backlog=4096;
    # A room's channel keeps its whole run: subscribers start from its
    # first message (nchan_subscriber_first_message oldest, the default).
    location ~ ^/pub/([\\w-]+)\$ {
      nchan_publisher;
      nchan_channel_id \$1;
      nchan_message_buffer_length 1000;
      nchan_message_timeout 10m;
    }
    # Long-poll: held up to HOLD_WAIT like the edge's Prefer: wait (408 then).
    location ~ ^/sub/lp/([\\w-]+)\$ {
      nchan_subscriber longpoll;
      nchan_channel_id \$1;
      nchan_subscriber_timeout ${HOLD_WAIT}s;
    }
    # EventSource: open until the client goes; a ping every 15 s like the
    # edge's keepalive comment.
    location ~ ^/sub/es/([\\w-]+)\$ {
      nchan_subscriber eventsource;
      nchan_channel_id \$1;
      nchan_eventsource_ping_interval 15;
    }
  }
}
CONF
  start_bg nchan /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
  NCHAN_PID=$BG_PID
  wait_port "$NCHAN_PORT" 10
  sleep 0.5
  mapfile -t WORKERS < <(pgrep -P "$NCHAN_PID")
  SERVER_PROCS=(nginx); CPU_PROCS=("nginx=$NCHAN_PID")
  for i in "${!WORKERS[@]}"; do SERVER_PROCS+=("nginx_w$i"); CPU_PROCS+=("nginx_w$i=${WORKERS[$i]}"); done
  log "nginx + nchan on port $NCHAN_PORT: master $NCHAN_PID, workers ${WORKERS[*]}"
  EXTRA_JSON="{\"nginx_workers\": ${#WORKERS[@]}}"
  NCHAN_URL="http://127.0.0.1:$NCHAN_PORT"
  for g in $GUESTS; do
    if mode nchan-hold; then push_run nchan hold "$g" "$NCHAN_URL" --nchan --nchan-sub /sub/lp/; fi
    if mode nchan-stream; then push_run nchan stream "$g" "$NCHAN_URL" --nchan --nchan-sub /sub/es/; fi
  done
  grep -v ' \[notice\] ' "$d/error.log" | tail -20 > "$OUT/logs/nchan-error.log" || true
  stop_pid "$NCHAN_PID"
fi

# ---- table and plots ---------------------------------------------------------
python3 "$BENCH_DIR/benchlib.py" push-table "$PUSH_JSONL" | tee "$OUT/push.txt"
run python3 "$BENCH_DIR/benchlib.py" plot "$PUSH_JSONL" "$OUT/push-delivery.png" --y delivery_p99_ms --y2 delivery_p50_ms \
  --ylabel "delivery latency, ms (p99 solid, p50 dashed)" --logx \
  --title "Send acknowledged to seen, G/50 rooms, ${SEND_RATE} msg/s: Chatty vs nginx + nchan"
run python3 "$BENCH_DIR/benchlib.py" plot "$PUSH_JSONL" "$OUT/push-cpu.png" --y server_cpu_pct_per_1000_guests \
  --ylabel "server CPU, % of a core per 1,000 guests" --logx \
  --title "Server CPU (Chatty: edge, API nodes, MariaDB, Redis; nchan: nginx)"
