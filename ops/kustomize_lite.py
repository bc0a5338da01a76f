#!/usr/bin/env python3
"""A small renderer for the subset of kustomize that k8s/ uses.

Kustomize is not packaged by Debian or PyPI, so ops/validate.sh renders the overlays
with this script on any machine, and also with `kubectl kustomize` when a recent kubectl
is present, comparing the two outputs. Supported kustomization fields:

  resources            files, or directories holding a kustomization.yaml
  namespace            set on every namespaced object (not on Namespace itself)
  images               name -> newName / newTag / digest, in (init)containers
  patches              strategic-merge patches, from `path:` or inline `patch:`,
                       matched by the patch's kind and metadata.name, or by `target:`
                       (kind / name); `$patch: delete` deletes an object
  patchesStrategicMerge  the older spelling (paths)

Anything else in a kustomization.yaml is an error, so the subset cannot drift silently.

    python3 ops/kustomize_lite.py k8s/overlays/dev > out.yaml
"""
import copy
import pathlib
import sys

import yaml

KNOWN = {"apiVersion", "kind", "namespace", "resources", "images", "patches",
         "patchesStrategicMerge"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}
# Strategic-merge keys for the lists we patch (others are replaced whole, as kustomize does).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
    "volumeMounts": "mountPath", "imagePullSecrets": "name",
    "volumeClaimTemplates": None,
}
PORT_KEYS = ("containerPort", "port")


def merge(base, patch, key=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        mk = MERGE_KEYS.get(key)
        if key == "ports" and all(isinstance(i, dict) for i in base + patch):
            mk = next((p for p in PORT_KEYS if all(p in i for i in base + patch)), None)
        if mk:
            out = [copy.deepcopy(i) for i in base]
            for item in patch:
                for idx, existing in enumerate(out):
                    if existing.get(mk) == item.get(mk):
                        if item.get("$patch") == "delete":
                            out.pop(idx)
                        else:
                            out[idx] = merge(existing, item, None)
                        break
                else:
                    # kustomize (strategic merge) puts new items first.
                    out.insert(0, copy.deepcopy(item))
            return out
        return copy.deepcopy(patch)
    return copy.deepcopy(patch)


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def set_image(containers, images):
    for c in containers or []:
        ref = c.get("image", "")
        name, tag = ref, None
        if "@" in name:
            name = name.split("@", 1)[0]
        elif ":" in name.rsplit("/", 1)[-1]:
            name, tag = name.rsplit(":", 1)
        for img in images:
            if img["name"] != name:
                continue
            new_name = img.get("newName", name)
            if "digest" in img:
                c["image"] = f"{new_name}@{img['digest']}"
            else:
                new_tag = img.get("newTag", tag)
                c["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def pod_specs(obj):
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        yield spec
    tmpl = (spec.get("template") or {}).get("spec")
    if tmpl:
        yield tmpl
    job = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec")
    if job:
        yield job


def apply_patch(objs, patch, target=None):
    kind = (target or {}).get("kind") or patch.get("kind")
    name = (target or {}).get("name") or (patch.get("metadata") or {}).get("name")
    hits = [i for i, o in enumerate(objs)
            if o.get("kind") == kind and o["metadata"].get("name") == name]
    if not hits:
        raise SystemExit(f"patch target {kind}/{name} not found")
    for i in hits:
        if patch.get("$patch") == "delete":
            objs[i] = None
        else:
            body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
            objs[i] = merge(objs[i], body)
    objs[:] = [o for o in objs if o is not None]


def render(directory):
    d = pathlib.Path(directory)
    kfile = d / "kustomization.yaml"
    k = load_docs(kfile)[0]
    unknown = set(k) - KNOWN
    if unknown:
        raise SystemExit(f"{kfile}: unsupported fields {sorted(unknown)}")
    objs = []
    for res in k.get("resources", []):
        p = d / res
        objs.extend(render(p) if p.is_dir() else load_docs(p))
    for item in k.get("patchesStrategicMerge", []):
        for patch in load_docs(d / item):
            apply_patch(objs, patch)
    for item in k.get("patches", []):
        docs = load_docs(d / item["path"]) if "path" in item else \
            [x for x in yaml.safe_load_all(item["patch"]) if x]
        for patch in docs:
            apply_patch(objs, patch, item.get("target"))
    if "namespace" in k:
        for o in objs:
            if o.get("kind") not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = k["namespace"]
    if k.get("images"):
        for o in objs:
            for ps in pod_specs(o):
                set_image(ps.get("containers"), k["images"])
                set_image(ps.get("initContainers"), k["images"])
    return objs


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: kustomize_lite.py DIR")
    yaml.safe_dump_all(render(sys.argv[1]), sys.stdout, sort_keys=False, width=1000)


if __name__ == "__main__":
    main()
