# Common helpers for the benchmark scripts: logging of every command line,
# background processes with a cleanup trap, health waits, free ports, core
# pinning, CPU accounting from /proc, wrk parsing, metric scraping.
# Source it from a script in ops/bench/: `. "$(dirname "$0")/lib.sh"`.

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
OUT="${BENCH_OUT:-$BENCH_DIR/out}"
REL="$ROOT/target/release"
mkdir -p "$OUT/logs"
TMPROOT="$(mktemp -d "${TMPDIR:-/tmp}/chatty-bench.XXXXXX")"
CLK_TCK="$(getconf CLK_TCK)"
BG_PIDS=()
CLEANUPS=()

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "$(basename "$0" .sh)" "$*" >&2; }

# Print a command line (shell-quoted) before running it.
show() { printf '+ %s\n' "$(printf '%q ' "$@")" >&2; }
run() { show "$@"; "$@"; }

# start_bg NAME CMD...: run CMD in the background, output to $OUT/logs/NAME.log;
# sets BG_PID. The process is stopped by the exit trap.
start_bg() {
  local name="$1"; shift
  show "$@"
  "$@" >"$OUT/logs/$name.log" 2>&1 &
  BG_PID=$!
  BG_PIDS+=("$BG_PID")
}

# stop_pid PID: SIGINT, then SIGTERM, then SIGKILL after a bounded wait.
stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -INT "$pid" 2>/dev/null || true
  for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  local pid
  for pid in "${BG_PIDS[@]}"; do stop_pid "$pid"; done
  BG_PIDS=()
}

