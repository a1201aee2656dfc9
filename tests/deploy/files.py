"""Readers of the deployment files, for the tests: Dockerfiles, compose, rendered kustomize."""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from tests.conftest import REPO

SERVICES = ("gateway", "agreements", "ingest", "depersonalise")
sys.path.insert(0, str(REPO / "deploy"))
from render_manifests import render  # noqa: E402


@dataclass(frozen=True)
class Dockerfile:
    stages: list[str]  # the FROM line of each stage
    env: dict[str, str]  # ENV of the final stage
    cmd: list[str]
    user: str | None
    healthcheck: str | None
    copies: list[str]  # COPY instructions of the final stage
    runs: list[str]  # RUN instructions of every stage


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def read_dockerfile(service: str) -> Dockerfile:
    stages: list[str] = []
    env: dict[str, str] = {}
    cmd: list[str] = []
    user = healthcheck = None
    copies: list[str] = []
    runs: list[str] = []
    for name, args in instructions((REPO / "services" / service / "Dockerfile").read_text()):
        if name == "FROM":
            stages.append(args)
            env, copies, user, healthcheck = {}, [], None, None
        elif name == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
        elif name == "CMD":
            cmd = json.loads(args)
        elif name == "USER":
            user = args
        elif name == "HEALTHCHECK":
            healthcheck = args
        elif name == "COPY":
            copies.append(args)
        elif name == "RUN":
            runs.append(args)
    return Dockerfile(stages, env, cmd, user, healthcheck, copies, runs)


_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?([?-])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:?message}`` and ``${VAR:-default}``."""

    def one(match: re.Match[str]) -> str:
        name, kind, argument = match.groups()
        if variables.get(name):
            return variables[name]
        if kind == "-":
            return argument
        raise KeyError(f"{name} is required: {argument}")

    return _VARIABLE.sub(one, value)


def required_variables(text: str) -> set[str]:
    return {m.group(1) for m in _VARIABLE.finditer(text) if m.group(2) == "?"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def compose_override() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.override.yml").read_text())  # type: ignore[no-any-return]


def rendered(overlay: str = "base") -> list[dict[str, Any]]:
    folder = REPO / "deploy" / "k8s" / (overlay if overlay == "base" else f"overlays/{overlay}")
    return render(folder)


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}
