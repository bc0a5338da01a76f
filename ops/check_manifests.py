#!/usr/bin/env python3
"""Manifest checks used by ops/validate.sh.

    check_manifests.py split RENDERED.yaml OUTDIR
        writes each built-in-kind object to OUTDIR/NN-kind-name.yaml (for
        kubernetes-validate) and each custom resource to OUTDIR/crd/; prints the counts
    check_manifests.py crds FILE...
        validates ServiceMonitor and PrometheusRule objects against a JSON Schema subset
        of the monitoring.coreos.com/v1 CRDs (the fields we use, unknown fields rejected)
    check_manifests.py compare A.yaml B.yaml
        compares two renderings as sets of objects (order-insensitive)
    check_manifests.py policy RENDERED.yaml
        project rules: securityContext, probes, resources, preStop vs grace period
"""
import pathlib
import sys

import jsonschema
import yaml

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": LABELS,
        "annotations": LABELS,
    },
    "additionalProperties": False,
}
DURATION = {"type": "string", "pattern": "^(([0-9]+)(ms|s|m|h|d|w|y))+$"}
SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": LABELS,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "required": ["key", "operator"],
            "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
                           "values": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": False}},
    },
    "additionalProperties": False,
}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": SELECTOR,
                "namespaceSelector": {"type": "object", "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"type": ["string", "integer"]},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                    "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                }},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
RULE = {
    "type": "object",
    "required": ["expr"],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"type": ["string", "integer"], "minLength": 1},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": LABELS,
        "annotations": LABELS,
    },
    "additionalProperties": False,
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "properties": {"groups": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": DURATION,
                    "limit": {"type": "integer"},
                    "rules": {"type": "array", "items": RULE},
                },
                "additionalProperties": False,
            }}},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def key(o):
    m = o.get("metadata", {})
    return (o.get("apiVersion"), o.get("kind"), m.get("namespace", ""), m.get("name"))


def cmd_split(rendered, outdir):
    out = pathlib.Path(outdir)
    (out / "crd").mkdir(parents=True, exist_ok=True)
    builtin = crd = 0
    for i, o in enumerate(load(rendered)):
        name = f"{i:02d}-{o['kind'].lower()}-{o['metadata']['name']}.yaml"
        if o["kind"] in CRD_KINDS:
            (out / "crd" / name).write_text(yaml.safe_dump(o, sort_keys=False))
            crd += 1
        else:
            (out / name).write_text(yaml.safe_dump(o, sort_keys=False))
            builtin += 1
    print(f"{builtin} built-in objects, {crd} custom resources")
    return 0


def cmd_crds(files):
    bad = 0
    for f in files:
        for o in load(f):
            schema = SCHEMAS.get(o.get("kind"))
            if schema is None:
                print(f"{f}: unexpected custom resource kind {o.get('kind')}")
                bad += 1
                continue
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(o), key=str)
            for e in errors:
                print(f"{f}: {o['kind']}/{o['metadata'].get('name')}: "
                      f"{'/'.join(map(str, e.absolute_path))}: {e.message}")
            bad += len(errors)
            if not errors:
                print(f"{f}: {o['kind']}/{o['metadata']['name']} OK")
    return 1 if bad else 0


def cmd_compare(a, b):
    da = {key(o): o for o in load(a)}
    db = {key(o): o for o in load(b)}
    rc = 0
    for k in sorted(set(da) | set(db), key=str):
        if k not in da or k not in db:
            print(f"only in {'B' if k not in da else 'A'}: {k}")
            rc = 1
        elif da[k] != db[k]:
            print(f"differs: {k}")
            print("  A:", yaml.safe_dump(da[k], sort_keys=True)[:3000])
            print("  B:", yaml.safe_dump(db[k], sort_keys=True)[:3000])
            rc = 1
    if rc == 0:
        print(f"identical: {len(da)} objects")
    return rc


def _dur(s):
    s = str(s)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for u in ("ms", "s", "m", "h"):
        if s.endswith(u) and s[: -len(u)].isdigit():
            return int(s[: -len(u)]) * units[u]
    raise ValueError(s)


def cmd_policy(rendered):
    objs = load(rendered)
    cfg = {}
    for o in objs:
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "chatty-config":
            cfg = o.get("data", {})
    problems = []
    for o in objs:
        if o["kind"] != "Deployment" or o["metadata"]["name"] not in ("edge-proxy", "chat-api"):
            continue
        n = o["metadata"]["name"]
        spec = o["spec"]["template"]["spec"]
        psc = spec.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and psc.get("runAsUser") == 10001
                and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
            problems.append(f"{n}: pod securityContext")
        ru = o["spec"].get("strategy", {}).get("rollingUpdate", {})
        if ru.get("maxUnavailable") != 0:
            problems.append(f"{n}: rollingUpdate.maxUnavailable must be 0")
        if not spec.get("topologySpreadConstraints"):
            problems.append(f"{n}: topologySpreadConstraints")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"]):
                problems.append(f"{n}/{c['name']}: container securityContext")
            for p in ("livenessProbe", "readinessProbe"):
                if p not in c:
                    problems.append(f"{n}/{c['name']}: {p}")
            if not (c.get("resources", {}).get("requests") and c["resources"].get("limits")):
                problems.append(f"{n}/{c['name']}: requests and limits")
            cmd = c["lifecycle"]["preStop"]["exec"]["command"]
            pre = int(cmd[-1]) if cmd[0] == "sleep" else 0
            drain_key = "CHATTY_EDGE_DRAIN_TIMEOUT" if n == "edge-proxy" else "CHATTY_DRAIN_TIMEOUT"
            drain = _dur(cfg.get(drain_key, "10s"))
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if not pre or grace <= pre + drain:
                problems.append(f"{n}: terminationGracePeriodSeconds {grace} must exceed "
                                f"preStop {pre}s + drain {drain}s")
    for p in problems:
        print("policy:", p)
    if not problems:
        print("policy OK (securityContext, probes, resources, rollout, grace period)")
    return 1 if problems else 0


def main():
    cmds = {"split": cmd_split, "compare": cmd_compare, "policy": cmd_policy}
    if len(sys.argv) >= 2 and sys.argv[1] == "crds":
        return cmd_crds(sys.argv[2:])
    if len(sys.argv) >= 3 and sys.argv[1] in cmds:
        return cmds[sys.argv[1]](*sys.argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