cleanup() {
  local rc=$?
  set +e
  stop_all
  local c
  for c in "${CLEANUPS[@]}"; do eval "$c"; done
  rm -rf "$TMPROOT"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

on_exit() { CLEANUPS+=("$1"); }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL [SECONDS]: until URL answers 2xx, at most SECONDS (default 30).
wait_http() {
  local url="$1" limit="${2:-30}" i
  for i in $(seq 1 $((limit * 10))); do
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "timeout waiting for $url"; return 1
}

# wait_port PORT [SECONDS]
wait_port() {
  local port="$1" limit="${2:-30}" i
  for i in $(seq 1 $((limit * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "timeout waiting for port $port"; return 1
}

# cpu_secs PID: utime+stime of the process (all threads) in seconds.
cpu_secs() {
  local pid="$1"
  awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' "/proc/$pid/stat"
}

# rss_kb PID
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# metric_sum URL REGEX: sum of the values of the metric lines matching REGEX.
metric_sum() {
  curl -fsS --max-time 5 "$1" 2>/dev/null | awk -v re="$2" '$0 !~ /^#/ && $1 ~ re { s += $NF } END { printf "%.0f\n", s }'
}

# wrk_rps FILE: Requests/sec from a wrk output file.
wrk_rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
wrk_errors() {
  awk '/Socket errors:/ {gsub(/,/,""); print $4+$6+$8+$10; f=1} END {if(!f) print 0}' "$1"
}
wrk_non2xx() { awk '/Non-2xx or 3xx responses:/ {print $5; f=1} END {if(!f) print 0}' "$1"; }

# build_release: the tools the benchmarks use (installed when missing, by
# scripts/deps.sh bench) and the release binaries (skip the build with
# BENCH_SKIP_BUILD=1).
build_release() {
  run "$ROOT/scripts/deps.sh" bench >&2
  if [[ "${BENCH_SKIP_BUILD:-0}" == 1 ]]; then log "BENCH_SKIP_BUILD=1: using $REL as is"; return 0; fi
  (cd "$ROOT" && run cargo build --release --workspace --bins)
}

need_bin() {
  local b
  for b in "$@"; do
    [[ -x "$REL/$b" ]] || { log "missing $REL/$b (cargo build --release --workspace --bins)"; return 1; }
  done
}

rand_hex() { python3 -c 'import secrets; print(secrets.token_hex(4))'; }

# Shared services (never started or stopped here).
MYSQL_HOST="${BENCH_MYSQL_HOST:-127.0.0.1}"
MYSQL_PORT="${BENCH_MYSQL_PORT:-3306}"
REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"

# fresh_db: creates chatty_bench_<random>, sets DB_NAME and MYSQL_URL, drops it on exit.
fresh_db() {
  DB_NAME="chatty_bench_$(rand_hex)"
  run mariadb -uroot -h"$MYSQL_HOST" -P"$MYSQL_PORT" -e "CREATE DATABASE $DB_NAME"
  MYSQL_URL="mysql://root@$MYSQL_HOST:$MYSQL_PORT/$DB_NAME"
  on_exit "mariadb -uroot -h'$MYSQL_HOST' -P'$MYSQL_PORT' -e 'DROP DATABASE IF EXISTS $DB_NAME'"
}

# fresh_prefix: sets REDIS_PREFIX=bench<random>: and deletes its keys on exit.
fresh_prefix() {
  REDIS_PREFIX="bench$(rand_hex):"
  on_exit "redis-cli -u '$REDIS_URL' --scan --pattern '${REDIS_PREFIX}*' | head -2000000 | xargs -r -n 1000 redis-cli -u '$REDIS_URL' DEL >/dev/null"
}

# json_write FILE: stdin (a JSON document) into FILE, checked by Python.
json_write() { python3 -c 'import json,sys; d=json.load(sys.stdin); json.dump(d, open(sys.argv[1],"w"), indent=2)' "$1"; log "wrote $1"; }

# tree_cpu_secs PID: CPU seconds of PID and its direct children (nginx workers).
tree_cpu_secs() {
  local pid="$1" c total
  total=$(cpu_secs "$pid")
  for c in $(pgrep -P "$pid" || true); do
    total=$(python3 -c "print(round($total + $(cpu_secs "$c" 2>/dev/null || echo 0), 2))")
  done
  echo "$total"
}

# loadavg1: the 1-minute load average (other work on the machine skews figures).
loadavg1() { cut -d' ' -f1 /proc/loadavg; }

# ---- the Chatty stack (cluster mode: MariaDB + Redis) -------------------------

# stack_init: fresh database, fresh Redis prefix, one token key for all nodes.
stack_init() {
  fresh_db
  fresh_prefix
  TOKEN_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
}

# start_api NAME PORT [extra flags...]: a chat-api node in cluster mode; sets API_PID.
start_api() {
  local name="$1" port="$2"; shift 2
  start_bg "$name" "$REL/chat-api" --listen "127.0.0.1:$port" --data-dir "$TMPROOT/$name" \
    --mysql-url "$MYSQL_URL" --redis-url "$REDIS_URL" --redis-prefix "$REDIS_PREFIX" \
    --token-key "$TOKEN_KEY" --demo-site true --ip-rate off --guest-rate off --node-name "$name" "$@"
  API_PID=$BG_PID
  wait_http "http://127.0.0.1:$port/readyz" 60
}

# start_edge NAME PORT METRICS_PORT UPSTREAM_PORT... : sets EDGE_PID.
start_edge() {
  local name="$1" port="$2" mport="$3"; shift 3
  local ups=() p
  for p in "$@"; do ups+=(--upstream "127.0.0.1:$p"); done
  start_bg "$name" "$REL/edge-proxy" --listen "127.0.0.1:$port" "${ups[@]}" \
    --redis-url "$REDIS_URL" --redis-prefix "$REDIS_PREFIX" --metrics-listen "127.0.0.1:$mport" \
    --max-conns-per-ip 100000 --ip-rate off
  EDGE_PID=$BG_PID
  wait_http "http://127.0.0.1:$port/healthz" 60
}

# api_requests PORT...: chatty_api_requests_total summed over nodes, /metrics scrapes left out.
api_requests() {
  local p s=0 v
  for p in "$@"; do
    v=$(curl -fsS --max-time 5 "http://127.0.0.1:$p/metrics" 2>/dev/null | awk '$0 ~ /^chatty_api_requests_total\{/ && $0 !~ /route="metrics"/ {s += $NF} END {printf "%.0f", s}')
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
api_polls_total() {
  local p s=0 v
  for p in "$@"; do
    v=$(curl -fsS --max-time 5 "http://127.0.0.1:$p/metrics" 2>/dev/null | awk '$0 ~ /^chatty_api_requests_total\{/ && $0 ~ /route="messages_get"/ {s += $NF} END {printf "%.0f", s}')
    s=$((s + ${v:-0}))
  done
  echo "$s"
}

# Shared services' pids (read only: their CPU is part of the cost).
mariadb_pid() { pgrep -x mariadbd | head -1 || pgrep -x mysqld | head -1 || true; }
redis_pid() { pgrep -x redis-server | head -1 || true; }

# cpu_snapshot NAME=PID...: prints "NAME=secs ..." for the live ones.
cpu_snapshot() {
  local kv out=()
  for kv in "$@"; do
    local n="${kv%%=*}" p="${kv#*=}"
    [[ -n "$p" && -r "/proc/$p/stat" ]] && out+=("$n=$(cpu_secs "$p")")
  done
  echo "${out[*]}"
}

# chatty_load OUTFILE.json FLAGS...: runs `chatty load` (bounded by its own
# --duration and a hard timeout), report JSON into OUTFILE.
chatty_load() {
  local json="$1"; shift
  show "$REL/chatty" load "$@" --json "$json" --no-progress
  # getrusage of the child gives the load generator's own CPU seconds.
  python3 -c 'import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1] + ".txt", "w"), stderr=subprocess.STDOUT).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1] + ".cpu", "w").write("%.2f\n" % (r.ru_utime + r.ru_stime))
sys.exit(rc)' "$json" timeout --signal=INT --kill-after=10 "${LOAD_TIMEOUT:-240}" \
    "$REL/chatty" load "$@" --json "$json" --no-progress || log "chatty load exited with $? (see $json.txt)"
}

# load_run LABEL GUESTS TARGET_URL...: one `chatty load` run (guests split over
# the targets, one generator each, in parallel) with G/50 rooms and
# SEND_RATE messages/s in total (default 2); appends one JSON line to
# $RUNS_JSONL with the load report figures, the rise of the API request
# counters over API_PORTS, and the CPU seconds of every CPU_PROCS entry
# (NAME=PID). Extra `chatty load` flags: LOAD_FLAGS (array).
load_run() {
  local label="$1" g="$2"; shift 2
  local n=$# rooms ramp i=0 t a0 p0 c0 a1 p1 c1 t0 t1 pids=() files=()
  rooms=$(( g / 50 < 1 ? 1 : g / 50 )); rooms="${ROOMS_OVERRIDE:-$rooms}"
  ramp=$(( g / 1000 < 5 ? 5 : g / 1000 )); ramp="${RAMP_OVERRIDE:-$ramp}"
  local rate; rate=$(python3 -c "print(${SEND_RATE:-2} / $n)")
  mkdir -p "$OUT/runs"
  a0=$(api_requests "${API_PORTS[@]}"); p0=$(api_polls_total "${API_PORTS[@]}")
  c0=$(cpu_snapshot "${CPU_PROCS[@]}"); t0=$(date +%s.%N)
  for t in "$@"; do
    local f="$OUT/runs/$label-g$g-$i.json"; rm -f "$f"; files+=("$f")
    chatty_load "$f" --target "$t" --guests $((g / n)) --rooms "$rooms" --send-rate "$rate" \
      --duration "${WINDOW:-30}s" --ramp "${ramp}s" --connections "${LOAD_CONNS:-512}" --seed $((i + 1)) \
      ${LOAD_FLAGS[@]+"${LOAD_FLAGS[@]}"} &
    pids+=($!); i=$((i + 1))
  done
  for t in "${pids[@]}"; do wait "$t" || true; done
  t1=$(date +%s.%N)
  a1=$(api_requests "${API_PORTS[@]}"); p1=$(api_polls_total "${API_PORTS[@]}")
  c1=$(cpu_snapshot "${CPU_PROCS[@]}")
  python3 "$BENCH_DIR/benchlib.py" merge --label "$label" --guests "$g" --rooms "$rooms" \
    --api "$a0" "$a1" --api-polls "$p0" "$p1" --cpu0 "$c0" --cpu1 "$c1" --wall "$t0" "$t1" \
    --window "${WINDOW:-30}" "${files[@]}" | tee -a "$RUNS_JSONL"
}
