#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted input (If-None-Match, room paths,
# guest tokens, bus lines) with cargo-fuzz on stable Rust (no sanitizer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 20)
#
# Installs cargo-fuzz when missing, writes the seed corpora, builds the
# targets once, runs each for the given time with its dictionary, and exits
# non-zero on any crash, printing the failing input. Corpora and artifacts
# stay in fuzz/corpus and fuzz/artifacts (not committed); the fuzz project
# builds into its own fuzz/target.
set -euo pipefail

secs=${1:-20}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 64 ;; esac
targets=(if_none_match room_path guest_token bus_decode)

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
export CARGO_TARGET_DIR="$root/fuzz/target"
# Build flags shared by `build` and `run`, so that `run` does not rebuild:
# no sanitizer (stable Rust); the default build is release with debug
# assertions and overflow checks.
flags=(-s none)

log() { echo "fuzz: $*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install -q cargo-fuzz --locked
fi

# Seed corpora, written fresh each run (the fuzzer keeps what it finds next
# to them). One input per file, no trailing newline.
seed() { mkdir -p "corpus/$1"; printf '%b' "$3" >"corpus/$1/seed-$2"; }
seed if_none_match 1 '"r1.5"'
seed if_none_match 2 'W/"r1.5"'
seed if_none_match 3 '"r1.4", "r1.5"'
seed if_none_match 4 '"a",W/"r1.5"  ,"b"'
seed if_none_match 5 '*'
seed if_none_match 6 '  * , "x"'
seed if_none_match 7 '"m7"'
seed if_none_match 8 '"r4294967295.18446744073709551615"'
seed if_none_match 9 '"x"\n"r1.5"'
seed if_none_match 10 '"r1.4" "r1.5"'
seed if_none_match 11 '"r1.4", junk, "r1.5"'
seed if_none_match 12 '\x01\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00, "r1.5"'
seed room_path 1 '/v1/sites/demo/rooms/lobby/messages'
seed room_path 2 '/v1/sites/demo/rooms/lobby/members'
seed room_path 3 '/v1/sites/demo/rooms/lobby'
seed room_path 4 '/v1/sites/demo/rooms/lobby/'
seed room_path 5 '/v1/sites/my-site-2/rooms/Lobby_2-x/join'
seed room_path 6 '/v1/sites/demo/rooms/'
seed room_path 7 'demo/lobby'
seed room_path 8 'demo/lob/by'
seed room_path 9 '/v1/sites/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/rooms/rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr/messages'
seed room_path 10 '/v1/sites/demo/rooms/caf\xc3\xa9/messages'
seed guest_token 1 'eyJzIjoiZGVtbyIsInIiOiJsb2JieSIsIm0iOiJtMSIsIm4iOiJBbm4iLCJlIjo0MTAyNDQ0ODAwfQ.u4ar2qV_f3rEcpLi1dj_vfVqcI0Om3MJOE7qycxZWP0'
seed guest_token 2 'eyJzIjoiZGVtbyIsInIiOiJsb2JieSIsIm0iOiJtMSIsIm4iOiJBbm4iLCJlIjo0MTAyNDQ0ODAwfQ.'
seed guest_token 3 'Ann "A" .\nm1'
seed guest_token 4 'a.b.c'
seed guest_token 5 '.'
seed bus_decode 1 'v1 r demo/lobby 3 17'
seed bus_decode 2 'v1 m demo/lobby 9'
seed bus_decode 3 'v1 h node-1'
seed bus_decode 4 'v1 r demo/lobby 4294967295 18446744073709551615'
seed bus_decode 5 'v1 r demo/lobby 4294967296 1'
seed bus_decode 6 'v1 m demo/lobby 9 extra'
seed bus_decode 7 'v1 h '
seed bus_decode 8 'v2 r demo/lobby 1 1'

mkdir -p artifacts
log "building ${targets[*]}"
start=$SECONDS
if ! cargo fuzz build "${flags[@]}" >artifacts/build.log 2>&1; then
  tail -n 40 artifacts/build.log >&2
  log "build failed (full log: fuzz/artifacts/build.log)" >&2
  exit 1
fi
log "built in $((SECONDS - start)) s"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "artifacts/$t"
  out="artifacts/$t/run.log"
  if cargo fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
      -max_total_time="$secs" -dict="dict/$t.dict" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$out" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'cov: [0-9]*' "$out" | tail -n 1 || true)
    log "$t: ok (${runs:-?} runs in ${secs} s, ${cov:-cov: ?})"
  else
    failed+=("$t")
    log "$t: FAILED" >&2
    grep -v -E '^#[0-9]+|^INFO:|^\s*$' "$out" | head -n 60 >&2 || true
    for f in $(grep -o 'Test unit written to [^ ]*' "$out" | awk '{print $5}'); do
      [ -f "$f" ] || continue
      log "failing input $f ($(wc -c <"$f") bytes), base64: $(base64 -w0 "$f")" >&2
      log "reproduce: cd fuzz && cargo fuzz run ${flags[*]} $t $f" >&2
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  log "crashes in: ${failed[*]}" >&2
  exit 1
fi
log "no crash in ${targets[*]}"
