"""Helpers of the benchmark scripts: merge `chatty load` reports into one JSON
line per run, summarise runs into tables, draw plots (matplotlib)."""

import argparse
import json
import sys


def merge(a):
    reps = []
    for f in a.files:
        try:
            r = json.load(open(f))
        except (OSError, ValueError):
            r = None
        cpu = None
        try:
            cpu = float(open(f + ".cpu").read())
        except (OSError, ValueError):
            pass
        reps.append((r, cpu))
    ok = [r for r, _ in reps if r]
    c0 = dict(kv.split("=") for kv in a.cpu0.split())
    c1 = dict(kv.split("=") for kv in a.cpu1.split())
    cpu = {k: round(float(c1[k]) - float(c0[k]), 2) for k in c1 if k in c0}
    gen_cpu = [c for _, c in reps if c is not None]
    if gen_cpu:
        cpu["load_generator"] = round(sum(gen_cpu), 2)
    k = a.guests / 1000.0
    wall = float(a.wall[1]) - float(a.wall[0])
    out = {
        "label": a.label, "guests": a.guests, "rooms": a.rooms, "window_s": a.window,
        "wall_s": round(wall, 1), "generators": len(a.files), "reports_missing": len(a.files) - len(ok),
        "api_requests": int(a.api[1]) - int(a.api[0]),
        "api_polls": int(a.api_polls[1]) - int(a.api_polls[0]),
        "cpu_s": cpu,
        "cpu_s_per_1000_guests": {n: round(v / k, 3) for n, v in cpu.items()},
    }
    out["cpu_pct_per_1000_guests"] = {n: round(100 * v / wall / k, 2) for n, v in cpu.items()} if wall > 0 else {}
    out["api_requests_per_s"] = round(out["api_requests"] / wall, 1) if wall > 0 else None
    out["api_polls_per_s"] = round(out["api_polls"] / wall, 1) if wall > 0 else None
    if ok:
        def s(key):
            return sum(r.get(key) or 0 for r in ok)

        def worst(sec, q):
            return max((r.get(sec) or {}).get(q, 0) for r in ok)

        preq = s("poll_requests")
        out.update({
            "guests_joined": s("guests_joined"), "polls": s("polls"), "poll_requests": preq,
            "polls_per_s": round(s("polls_per_s"), 1),
            "poll_304_share": round(sum((r.get("poll_304_share") or 0) * (r.get("poll_requests") or 0) for r in ok) / preq, 4) if preq else 0,
            "poll_p50_ms": worst("poll_latency_ms", "p50"), "poll_p99_ms": worst("poll_latency_ms", "p99"),
            "sends": s("sends"), "sends_acknowledged": s("sends_acknowledged"),
            "send_p50_ms": worst("send_latency_ms", "p50"), "send_p99_ms": worst("send_latency_ms", "p99"),
            "delivery_p50_ms": worst("delivery_latency_ms", "p50"), "delivery_p99_ms": worst("delivery_latency_ms", "p99"),
            "delivery_samples": sum((r.get("delivery_latency_ms") or {}).get("count", 0) for r in ok),
            "errors": {},
        })
        for r in ok:
            for e, v in (r.get("errors") or {}).items():
                out["errors"][e] = out["errors"].get(e, 0) + v
        out["errors_total"] = sum(out["errors"].values())
        # Delivery anomalies (counted whether or not --check was on).
        kinds = ("missing", "duplicated", "out_of_order", "lost_acknowledged")
        out["check_anomalies"] = sum((r.get("check") or {}).get(k, 0) for r in ok for k in kinds)
    print(json.dumps(out, sort_keys=True))


