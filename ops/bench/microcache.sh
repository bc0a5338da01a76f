#!/usr/bin/env bash
# (c) nginx micro-caching in front of the two API nodes (proxy_cache 1 s,
# proxy_cache_lock on, 200 and 304 kept 1 s, keyed on the URI) vs the Chatty
# edge, under the same `chatty load`: requests reaching the API, API CPU, and
# delivery latency. Env: GUESTS ("2000 10000"), MODES ("microcache edge"),
# WINDOW (30), SEND_RATE (2), BENCH_SKIP_BUILD.
. "$(dirname "$0")/lib.sh"

GUESTS="${GUESTS:-2000 10000}"
MODES="${MODES:-microcache edge}"
export WINDOW="${WINDOW:-30}" SEND_RATE="${SEND_RATE:-2}"

build_release
need_bin chat-api chatty
chatty_up stack "${CLUSTER[@]}" --api-nodes 2
P_API1=${API_PIDS[0]}; P_API2=${API_PIDS[1]}; P_EDGE=$CHATTY_PID
A1=${API_URLS[0]#http://}; A2=${API_URLS[1]#http://}
NP=$(free_port)

d="$TMPROOT/nginx"; mkdir -p "$d/cache"
cat > "$d/nginx.conf" <<CONF
# Workers run as this user so they can write the cache in the private temp dir.
user $(id -un);
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $d/cb; proxy_temp_path $d/pt; fastcgi_temp_path $d/ft;
  uwsgi_temp_path $d/ut; scgi_temp_path $d/st;
  upstream api { server $A1; server $A2; keepalive 64; }
  proxy_cache_path $d/cache levels=1:2 keys_zone=micro:32m max_size=256m inactive=30s use_temp_path=off;
  server {
    listen 127.0.0.1:$NP;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$host;
    location ~ ^/v1/sites/[^/]+/rooms/[^/]+/messages\$ {
      proxy_cache micro;
      proxy_cache_key \$request_uri;
      proxy_cache_valid 200 304 1s;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 2s;
      # The API says Cache-Control: no-cache; micro-caching overrides it.
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache \$upstream_cache_status;
      proxy_pass http://api;
    }
    location / { proxy_pass http://api; }
  }
}
CONF
start_bg nginx-microcache /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
P_NGINX=$BG_PID
wait_port "$NP" 10
# Check: a second poll within 1 s is a cache HIT, and If-None-Match gets 304 from the cache.
U="http://127.0.0.1:$NP/v1/sites/demo/rooms/lobby/messages?after=0"
run curl -s -o /dev/null -D "$TMPROOT/h1" "$U"; run curl -s -o /dev/null -D "$TMPROOT/h2" "$U"
ET=$(awk -F': ' 'tolower($1)=="etag" {print $2}' "$TMPROOT/h2" | tr -d '\r')
log "microcache: first $(grep -i x-cache "$TMPROOT/h1" | tr -d '\r'), second $(grep -i x-cache "$TMPROOT/h2" | tr -d '\r'), ETag $ET"
show curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ET" "$U"
log "microcache with If-None-Match answers $(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ET" "$U")"

RUNS_JSONL="$OUT/microcache.jsonl"; : > "$RUNS_JSONL"
for g in $GUESTS; do
  for mode in $MODES; do
    log "mode $mode, $g guests"
    case $mode in
      microcache) CPU_PROCS=("api1=$P_API1" "api2=$P_API2" "nginx=$(pgrep -P "$P_NGINX" | head -1)" "mariadb=$(mariadb_pid)" "redis=$(redis_pid)")
                  load_run microcache "$g" "http://127.0.0.1:$NP" ;;
      edge) CPU_PROCS=("api1=$P_API1" "api2=$P_API2" "edge=$P_EDGE" "mariadb=$(mariadb_pid)" "redis=$(redis_pid)")
            load_run edge "$g" "$CHATTY_URL" ;;
    esac
    sleep 2
  done
done
python3 "$BENCH_DIR/benchlib.py" table "$RUNS_JSONL" | tee "$OUT/microcache.txt"
python3 - "$RUNS_JSONL" "$OUT/microcache.json" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"what": "nginx micro-cache (1 s) vs the edge, 2 chat-api nodes, same chatty load", "runs": runs}, open(sys.argv[2], "w"), indent=2)
PY
