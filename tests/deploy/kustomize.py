"""Render a kustomization: with `kustomize build` or `kubectl kustomize` when one is installed, else with the
small Python equivalent below, which covers exactly the features deploy/k8s uses (resources, components,
namespace, labels without selectors, images, JSON 6902 patches with a target, `$patch: delete`). A test holds the
two to the same output wherever a binary is there, so the fallback cannot drift from kustomize's meaning."""

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]


def binary() -> list[str] | None:
    if path := shutil.which("kustomize"):
        return [path, "build"]
    if path := shutil.which("kubectl"):
        return [path, "kustomize"]
    return None


def render(directory: Path) -> list[Resource]:
    command = binary()
    if command is None:
        return render_python(directory)
    out = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=120, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _load(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization(directory: Path) -> Resource:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def _matches(resource: Resource, target: Resource) -> bool:
    """kustomize reads a target's name as a regular expression matching the whole name."""
    meta = resource["metadata"]
    name = target.get("name")
    return (target.get("kind") in (None, resource["kind"])) and (name is None or bool(re.fullmatch(name, meta["name"])))


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def _apply_6902(doc: Any, ops: list[Resource]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif op["op"] in ("add", "replace"):
            value = copy.deepcopy(op["value"])
            if isinstance(node, list):
                if last == "-":
                    node.append(value)
                elif op["op"] == "add":
                    node.insert(int(last), value)
                else:
                    node[int(last)] = value
            else:
                if op["op"] == "replace" and last not in node:
                    raise KeyError(f"replace of a missing path {op['path']}")
                node[last] = value
        else:
            raise NotImplementedError(f"JSON patch op {op['op']!r}: teach tests/deploy/kustomize.py")


def _apply_patches(resources: list[Resource], patches: list[Resource], base: Path) -> list[Resource]:
    for entry in patches:
        text = entry["patch"] if "patch" in entry else (base / entry["path"]).read_text()
        body = yaml.safe_load(text)
        if isinstance(body, list):  # JSON 6902 against its target
            hits = [r for r in resources if _matches(r, entry["target"])]
            if not hits:
                raise LookupError(f"patch target {entry['target']} matches nothing")
            for resource in hits:
                _apply_6902(resource, body)
        elif body.get("$patch") == "delete":
            target = {"kind": body["kind"], "name": body["metadata"]["name"]}
            kept = [r for r in resources if not _matches(r, target)]
            if len(kept) == len(resources):
                raise LookupError(f"delete patch {target} matches nothing")
            resources = kept
        else:
            raise NotImplementedError("strategic merge patches: teach tests/deploy/kustomize.py")
    return resources


def _set_images(resources: list[Resource], images: list[Resource]) -> None:
    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                for container in node.get(key, []) or []:
                    name, _, tag = container["image"].partition(":")
                    for image in images:
                        if image["name"] == name:
                            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for resource in resources:
        visit(resource)


NAMESPACED_NOT = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def render_python(directory: Path) -> list[Resource]:
    kustomization = _kustomization(directory)
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        resources += render_python(path) if path.is_dir() else _load(path)
    for entry in kustomization.get("components", []):
        component = directory / entry
        spec = _kustomization(component)
        for item in spec.get("resources", []):
            resources += _load(component / item)
        resources = _apply_patches(resources, spec.get("patches", []), component)
    for label in kustomization.get("labels", []):
        if label.get("includeSelectors"):
            raise NotImplementedError("labels with selectors: teach tests/deploy/kustomize.py")
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label["pairs"])
    if namespace := kustomization.get("namespace"):
        for resource in resources:
            if resource["kind"] not in NAMESPACED_NOT:
                resource["metadata"]["namespace"] = namespace
    resources = _apply_patches(resources, kustomization.get("patches", []), directory)
    _set_images(resources, kustomization.get("images", []))
    return resources
