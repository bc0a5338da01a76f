# Common helpers for the benchmark scripts: logging of every command line,
# background processes with a cleanup trap, free ports, CPU accounting from
# /proc, wrk parsing. Chatty itself is started by `chatty up` (chatty_up) and
# its metrics read by `chatty metrics` (metric).
# Source it from a script in ops/bench/: `. "$(dirname "$0")/lib.sh"`.

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
OUT="${BENCH_OUT:-$BENCH_DIR/out}"
REL="${BENCH_BIN_DIR:-$ROOT/target/release}"
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

# stop_pid PID: SIGINT, then SIGTERM, then SIGKILL after bounded waits
# (`chatty up` drains for up to ~10 s, then stops its nodes and removes its
# fresh database and keys).
stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -INT "$pid" 2>/dev/null || true
  for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
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

# metric URL NAME [--label KEY=VALUE|KEY!=VALUE]...: the sum of a metric on a
# Prometheus page (`chatty metrics`).
metric() { "$REL/chatty" metrics "$@"; }

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

# Shared services (never started or stopped here).
MYSQL_HOST="${BENCH_MYSQL_HOST:-127.0.0.1}"
MYSQL_PORT="${BENCH_MYSQL_PORT:-3306}"
REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"


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

# ---- the Chatty stack, through `chatty up` -------------------------------------

# The flags of a local cluster on the shared MariaDB and Redis: a fresh
# database (chatty_bench_<random>) and key prefix (bench<random>:), removed
# when `chatty up` stops; no rate limits (every guest comes from one address).
CLUSTER=(--mysql-url "mysql://root@$MYSQL_HOST:$MYSQL_PORT/" --redis-url "$REDIS_URL" --fresh bench
  --ip-rate off --guest-rate off)

# chatty_up [--pin CORE] NAME FLAGS...: `chatty up FLAGS` in the background
# (pinned to CORE with its nodes), output to $OUT/logs/NAME.log, until its
# ready file is written; then sets what the file says: CHATTY_URL (the
# edge), CHATTY_PID (the edge's process), CHATTY_EDGE_METRICS, API_URLS and
# API_PIDS (arrays), CHATTY_DATABASE and CHATTY_REDIS_PREFIX (with --fresh).
chatty_up() {
  local pin=() name attempt i ready
  if [[ "$1" == --pin ]]; then pin=(taskset -c "$2"); shift 2; fi
  name="$1"; shift
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
  ready="$TMPROOT/$name.ready"; mkdir -p "$TMPROOT/$name"
  # The nodes take the ports after the edge's, which may be taken: retried.
  for attempt in 1 2 3; do
    start_bg "$name" ${pin[@]+"${pin[@]}"} "$REL/chatty" up --listen "127.0.0.1:$(free_port)" \
      --data-dir "$TMPROOT/$name" --ready-file "$ready" "$@"
    for i in $(seq 1 900); do
      [[ -f "$ready" ]] && break
      kill -0 "$BG_PID" 2>/dev/null || break
      sleep 0.1
    done
    if [[ -f "$ready" ]]; then
      # shellcheck disable=SC1090
      . "$ready"
      read -r -a API_URLS <<<"$CHATTY_API_URLS"
      read -r -a API_PIDS <<<"$CHATTY_API_PIDS"
      # Should `chatty up` die without its own clean-up (a signal it did not
      # catch), its nodes and fresh database go anyway.
      on_exit "kill ${API_PIDS[*]} 2>/dev/null; ${CHATTY_DATABASE:+mariadb -uroot -h'$MYSQL_HOST' -P'$MYSQL_PORT' -e 'DROP DATABASE IF EXISTS $CHATTY_DATABASE'}"
      log "$name: edge $CHATTY_URL (pid $CHATTY_PID), API ${API_URLS[*]}${CHATTY_DATABASE:+, database $CHATTY_DATABASE, prefix $CHATTY_REDIS_PREFIX}"
      return 0
    fi
    stop_pid "$BG_PID"
    log "$name: chatty up did not get ready (attempt $attempt, see $OUT/logs/$name.log)"
  done
  return 1
}

