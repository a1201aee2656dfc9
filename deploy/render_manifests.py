"""Renders a kustomization the way ``kubectl kustomize`` does, for the subset this repo uses.

kustomize itself is a Go binary not installable from the package registries here, so CI renders
with this and validates the output against the Kubernetes JSON schemas. Any kustomization key it
does not implement is an error, so the output can never silently differ from kustomize's.

    python deploy/render_manifests.py deploy/k8s/overlays/production > rendered.yaml
    python deploy/render_manifests.py deploy/k8s/overlays/production --split OUT_DIR
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas"}
# Kinds that live outside any namespace (the ones this repo could use).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not implement, or is inconsistent."""


def render(directory: Path) -> list[Manifest]:
    """Every resource of the kustomization in ``directory``, transformed, in order."""
    path = directory / "kustomization.yaml"
    if not path.exists():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{path}: unsupported keys {sorted(unknown)}")
    manifests: list[Manifest] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            manifests.extend(render(target))
        elif target.is_file():
            manifests.extend(doc for doc in yaml.safe_load_all(target.read_text()) if doc)
        else:
            raise KustomizeError(f"{path}: resource {entry} does not exist")
    for label in spec.get("labels", []):
        _apply_labels(manifests, label)
    if "namespace" in spec:
        for manifest in manifests:
            if manifest.get("kind") not in CLUSTER_SCOPED:
                manifest.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        if not _apply_image(manifests, image):
            raise KustomizeError(f"{path}: image {image.get('name')} is used by no container")
    for replica in spec.get("replicas", []):
        targets = [
            m
            for m in manifests
            if m.get("kind") == "Deployment" and m["metadata"]["name"] == replica["name"]
        ]
        if not targets:
            raise KustomizeError(f"{path}: replicas for unknown Deployment {replica['name']}")
        for manifest in targets:
            manifest["spec"]["replicas"] = int(replica["count"])
    _check_unique(manifests)
    return manifests


def _apply_labels(manifests: list[Manifest], label: dict[str, Any]) -> None:
    unknown = set(label) - {"pairs", "includeSelectors", "includeTemplates"}
    if unknown or label.get("includeSelectors"):
        raise KustomizeError(f"labels: only pairs and includeTemplates are supported, got {label}")
    pairs = label["pairs"]
    for manifest in manifests:
        manifest.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if label.get("includeTemplates") and manifest.get("kind") in WORKLOADS:
            template = manifest["spec"]["template"]
            template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _containers(manifest: Manifest) -> list[dict[str, Any]]:
    if manifest.get("kind") not in WORKLOADS:
        return []
    pod = manifest["spec"]["template"]["spec"]
    return list(pod.get("initContainers", [])) + list(pod.get("containers", []))


def _apply_image(manifests: list[Manifest], image: dict[str, Any]) -> bool:
    name = image["name"]
    used = False
    for manifest in manifests:
        for container in _containers(manifest):
            current = container["image"]
            base, _, tag = current.partition(":") if "@" not in current else (current, "", "")
            if base != name:
                continue
            used = True
            new_name = image.get("newName", base)
            new_tag = image.get("newTag", tag)
            container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
    return used


def _check_unique(manifests: list[Manifest]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for manifest in manifests:
        metadata = manifest.get("metadata", {})
        key = (manifest.get("kind", ""), metadata.get("namespace", ""), metadata.get("name", ""))
        if key in seen:
            raise KustomizeError(f"duplicate resource {key}")
        seen.add(key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="render a kustomization (repo subset)")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--split", type=Path, help="write one file per resource into this folder")
    args = parser.parse_args(argv)
    manifests = render(args.directory)
    if args.split is None:
        yaml.safe_dump_all(manifests, sys.stdout, sort_keys=False)
        return 0
    args.split.mkdir(parents=True, exist_ok=True)
    for index, manifest in enumerate(manifests):
        name = f"{index:02d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        (args.split / name).write_text(yaml.safe_dump(copy.deepcopy(manifest), sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
