#!/usr/bin/env bash
# Validates the operations files: Kubernetes manifests (base and overlays), Prometheus
# rules and their unit tests, the PrometheusRule copy, and the Grafana dashboard.
# Installs what it needs when absent. Exits non-zero on the first failing check.
#   bash ops/validate.sh
set -euo pipefail

cd "$(dirname "$0")/.."
K8S_VERSION="${K8S_VERSION:-1.34.0}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
SUDO=""
if [ "$(id -u)" -ne 0 ] && have sudo; then SUDO="sudo"; fi

apt_install() {
  # apt may be busy with another install for a while: retry on the lock.
  local i
  for i in $(seq 1 30); do
    if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
      return 0
    fi
    if [ "$i" -eq 1 ]; then $SUDO apt-get update || true; fi
    echo "apt-get install failed (lock held?), retrying in 10 s ($i/30)" >&2
    sleep 10
  done
  return 1
}

step "tools"
missing=()
have promtool || missing+=(prometheus)
have yamllint || missing+=(yamllint)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing from Debian: ${missing[*]}"
  apt_install "${missing[@]}"
  # Debian's prometheus package starts a server on systems with systemd; we only need promtool.
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
if ! python3 -c 'import yaml, jsonschema' >/dev/null 2>&1 || ! have kubernetes-validate; then
  echo "installing from PyPI: kubernetes-validate"
  python3 -m pip install --quiet kubernetes-validate
fi
KV="kubernetes-validate"
have kubernetes-validate || KV="python3 -m kubernetes_validate"
echo "promtool: $(promtool --version 2>&1 | head -1)"
echo "yamllint: $(yamllint --version)"
echo "kubernetes-validate: $($KV --version 2>&1 | tail -1)"

# The renderer: ops/kustomize_lite.py always (kustomize is in neither Debian nor PyPI);
# `kubectl kustomize` too when a kubectl with kustomize v4+ is installed, and the two
# renderings must be identical.
KUBECTL_KUSTOMIZE=0
if have kubectl && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'; then
  KUBECTL_KUSTOMIZE=1
  echo "kubectl kustomize: $(kubectl version --client 2>/dev/null | grep Kustomize)"
else
  echo "kubectl kustomize: not available (v4+ needed); rendering with ops/kustomize_lite.py only"
fi

step "yamllint (config k8s/.yamllint): k8s/ ops/prometheus/"
yamllint -s -c k8s/.yamllint k8s ops/prometheus
echo "yamllint OK"

step "promtool check rules ops/prometheus/*.yml"
promtool check rules ops/prometheus/*.yml

step "promtool test rules ops/prometheus/tests/*.yml"
promtool test rules ops/prometheus/tests/*.yml

step "every alert has severity, summary, description and a runbook_url in docs/operations.md, and a test"
python3 - <<'PY'
import glob, re, sys, yaml
doc = open("docs/operations.md", encoding="utf-8").read()
# GitHub-style anchors of the markdown headings.
anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.+)$", doc, re.M)}
tests = "".join(open(f, encoding="utf-8").read() for f in glob.glob("ops/prometheus/tests/*.yml"))
bad = 0
alerts = 0
for f in sorted(glob.glob("ops/prometheus/*.yml")):
    for g in yaml.safe_load(open(f, encoding="utf-8"))["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            alerts += 1
            name, ann = r["alert"], r.get("annotations", {})
            problems = []
            if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                problems.append("severity label")
            for k in ("summary", "description", "runbook_url"):
                if not ann.get(k):
                    problems.append(k)
            url = ann.get("runbook_url", "")
            m = re.fullmatch(r"docs/operations\.md#([a-z0-9-]+)", url)
            if not m:
                problems.append(f"runbook_url {url!r} is not docs/operations.md#anchor")
            elif m.group(1) not in anchors:
                problems.append(f"anchor #{m.group(1)} not in docs/operations.md")
            if f"alertname: {name}\n" not in tests:
                problems.append("no promtool test")
            if problems:
                bad += 1
                print(f"{name}: " + ", ".join(problems))
print(f"{alerts} alerts checked")
sys.exit(1 if bad else 0)
PY

step "k8s/base/prometheusrule.yaml is identical to what ops/prometheus generates"
python3 ops/gen_prometheusrule.py --check
echo "PrometheusRule in sync"

for dir in k8s/base k8s/overlays/dev k8s/overlays/production; do
  name="$(echo "$dir" | tr '/' '-')"
  out="$WORK/$name.yaml"
  step "render $dir"
  python3 ops/kustomize_lite.py "$dir" >"$out"
  if [ "$KUBECTL_KUSTOMIZE" = 1 ]; then
    kubectl kustomize "$dir" >"$WORK/$name.kubectl.yaml"
    echo "kustomize_lite.py vs kubectl kustomize:"
    python3 ops/check_manifests.py compare "$out" "$WORK/$name.kubectl.yaml"
  fi
  python3 ops/check_manifests.py split "$out" "$WORK/$name"
  step "kubernetes-validate --strict -k $K8S_VERSION ($dir)"
  $KV --strict --quiet -k "$K8S_VERSION" "$WORK/$name"/*.yaml
  echo "$(ls "$WORK/$name"/*.yaml | wc -l) objects valid"
  step "custom resources (ServiceMonitor, PrometheusRule) against the CRD schema subset ($dir)"
  python3 ops/check_manifests.py crds "$WORK/$name"/crd/*.yaml
  step "project policy ($dir)"
  python3 ops/check_manifests.py policy "$out"
done

step "promtool check rules on the rendered PrometheusRule"
python3 - "$WORK/k8s-base.yaml" "$WORK/rendered-rules.yml" <<'PY'
import sys, yaml
for o in yaml.safe_load_all(open(sys.argv[1])):
    if o and o["kind"] == "PrometheusRule":
        yaml.safe_dump({"groups": o["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
PY
promtool check rules "$WORK/rendered-rules.yml"

step "Grafana dashboard: python3 -m json.tool ops/grafana/chatty.json"
python3 -m json.tool ops/grafana/chatty.json >/dev/null
python3 - <<'PY'
import json, sys
d = json.load(open("ops/grafana/chatty.json"))
bad = [p["title"] for p in d["panels"] if p.get("type") != "row"
       and (p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}" or not p.get("targets"))]
names = [v["name"] for v in d["templating"]["list"]]
if bad or "DS_PROMETHEUS" not in names:
    print("panels without ${DS_PROMETHEUS} or targets:", bad, "variables:", names)
    sys.exit(1)
print(f"{len(d['panels'])} panels, datasource variable DS_PROMETHEUS")
PY

step "metric names used by rules and dashboard (ops/metric_names.py)"
python3 ops/metric_names.py --family | tee "$WORK/names.txt"
[ -s "$WORK/names.txt" ]

printf '\nops/validate.sh: all checks passed\n'