# api_sum FILTER URL...: chatty_api_requests_total summed over API nodes, on
# the samples FILTER keeps (route!=metrics: all but the scrapes).
api_sum() {
  local f="$1" u s=0; shift
  for u in "$@"; do s=$((s + $(metric "$u/metrics" chatty_api_requests_total --label "$f"))); done
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
# counters over API_URLS, and the CPU seconds of every CPU_PROCS entry
# (NAME=PID). Extra `chatty load` flags: LOAD_FLAGS (array).
load_run() {
  local label="$1" g="$2"; shift 2
  local n=$# rooms ramp i=0 t a0 p0 c0 a1 p1 c1 t0 t1 pids=() files=()
  rooms=$(( g / 50 < 1 ? 1 : g / 50 )); rooms="${ROOMS_OVERRIDE:-$rooms}"
  ramp=$(( g / 1000 < 5 ? 5 : g / 1000 )); ramp="${RAMP_OVERRIDE:-$ramp}"
  local rate; rate=$(python3 -c "print(${SEND_RATE:-2} / $n)")
  mkdir -p "$OUT/runs"
  a0=$(api_sum route!=metrics "${API_URLS[@]}"); p0=$(api_sum route=messages_get "${API_URLS[@]}")
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
  a1=$(api_sum route!=metrics "${API_URLS[@]}"); p1=$(api_sum route=messages_get "${API_URLS[@]}")
  c1=$(cpu_snapshot "${CPU_PROCS[@]}")
  python3 "$BENCH_DIR/benchlib.py" merge --label "$label" --guests "$g" --rooms "$rooms" \
    --api "$a0" "$a1" --api-polls "$p0" "$p1" --cpu0 "$c0" --cpu1 "$c1" --wall "$t0" "$t1" \
    --window "${WINDOW:-30}" "${files[@]}" | tee -a "$RUNS_JSONL"
}

# start_edge NAME REDIS_PREFIX MAX_HELD API_URL...: one more `edge-proxy` in
# the background beside a `chatty up` stack, as its own edge is set up: on
# free ports, the API nodes at API_URL as upstreams, the bus on REDIS_URL
# under REDIS_PREFIX (the stack's, CHATTY_REDIS_PREFIX), per-address limits
# off, --max-held MAX_HELD. Waits until its /readyz answers, then sets
# EDGE_URL, EDGE_METRICS and EDGE_PID. Stopped by the exit trap.
start_edge() {
  local name="$1" prefix="$2" max_held="$3"; shift 3
  local ups=() u port mport attempt i
  for u in "$@"; do ups+=(--upstream "${u#http://}"); done
  # A free port may be taken before the edge binds it: retried.
  for attempt in 1 2 3; do
    port=$(free_port); mport=$(free_port)
    start_bg "$name" "$REL/edge-proxy" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" \
      "${ups[@]}" --redis-url "$REDIS_URL" --redis-prefix "$prefix" --ip-rate off \
      --max-conns-per-ip 4294967295 --max-held "$max_held"
    EDGE_PID=$BG_PID; EDGE_URL="http://127.0.0.1:$port"; EDGE_METRICS="http://127.0.0.1:$mport/metrics"
    for i in $(seq 1 300); do
      kill -0 "$EDGE_PID" 2>/dev/null || break
      if curl -sf -o /dev/null "http://127.0.0.1:$mport/readyz" && wait_port "$port" 1; then
        log "$name: edge $EDGE_URL (pid $EDGE_PID), metrics $EDGE_METRICS"
        return 0
      fi
      sleep 0.1
    done
    stop_pid "$EDGE_PID"
    log "$name: edge-proxy did not get ready (attempt $attempt, see $OUT/logs/$name.log)"
  done
  return 1
}

# kill_tree PID...: SIGTERM to every PID and its descendants, the deepest
# first (a generator started by chatty_load in the background: its subshell,
# the wrapper, timeout and chatty load). For the exit trap.
kill_tree() {
  local p
  for p in "$@"; do
    kill -0 "$p" 2>/dev/null || continue
    # shellcheck disable=SC2046
    kill_tree $(pgrep -P "$p" || true)
    kill -TERM "$p" 2>/dev/null || true
  done
}
