#!/usr/bin/env bash
# Bus bytes per message per subscriber: SUBS subscribers (as many edges) on a
# fresh channel, N room bumps of a realistic size (`v1 r demo/room-I EPOCH SEQ`,
# a ten-digit epoch, a six-digit seq) published, and the rise of Redis's
# total_net_output_bytes divided by N and by SUBS (the publisher's one-line
# replies taken out). Writes $OUT/bus-bytes.json.
# Env: N (20000), SUBS (4).
. "$(dirname "$0")/lib.sh"

N="${N:-20000}"; SUBS="${SUBS:-4}"
host=$(python3 -c 'import sys, urllib.parse; u = urllib.parse.urlparse(sys.argv[1]); print(u.hostname, u.port or 6379)' "$REDIS_URL")
read -r RHOST RPORT <<<"$host"
channel="bench$RANDOM$RANDOM:bus"
for _ in $(seq 1 "$SUBS"); do
  start_bg "bus-sub" timeout 120 redis-cli -h "$RHOST" -p "$RPORT" subscribe "$channel"
done
sleep 1
out_bytes() { redis-cli -h "$RHOST" -p "$RPORT" info stats | awk -F: '/^total_net_output_bytes/ {print $2+0}'; }
b0=$(out_bytes)
python3 - "$RHOST" "$RPORT" "$channel" "$N" <<'PY' | tee "$TMPROOT/publish.txt"
import socket, sys
host, port, channel, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def resp(*parts):
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in (x.encode() for x in parts))
s = socket.create_connection((host, port))
replies = b""
for start in range(0, n, 1000):
    k = min(1000, n - start)
    s.sendall(b"".join(resp("PUBLISH", channel, "v1 r demo/room-%d 3735928559 %d" % (start + i, 100000 + start + i)) for i in range(k)))
    while replies.count(b"\r\n") < k:
        replies += s.recv(65536)
    last = replies.split(b"\r\n")[k - 1]
    reply_bytes = len(replies)
    replies = b""
print("replies", reply_bytes, "receivers", int(last[1:]))
PY
sleep 1
b1=$(out_bytes)
receivers=$(awk '/^replies/ {print $4}' "$TMPROOT/publish.txt")
python3 - "$b0" "$b1" "$N" "$SUBS" "$receivers" "$OUT/bus-bytes.json" <<'PY'
import json, sys
b0, b1, n, subs, receivers = (int(x) for x in sys.argv[1:6])
# Each PUBLISH is answered ":S\r\n" to the publisher.
replies = n * len(":%d\r\n" % receivers)
per = (b1 - b0 - replies) / n / subs
r = {"messages": n, "subscribers": subs, "receivers_seen": receivers, "output_bytes": b1 - b0,
     "bytes_per_message_per_subscriber": round(per, 1)}
print(json.dumps(r))
json.dump(r, open(sys.argv[6], "w"), indent=2)
PY
