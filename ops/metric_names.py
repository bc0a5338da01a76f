#!/usr/bin/env python3
"""Lists every metric name used by the alert/recording rules and the Grafana dashboard.

One name per line, sorted, as it appears in the expressions, i.e. as a sample name on
/metrics (histograms as NAME_bucket / NAME_sum / NAME_count). Recording-rule outputs
(chatty:...) are not metrics of the services and are left out.

    python3 ops/metric_names.py            # sample names
    python3 ops/metric_names.py --family   # histogram suffixes stripped (metric families)

An integration test compares this list with a running stack's /metrics.
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent
NAME = re.compile(r"(?<![A-Za-z0-9_:])(chatty_[a-z0-9_]+)")


def exprs():
    for path in sorted((ROOT / "prometheus").glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                yield rule["expr"]

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query") and isinstance(v, str):
                    yield v
                else:
                    yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    for path in sorted((ROOT / "grafana").glob("*.json")):
        yield from walk(json.loads(path.read_text(encoding="utf-8")))


def main():
    family = "--family" in sys.argv[1:]
    names = set()
    for e in exprs():
        for n in NAME.findall(str(e)):
            if family:
                n = re.sub(r"_(bucket|sum|count)$", "", n)
            names.add(n)
    for n in sorted(names):
        print(n)


if __name__ == "__main__":
    main()
