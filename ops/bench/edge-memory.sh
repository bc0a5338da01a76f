#!/usr/bin/env bash
# (e) The edge's memory at 1,000,000 rooms: RSS before and after teaching it
# ROOMS rooms through the bus (`v1 r demo/room-I 1 1` on {prefix}bus), the
# map's own entry count (chatty_edge_map_entries), and bytes per entry.
# Env: ROOMS (1000000), BATCH (16), PAUSE (0.001), BENCH_SKIP_BUILD. Small batches:
# a subscriber whose client-side queue overflows (lags) forgets the whole map.
. "$(dirname "$0")/lib.sh"

ROOMS="${ROOMS:-1000000}"
build_release
need_bin edge-proxy chatty
# The edge binary alone (no API node, so no `chatty up`), on a fresh prefix.
REDIS_PREFIX="bench$(python3 -c 'import secrets; print(secrets.token_hex(4))'):"
on_exit "redis-cli -u '$REDIS_URL' --scan --pattern '${REDIS_PREFIX}*' | head -2000000 | xargs -r -n 1000 redis-cli -u '$REDIS_URL' DEL >/dev/null"
RHOST=$(python3 -c "import urllib.parse,sys; u=urllib.parse.urlparse(sys.argv[1]); print(u.hostname or '127.0.0.1', u.port or 6379)" "$REDIS_URL")
read -r RH RP <<<"$RHOST"
EP=$(free_port); EM=$(free_port); UP=$(free_port)
# No API node is needed: the map learns from the bus alone; the upstream is an unused port.
start_bg edge-memory "$REL/edge-proxy" --threads 1 --listen "127.0.0.1:$EP" --upstream "127.0.0.1:$UP" \
  --redis-url "$REDIS_URL" --redis-prefix "$REDIS_PREFIX" --metrics-listen "127.0.0.1:$EM" \
  --max-rooms "$ROOMS" --max-age 600s
P=$BG_PID
wait_port "$EP" 30; wait_port "$EM" 30
entries() { metric "http://127.0.0.1:$EM/metrics" chatty_edge_map_entries; }
for i in $(seq 1 50); do
  [[ "$(metric "http://127.0.0.1:$EM/metrics" chatty_edge_bus_up)" == 1 ]] && break; sleep 0.2
done
sleep 1
# With no API node, nobody sends heartbeats and the edge forgets its map
# after a second of silence: stand in for an API node's heartbeat.
show redis-cli -h "$RH" -p "$RP" PUBLISH "${REDIS_PREFIX}bus" "v1 h bench" "(every 250 ms)"
( for i in $(seq 1 4000); do redis-cli -h "$RH" -p "$RP" PUBLISH "${REDIS_PREFIX}bus" "v1 h bench" >/dev/null; sleep 0.25; done ) &
BG_PIDS+=($!)
R0=$(rss_kb "$P"); E0=$(entries)
log "before: RSS ${R0} kB, map entries $E0"
# Sample entries and RSS while the map fills (a lagged subscription clears it).
( for i in $(seq 1 2400); do echo "$(entries) $(rss_kb "$P")"; sleep 0.25; done ) > "$TMPROOT/samples.txt" &
SAMPLER=$!; BG_PIDS+=($SAMPLER)
run python3 "$BENCH_DIR/publish_bumps.py" "$RH" "$RP" "${REDIS_PREFIX}bus" demo "$ROOMS" "${BATCH:-16}" "${PAUSE:-0.001}"
for i in $(seq 1 20); do
  e=$(entries); [[ "$e" -ge "$ROOMS" ]] && break; sleep 0.2
done
sleep 1
R1=$(rss_kb "$P"); E1=$(entries)
stop_pid "$SAMPLER"
read -r PEAK_E PEAK_R <<<"$(sort -n "$TMPROOT/samples.txt" | tail -1)"
log "peak while publishing: map entries $PEAK_E at RSS $PEAK_R kB"
RESETS=$(metric "http://127.0.0.1:$EM/metrics" chatty_edge_map_resets_total)
EVICT=$(metric "http://127.0.0.1:$EM/metrics" chatty_edge_map_evictions_total)
log "after: RSS ${R1} kB, map entries $E1, resets $RESETS, evictions $EVICT"
# A room taught only by the bus: is it answered from memory? (No API node runs:
# anything forwarded gets 502/503.)
show curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "r1.1"' "http://127.0.0.1:$EP/v1/sites/demo/rooms/room-12345/messages?after=1"
CODE=$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "r1.1"' "http://127.0.0.1:$EP/v1/sites/demo/rooms/room-12345/messages?after=1")
log "poll for a bus-taught room with its ETag: $CODE (304 = answered from memory)"
python3 - "$OUT/edge-memory.json" "$ROOMS" "$R0" "$R1" "$E0" "$E1" "$RESETS" "$EVICT" "$CODE" "${PEAK_E:-0}" "${PEAK_R:-0}" <<'PY'
import json, sys
out, rooms, r0, r1, e0, e1, resets, evict, code, pe, pr = sys.argv[1:]
r0, r1, e0, e1, pe, pr = int(r0), int(r1), int(e0 or 0), int(e1 or 0), int(pe or 0), int(pr or 0)
d = {"rooms_published": int(rooms), "rss_before_kb": r0, "rss_after_kb": r1, "map_entries_before": e0,
     "map_entries_after": e1, "map_resets": int(resets or 0), "map_evictions": int(evict or 0),
     "rss_growth_mb": round((r1 - r0) / 1024, 1),
     "bytes_per_entry": round((r1 - r0) * 1024 / (e1 - e0), 1) if e1 > e0 else None,
     "bus_taught_room_poll_status": int(code),
     "peak_map_entries": pe, "rss_at_peak_kb": pr,
     "bytes_per_entry_at_peak": round((pr - r0) * 1024 / pe, 1) if pe > 0 else None}
json.dump(d, open(out, "w"), indent=2)
print(json.dumps(d, indent=2))
PY
