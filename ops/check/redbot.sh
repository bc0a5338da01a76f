#!/usr/bin/env bash
# REDbot (HTTP lint) on the edge's held poll and event stream, through a
# local `chatty up` (embedded): `ops/check/redbot.sh` (after
# `scripts/deps.sh bench`, which installs REDbot, and a build of the bins).
# A stream has no end, so the edge is stopped while REDbot reads it: the
# edge then ends it (`retry:`) and REDbot checks the whole answer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
bin="${CHATTY_BIN:-$root/target/debug/chatty}"
dir=$(mktemp -d); port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" up --listen "127.0.0.1:$port" --data-dir "$dir" --ready-file "$dir/ready" >"$dir/log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 300); do [ -f "$dir/ready" ] && break; sleep 0.1; done
room="http://127.0.0.1:$port/v1/sites/demo/rooms/lobby"
etag=$(curl -si "$room/messages?after=0" | tr -d '\r' | awk 'tolower($1)=="etag:" {print $2}')
echo "== held poll (If-None-Match: $etag, Prefer: wait=2)"
python3 "$here/redbot_check.py" "$room/messages?after=0" -H "If-None-Match: $etag" -H "Prefer: wait=2"
echo "== event stream"
python3 "$here/redbot_check.py" "$room/messages?after=0" -H "Accept: text/event-stream" &
check=$!
sleep 3
kill -TERM $up
wait $check
