#!/usr/bin/env bash
# Runs every comparison in sequence (release build once, then each script).
# Each script can also be run alone; see BENCHMARKS.md for the figures.
. "$(dirname "$0")/lib.sh"
build_release
export BENCH_SKIP_BUILD=1
rc=0
for s in poll304 api fullstack microcache sends edge-memory push held; do
  log "=== $s"
  run "$BENCH_DIR/$s.sh" || { log "$s failed with $?"; rc=1; }
done
exit $rc
