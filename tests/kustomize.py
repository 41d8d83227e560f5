"""A small kustomize for the tests: what ``kubectl apply -k`` would send for infra/k8s.

There is no kustomize (nor Helm) binary in the package registries here and no maintained Python
renderer, so this implements the few kustomization fields infra/k8s uses: resources (files and
directories), components, patches (a strategic-merge patch reduced to what ours need: maps merge,
``null`` deletes, anything else replaces), secretGenerator from env files, generatorOptions,
labels (metadata only), namespace and images. Any other field raises, so a kustomization that grows
past this fails the tests instead of being half-rendered.

A generator's env file that is absent (secrets.env is never committed) is read from its
``.example`` next to it, as an operator would copy it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {
    "apiVersion", "kind", "resources", "components", "patches", "secretGenerator",
    "generatorOptions", "labels", "namespace", "images",
}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass"}


def render(directory: Path) -> list[dict[str, Any]]:
    """Every object the kustomization in ``directory`` produces, in order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN
    if unknown:
        raise ValueError(f"{directory}: tests/kustomize.py does not implement {sorted(unknown)}")
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        docs.extend(render(path) if path.is_dir() else load(path))
    docs.extend(generated(directory, kustomization))
    for label in kustomization.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise ValueError("labels: only metadata labels are implemented")
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for entry in kustomization.get("components", []):
        component_dir = (directory / entry).resolve()
        component = yaml.safe_load((component_dir / "kustomization.yaml").read_text())
        assert component["kind"] == "Component", f"{component_dir} is not a Component"
        docs = apply_kustomization(docs, component_dir, component)
    docs = apply_kustomization(docs, directory, {k: v for k, v in kustomization.items() if k == "patches"})
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for container in containers(docs):
            name, _, _ = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return docs


def apply_kustomization(docs: list[dict], directory: Path, kustomization: dict) -> list[dict]:
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "patches"}
    if unknown:
        raise ValueError(f"{directory}: tests/kustomize.py does not implement {sorted(unknown)} in a component")
    docs = docs + [d for entry in kustomization.get("resources", []) for d in load(directory / entry)]
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only file patches are implemented, not {patch}")
        for change in load(directory / patch["path"]):
            targets = [d for d in docs if (d["kind"], d["metadata"]["name"]) == (change["kind"], change["metadata"]["name"])]
            if len(targets) != 1:
                raise ValueError(f"{directory}/{patch['path']}: patches {len(targets)} objects, not one")
            merge(targets[0], change)
    return docs


def merge(target: dict, change: dict) -> None:
    for key, value in change.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def generated(directory: Path, kustomization: dict) -> list[dict]:
    options = kustomization.get("generatorOptions", {})
    if kustomization.get("secretGenerator") and not options.get("disableNameSuffixHash"):
        raise ValueError("name-suffix hashes (and rewriting the references to them) are not implemented")
    secrets = []
    for generator in kustomization.get("secretGenerator", []):
        if set(generator) - {"name", "envs"}:
            raise ValueError(f"secretGenerator: only envs are implemented, not {generator}")
        data: dict[str, str] = {}
        for env in generator["envs"]:
            path = directory / env
            if not path.exists():
                path = path.with_name(path.name + ".example")
            data.update(env_file(path))
        secrets.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": generator["name"]}, "stringData": data})
    return secrets


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_specs(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(object, pod spec) for every object that runs pods."""
    found = []
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            found.append((doc, doc["spec"]["template"]["spec"]))
    return found


def containers(docs: list[dict]) -> list[dict]:
    return [c for _, spec in pod_specs(docs) for c in spec.get("initContainers", []) + spec["containers"]]
