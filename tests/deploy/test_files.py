"""The Dockerfiles, compose files and Kubernetes manifests agree with each other and with the
services' settings: every service, every required variable, every port, every network edge."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from typing import Any

import pytest
from pydantic import AliasChoices

from shared.tokens import CALLERS
from tests.conftest import REPO
from tests.deploy.files import (
    SERVICES,
    by_kind,
    compose,
    compose_override,
    read_dockerfile,
    rendered,
    required_variables,
)

PORTS = {"gateway": 8000, "agreements": 8001, "ingest": 8002, "depersonalise": 8003}
# Who calls whom (docs/architecture.md); NetworkPolicy must allow exactly these, plus Redis.
CALLS = {
    ("gateway", "agreements"),
    ("gateway", "ingest"),
    ("gateway", "depersonalise"),
    ("ingest", "agreements"),
    ("ingest", "depersonalise"),
    ("depersonalise", "ingest"),
}


def settings_env_names(service: str) -> tuple[set[str], set[str]]:
    """(every variable the service's Settings reads, the ones without a default)."""
    settings = importlib.import_module(f"services.{service}.settings").Settings
    prefix = settings.model_config["env_prefix"]
    names: set[str] = set()
    required: set[str] = set()
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            choices = {str(c).upper() for c in alias.choices if str(c).isupper()}
        else:
            choices = {(prefix + field_name).upper()}
        names |= choices
        if field.is_required():
            required |= choices
    return names, required


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_builds_a_small_non_root_image_with_the_test_entrypoint(service: str) -> None:
    dockerfile = read_dockerfile(service)
    assert len(dockerfile.stages) >= 2, "multi-stage"
    assert dockerfile.stages[-1].startswith("python:3.11-slim")
    assert dockerfile.cmd == ["python", "-m", f"services.{service}"]
    assert dockerfile.user and dockerfile.user.split(":")[0] not in {"0", "root"}
    assert dockerfile.healthcheck and "/healthz" in dockerfile.healthcheck
    assert dockerfile.env[f"CSP_{service.upper()}_HOST"] == "0.0.0.0"
    assert dockerfile.env[f"CSP_{service.upper()}_PORT"] == str(PORTS[service])
    install = [run for run in dockerfile.runs if "pip install" in run]
    assert install and all("--require-hashes -r /tmp/requirements.txt" in run for run in install), (
        "dependencies only from the pinned, hashed file"
    )
    sources = {copy.split()[0] for copy in dockerfile.copies if "--from" not in copy}
    assert sources == {"shared/", "services/__init__.py", f"services/{service}/", "catalogue/"}


def test_compose_runs_every_service_and_publishes_only_the_gateway() -> None:
    services = compose()["services"]
    assert set(services) == {*SERVICES, "postgres", "redis"}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"].startswith("redis:7")
    for name in SERVICES:
        service = services[name]
        assert service["build"] == {"context": ".", "dockerfile": f"services/{name}/Dockerfile"}
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        for dependency in service["depends_on"].values():
            assert dependency == {"condition": "service_healthy"}
        assert ("ports" in service) == (name == "gateway")
    for name, service in services.items():
        if name in SERVICES:
            continue
        assert "ports" not in service
        assert "healthcheck" in service, f"{name} must declare its health for depends_on"
    dev_ports = [p for s in compose_override()["services"].values() for p in s["ports"]]
    assert dev_ports and all(p.startswith("127.0.0.1:") for p in dev_ports)


@pytest.mark.parametrize("service", SERVICES)
def test_compose_gives_each_service_every_required_setting_and_no_unknown_one(
    service: str,
) -> None:
    environment = compose()["services"][service]["environment"]
    known, required = settings_env_names(service)
    unknown = set(environment) - known
    assert not unknown, f"{service} reads no such settings: {unknown}"
    assert required <= set(environment), f"{service} needs {required - set(environment)}"
    assert environment[f"CSP_{service.upper()}_DATABASE_URL"].startswith("postgresql+psycopg://")
    text = (REPO / "docker-compose.yml").read_text()
    # The audit's signing key comes from outside the database: compose requires it.
    required = (
        "CSP_INTERNAL_PUBLIC_KEYS",
        "CSP_GATEWAY_TOKEN_KEY",
        "CSP_INGEST_TOKEN_KEY",
        "CSP_DEPERSONALISE_TOKEN_KEY",
        "CSP_INGEST_RECORD_KEY_SECRET",
        "CSP_DEPERSONALISE_CELL_KEY_SECRET",
        "CSP_ADMIN_KEY",
        "POSTGRES_PASSWORD",
        "CSP_GATEWAY_AUDIT_SIGNING_KEY",
        "CSP_GATEWAY_OAUTH_SIGNING_KEY",
    )
    for secret in required:
        assert secret in required_variables(text), f"{secret} must be ${{{secret}:?...}}"


def compose_edges() -> set[tuple[str, str]]:
    edges = set()
    for name in SERVICES:
        for value in compose()["services"][name]["environment"].values():
            match = re.match(r"http://(\w+):(\d+)", str(value))
            if match:
                assert int(match.group(2)) == PORTS[match.group(1)]
                edges.add((name, match.group(1)))
    return edges


def test_compose_wires_the_documented_calls() -> None:
    assert compose_edges() == CALLS
    # ... and exactly those callers' tokens are what each backend accepts.
    assert {
        (caller, backend) for backend, callers in CALLERS.items() for caller in callers
    } == CALLS


def k8s_environment(deployment: dict[str, Any], manifests: list[dict[str, Any]]) -> set[str]:
    """Variable names a container gets: ConfigMap keys plus the Secrets' keys as generated."""
    sys.path.insert(0, str(REPO / "deploy"))
    from generate_secrets import k8s_env_files

    secrets = {
        f"csp-{name.removesuffix('.env')}": set(values)
        for name, values in k8s_env_files("db", 5432, "csp_").items()
    }
    config_maps = by_kind(manifests, "ConfigMap")
    names: set[str] = set()
    for source in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]:
        if "configMapRef" in source:
            names |= set(config_maps[source["configMapRef"]["name"]]["data"])
        else:
            names |= secrets[source["secretRef"]["name"]]
    return names