def load_runs(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def table(a):
    runs = load_runs(a.jsonl)
    for r in runs:
        if r.get("wall_s"):
            r.setdefault("api_polls_per_s", round(r["api_polls"] / r["wall_s"], 1))
    cols = ["label", "guests", "api_requests_per_s", "api_polls_per_s", "poll_304_share", "poll_p99_ms", "delivery_p50_ms",
            "delivery_p99_ms", "send_p99_ms", "errors_total"]
    print(" | ".join(cols + ["CPU % of a core per 1000 guests"]))
    for r in runs:
        print(" | ".join(str(r.get(c, "-")) for c in cols) + " | " +
              ", ".join("%s %s" % kv for kv in sorted(r.get("cpu_pct_per_1000_guests", {}).items())))


def push_table(a):
    """push.sh's runs: one line per (server, transport, guests), delivery
    latency, errors and anomalies, API load, and server CPU per 1,000 guests
    (per process in the last column)."""
    runs = load_runs(a.jsonl)
    head = ["server", "transport", "guests", "delivery p50 ms", "delivery p99 ms", "samples", "errors",
            "anomalies", "API req/s", "server CPU %/1000 g", "generator CPU %/1000 g", "CPU % of a core per 1000 guests, by process"]
    rows = []
    for r in runs:
        pct = r.get("cpu_pct_per_1000_guests", {})
        rows.append([r.get("server", "-"), r.get("transport", "-"), r["guests"], r.get("delivery_p50_ms", "-"),
                     r.get("delivery_p99_ms", "-"), r.get("delivery_samples", "-"), r.get("errors_total", "-"),
                     r.get("check_anomalies", "-"), r.get("api_requests_per_s", "-") if r.get("server") == "chatty" else "-",
                     r.get("server_cpu_pct_per_1000_guests", "-"), pct.get("load_generator", "-"),
                     ", ".join("%s %s" % kv for kv in sorted(pct.items()) if kv[0] != "load_generator")])
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for row in rows:
        print(" | ".join(str(c) for c in row))


def plot(a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = load_runs(a.jsonl)
    for r in runs:
        if r.get("wall_s"):
            r.setdefault("api_polls_per_s", round(r["api_polls"] / r["wall_s"], 1))
    labels = []
    for r in runs:
        if r["label"] not in labels:
            labels.append(r["label"])
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for lab in labels:
        rs = sorted((r for r in runs if r["label"] == lab and a.y in r), key=lambda r: r[a.x])
        if not rs:
            continue
        line, = ax.plot([r[a.x] for r in rs], [r[a.y] for r in rs], marker="o", label=a.names.get(lab, lab) if hasattr(a, "names") else lab)
        if a.y2:
            ax.plot([r[a.x] for r in rs], [r.get(a.y2, 0) for r in rs], marker=".", linestyle="--", color=line.get_color())
    ax.set_xlabel(a.xlabel)
    ax.set_ylabel(a.ylabel)
    if a.logx:
        ax.set_xscale("log")
    ax.set_title(a.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.png)
    print("wrote", a.png)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("--label", required=True)
    m.add_argument("--guests", type=int, required=True)
    m.add_argument("--rooms", type=int, required=True)
    m.add_argument("--api", nargs=2, required=True)
    m.add_argument("--api-polls", nargs=2, required=True)
    m.add_argument("--cpu0", required=True)
    m.add_argument("--cpu1", required=True)
    m.add_argument("--wall", nargs=2, required=True)
    m.add_argument("--window", type=float, required=True)
    m.add_argument("files", nargs="+")
    t = sub.add_parser("table")
    t.add_argument("jsonl")
    pt = sub.add_parser("push-table")
    pt.add_argument("jsonl")
    g = sub.add_parser("plot")
    g.add_argument("jsonl")
    g.add_argument("png")
    g.add_argument("--x", default="guests")
    g.add_argument("--y", required=True)
    g.add_argument("--y2")
    g.add_argument("--xlabel", default="guests")
    g.add_argument("--ylabel", required=True)
    g.add_argument("--title", default="")
    g.add_argument("--logx", action="store_true")
    a = p.parse_args()
    {"merge": merge, "table": table, "push-table": push_table, "plot": plot}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
