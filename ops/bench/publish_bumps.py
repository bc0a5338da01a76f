"""Publishes N room bumps (`v1 r SITE/room-I EPOCH SEQ`) on a Redis channel,
in batches with a pause between them (pub/sub subscribers that lag forget
what they learned), over a raw RESP connection (no client library needed).
Usage: publish_bumps.py HOST PORT CHANNEL SITE N [BATCH] [PAUSE_S]"""

import socket
import sys
import time


def resp(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        p = p.encode() if isinstance(p, str) else p
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def main():
    host, port, channel, site, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 5000
    pause = float(sys.argv[7]) if len(sys.argv) > 7 else 0.02
    s = socket.create_connection((host, port))
    buf = b""
    sent = 0
    receivers = 0
    t0 = time.time()
    while sent < n:
        k = min(batch, n - sent)
        s.sendall(b"".join(resp("PUBLISH", channel, "v1 r %s/room-%d 1 1" % (site, sent + i)) for i in range(k)))
        got = 0
        while got < k:
            while b"\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise SystemExit("redis closed the connection")
                buf += chunk
            line, buf = buf.split(b"\r\n", 1)
            if not line.startswith(b":"):
                raise SystemExit("unexpected reply %r" % line)
            receivers = int(line[1:])
            got += 1
        sent += k
        time.sleep(pause)
    print("published %d bumps in %.1f s, %d subscriber(s) on the last" % (sent, time.time() - t0, receivers))


if __name__ == "__main__":
    main()
