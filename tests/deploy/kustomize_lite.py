"""A small kustomize for the features ``deploy/kubernetes`` uses, so the manifests render and are
checked on a machine without ``kubectl`` (Debian's ``kubernetes-client`` is 1.20, whose built-in
kustomize v2 predates ``components``, ``labels`` and inline patches).

Supported: ``resources`` (files and directories), ``components``, ``namespace``, ``labels``
(metadata, pod templates, volume claim templates), ``images``, ``configMapGenerator`` (``files``, ``behavior: replace``;
a content-hash suffix as kustomize adds, with references in pod specs renamed), ``patches`` (a
strategic merge patch file: maps merged, lists of named items merged by ``name``, other lists
replaced; or an inline JSON patch with ``replace`` / ``add`` ops on a ``target``).
Anything else raises, so a manifest using more than this is noticed, not mis-rendered.

When ``kubectl`` is installed the tests render with it too and compare the two.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

_KNOWN = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "labels",
    "images",
    "configMapGenerator",
    "patches",
}
_CLUSTER_SCOPED = {"Namespace"}


def _load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(directory: Path) -> list[Doc]:
    """The objects ``kubectl kustomize directory`` would print (hash suffixes included)."""
    docs, _ = _build(directory)
    _rename_config_maps(docs)
    return docs


def _build(directory: Path) -> tuple[list[Doc], dict[str, Doc]]:
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - _KNOWN
    if unknown:
        raise NotImplementedError(f"{kfile}: kustomize_lite does not support {sorted(unknown)}")
    docs: list[Doc] = []
    for entry in k.get("resources", []):
        target = directory / entry
        if target.is_dir():
            docs.extend(_build(target)[0])
        else:
            docs.extend(_load_docs(target))
    for gen in k.get("configMapGenerator", []):
        data = {Path(f).name: (directory / f).read_text() for f in gen.get("files", [])}
        cm: Doc = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": gen["name"], "annotations": {"kustomize-lite/generated": "1"}},
            "data": data,
        }
        existing = [d for d in docs if d["kind"] == "ConfigMap" and _name(d) == gen["name"]]
        behavior = gen.get("behavior", "create")
        if behavior == "replace":
            if not existing:
                raise ValueError(f"{kfile}: replace of missing ConfigMap {gen['name']}")
            existing[0]["data"] = data
        elif existing:
            raise ValueError(f"{kfile}: ConfigMap {gen['name']} generated twice")
        else:
            docs.append(cm)
    for component in k.get("components", []):
        docs.extend(_build(directory / component)[0])
    for patch in k.get("patches", []):
        _apply_patch(directory, docs, patch)
    for image in k.get("images", []):
        for container in _containers(docs):
            if container.get("image", "").split(":")[0] == image["name"]:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for spec in k.get("labels", []):
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(spec["pairs"])
            template = _pod_template(doc)
            if template is not None and spec.get("includeTemplates"):
                template.setdefault("metadata", {}).setdefault("labels", {}).update(spec["pairs"])
                for claim in doc["spec"].get("volumeClaimTemplates", []):
                    claim["metadata"].setdefault("labels", {}).update(spec["pairs"])
            if spec.get("includeSelectors"):
                raise NotImplementedError("labels.includeSelectors")
    if "namespace" in k:
        for doc in docs:
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = k["namespace"]
    return docs, {}


def _name(doc: Doc) -> str:
    return str(doc["metadata"]["name"])


def _pod_template(doc: Doc) -> Doc | None:
    template = doc.get("spec", {}).get("template")
    return template if isinstance(template, dict) else None


def _pod_specs(docs: list[Doc]) -> list[Doc]:
    return [t["spec"] for d in docs if (t := _pod_template(d)) is not None]


def _containers(docs: list[Doc]) -> list[Doc]:
    return [c for spec in _pod_specs(docs) for c in spec.get("containers", [])]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge, the subset used here: lists of maps with ``name`` merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
        and all("metadata" not in i for i in patch)  # volumeClaimTemplates: replaced whole
    ):
        merged = [dict(i) for i in base]
        for item in patch:
            for i, existing in enumerate(merged):
                if existing["name"] == item["name"]:
                    merged[i] = _merge(existing, item)
                    break
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _apply_patch(directory: Path, docs: list[Doc], patch: Doc) -> None:
    if "path" in patch:
        (body,) = _load_docs(directory / patch["path"])
        for i, doc in enumerate(docs):
            if doc["kind"] == body["kind"] and _name(doc) == _name(body):
                docs[i] = _merge(doc, body)
                return
        raise ValueError(f"patch {patch['path']} matches no {body['kind']}/{_name(body)}")
    target = patch["target"]
    matches = [d for d in docs if d["kind"] == target["kind"] and _name(d) == target["name"]]
    if not matches:
        raise ValueError(f"patch target {target} matches nothing")
    for op in yaml.safe_load(patch["patch"]):
        if op["op"] not in ("replace", "add"):
            raise NotImplementedError(op["op"])
        *parents, leaf = op["path"].strip("/").split("/")
        for doc in matches:
            node = doc
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if op["op"] == "replace" and leaf not in node:
                raise ValueError(f"replace of missing {op['path']}")
            node[leaf] = op["value"]


def _hash_suffix(cm: Doc) -> str:
    """A deterministic content hash (not kustomize's own algorithm: the tests compare names
    without it)."""
    digest = hashlib.sha256(yaml.safe_dump(cm["data"], sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _rename_config_maps(docs: list[Doc]) -> None:
    renamed: dict[str, str] = {}
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] == "ConfigMap" and meta.get("annotations", {}).pop(
            "kustomize-lite/generated", None
        ):
            if not meta["annotations"]:
                del meta["annotations"]
            new = f"{meta['name']}-{_hash_suffix(doc)}"
            renamed[meta["name"]] = new
            meta["name"] = new
    for spec in _pod_specs(docs):
        for volume in spec.get("volumes", []):
            ref = volume.get("configMap")
            if ref is not None and ref["name"] in renamed:
                ref["name"] = renamed[ref["name"]]


def strip_hash(name: str) -> str:
    """``openai-meter-config-k2tmgfd6k8`` -> ``openai-meter-config`` (generated names only)."""
    head, _, tail = name.rpartition("-")
    return head if head.startswith("openai-meter-config") and len(tail) == 10 else name
