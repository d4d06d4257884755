"""Validates every manifest in istio/ against Istio's CRD schemas
(tests/istio-crds/ by default, ISTIO_CRDS overrides). Exit 1 on any problem."""
import glob
import os
import re
import sys

import jsonschema
import yaml

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Istio's CRD bundle, kept in the repository as test data (tests/istio-crds/
# says where it comes from and how to refresh it); ISTIO_CRDS overrides it.
crd_file = os.environ.get("ISTIO_CRDS") or os.path.join(
    root, "tests", "istio-crds", "customresourcedefinitions.gen.yaml")
if not os.path.exists(crd_file):
    sys.exit(f"Istio CRD schemas not found at {crd_file} (make istio-crds refreshes them)")


def without_k8s_extensions(node):
    # The x-kubernetes-* keywords are not JSON Schema; CEL rules are not checked here.
    if isinstance(node, dict):
        return {k: without_k8s_extensions(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if isinstance(node, list):
        return [without_k8s_extensions(v) for v in node]
    return node


schemas = {}
with open(crd_file) as f:
    for crd in yaml.safe_load_all(f):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            schemas[(f"{group}/{version['name']}", kind)] = without_k8s_extensions(schema)



SHA256 = re.compile(r"^[a-f0-9]{64}$")


def cel_problems(doc):
    """The CRDs' CEL rules that matter here (JSON Schema cannot express them)."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    out = []
    if kind in ("WasmPlugin", "TrafficExtension", "EnvoyFilter"):
        targets = [k for k in ("selector", "workloadSelector", "targetRef", "targetRefs") if k in spec]
        if len(targets) != 1:
            out.append(f"needs exactly one of selector / targetRef(s), has {targets}")
    if kind == "TrafficExtension" and ("wasm" in spec) == ("lua" in spec):
        out.append("needs exactly one of wasm / lua")
    wasm = spec.get("wasm", spec) if kind in ("WasmPlugin", "TrafficExtension") else None
    if wasm is not None:
        if not SHA256.match(wasm.get("sha256", "")):
            out.append("sha256 must be 64 lowercase hex characters")
        if not re.match(r"^(oci|https?|file)://", wasm.get("url", "")):
            out.append("url must have scheme oci://, http://, https:// or file://")
    return out


def check(path, docs):
    """Returns (documents checked, problems printed)."""
    checked = problems = 0
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        name = f"{os.path.relpath(path, root) if os.path.exists(path) else path}: {key[1]} {doc.get('metadata', {}).get('name')}"
        schema = schemas.get(key)
        if schema is None:
            print(f"{name}: no CRD schema for {key}")
            problems += 1
            continue
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
        for e in errors:
            print(f"{name}: {'.'.join(str(p) for p in e.absolute_path)}: {e.message}")
        problems += len(errors)
        for message in cel_problems(doc):
            print(f"{name}: {message}")
            problems += 1
        checked += 1
    return checked, problems


# The checker must be able to fail: a VirtualService with a wrong type is caught.
broken = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "self-test"}, "spec": {"hosts": "not-a-list"}}
no_sha = {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin", "metadata": {"name": "t"},
          "spec": {"url": "oci://x/y:1", "sha256": "", "selector": {"matchLabels": {"a": "b"}}}}
if check("self-test", [broken])[1] == 0 or check("self-test", [no_sha])[1] == 0:
    print("schema self-test failed: a broken VirtualService passed")
    sys.exit(1)

checked = problems = 0
for path in sorted(glob.glob(os.path.join(root, "istio", "**", "*.yaml"), recursive=True)):
    with open(path) as f:
        c, p = check(path, [d for d in yaml.safe_load_all(f) if d])
    checked, problems = checked + c, problems + p
print(f"istio manifests: {checked} checked against {os.path.relpath(crd_file, root)}, {problems} problems")
sys.exit(1 if problems or not checked else 0)