@pytest.mark.parametrize("overlay", ["base", "production", "dev"])
def test_kubernetes_deployments_match_compose_and_are_locked_down(overlay: str) -> None:
    manifests = rendered(overlay)
    deployments = by_kind(manifests, "Deployment")
    services = by_kind(manifests, "Service")
    for name in SERVICES:
        deployment = deployments[name]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"requests", "limits"} <= set(container["resources"])
        assert container["ports"][0]["containerPort"] == PORTS[name]
        assert services[name]["spec"]["ports"][0]["port"] == PORTS[name]
        assert "env" not in container, "settings come from ConfigMaps and Secrets only"
        compose_names = set(compose()["services"][name]["environment"])
        assert k8s_environment(deployment, manifests) == compose_names
        assert container["image"].split(":")[0].endswith(name)
    job = by_kind(manifests, "Job")["csp-migrate"]
    commands = {c["name"]: c["command"] for c in job["spec"]["template"]["spec"]["containers"]}
    assert commands == {n: ["python", "-m", f"services.{n}.migrations"] for n in SERVICES}
    for name in SERVICES:
        assert (REPO / "services" / name / "migrations" / "__main__.py").exists()
    scaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in by_kind(manifests, "HorizontalPodAutoscaler").values()
    }
    assert scaled == {"gateway", "ingest"}


def allowed_edges(manifests: list[dict[str, Any]]) -> set[tuple[str, str]]:
    edges = set()
    policies = by_kind(manifests, "NetworkPolicy").values()
    for policy in policies:
        target = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get(
                "from", [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "*"}}}]
            ):
                source = (
                    peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                )
                if source:
                    edges.add((source, target))
    return edges


def test_network_policy_lets_only_the_documented_calls_through() -> None:
    manifests = rendered("production")
    deny = by_kind(manifests, "NetworkPolicy")["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    edges = allowed_edges(manifests)
    assert edges == CALLS | {("*", "gateway")} | {(name, "redis") for name in SERVICES}
    # Every URL a ConfigMap gives a service is an edge the policy allows.
    for name in SERVICES:
        data = by_kind(manifests, "ConfigMap")[f"csp-{name}"]["data"]
        for value in data.values():
            match = re.match(r"(?:http|redis)://(\w+):", str(value))
            if match:
                assert (name, match.group(1)) in edges


def test_no_secret_is_inlined_in_the_manifests() -> None:
    for overlay in ("production", "dev"):
        manifests = rendered(overlay)
        assert not by_kind(manifests, "Secret")
        for config_map in by_kind(manifests, "ConfigMap").values():
            for key, value in config_map["data"].items():
                assert "SECRET" not in key and "KEY" not in key and "@" not in value


def test_secrets_folder_is_ignored_by_git() -> None:
    probe = REPO / "deploy" / "k8s" / "secrets" / "internal.env"
    result = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO, check=False)
    assert result.returncode == 0
