"""Starts each service exactly as its container does: the Dockerfile's CMD, the Dockerfile's ENV
plus the environment docker-compose.yml gives it, a PostgreSQL database of its own.

Only what cannot exist outside a container is translated: /opt/venv/bin becomes this virtualenv's
bin folder, compose host names become 127.0.0.1, fixed ports become free ones, and the compose
database URLs become fresh databases on the local PostgreSQL.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scripts.hub import free_port
from tests.conftest import REPO, TEST_KEYS, create_pg_database, drop_pg_database
from tests.deploy.files import SERVICES, compose, interpolate, read_dockerfile

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRETS = {
    **{
        name: value
        for service in SERVICES
        for name, value in TEST_KEYS.environment(service).items()
    },
    "CSP_ADMIN_KEY": "csp_container-start-test-operators-key",
    "CSP_GATEWAY_AUDIT_SIGNING_KEY": base64.b64encode(bytes(range(32))).decode(),
    "CSP_GATEWAY_OAUTH_SIGNING_KEY": base64.b64encode(bytes(range(32, 64))).decode(),
    "POSTGRES_PASSWORD": "unused",
    **{f"CSP_{name.upper()}_DB_PASSWORD": "unused" for name in SERVICES},
}


@dataclass
class Started:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def container_environment(
    name: str, ports: dict[str, int], databases: dict[str, str]
) -> dict[str, str]:
    dockerfile = read_dockerfile(name)
    venv_bin = str(Path(sys.executable).parent)
    env = {
        key: value.replace("/opt/venv/bin", venv_bin).replace("$PATH", os.environ["PATH"])
        for key, value in dockerfile.env.items()
    }
    for key, raw in compose()["services"][name]["environment"].items():
        value = interpolate(str(raw), SECRETS)
        if value.startswith("postgresql"):
            value = databases[name]
        env[key] = value
    prefix = f"CSP_{name.upper()}_"
    env[prefix + "HOST"] = "127.0.0.1"
    env[prefix + "PORT"] = str(ports[name])
    for key, value in env.items():
        # http://ingest:8002 → the port the ingest process of this test listens on.
        value = re.sub(
            r"//(gateway|agreements|ingest|depersonalise):\d+",
            lambda m: f"//127.0.0.1:{ports[m.group(1)]}",
            value,
        )
        env[key] = value.replace("//redis:6379", "//127.0.0.1:6379")
    return env


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Started]]:
    ports = {name: free_port() for name in SERVICES}
    databases = {name: create_pg_database(f"box_{name}") for name in SERVICES}
    folder = tmp_path_factory.mktemp("container-start")
    started: dict[str, Started] = {}
    try:
        for name in SERVICES:
            dockerfile = read_dockerfile(name)
            log = folder / f"{name}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    dockerfile.cmd,
                    cwd=REPO,  # the image's WORKDIR /app holds the same tree
                    env=container_environment(name, ports, databases),
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            started[name] = Started(name, ports[name], process, log)
        yield started
    finally:
        for service in started.values():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in started.values():
            try:
                service.process.wait(20)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait(5)
        for url in databases.values():
            drop_pg_database(url)


def wait_for(service: Started, path: str, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            pytest.fail(f"{service.name} exited ({service.process.returncode}):\n{service.tail()}")
        try:
            last = httpx.get(f"http://127.0.0.1:{service.port}{path}", timeout=3)
            if last.status_code == 200:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    detail = last.text if last is not None else "no answer"
    pytest.fail(f"{service.name} {path} not 200 within {timeout} s: {detail}\n{service.tail()}")


@pytest.mark.parametrize("name", SERVICES)
def test_service_starts_live_and_ready_as_its_container_would(
    containers: dict[str, Started], name: str
) -> None:
    service = containers[name]
    assert wait_for(service, "/healthz").json()["status"] == "ok"
    # Every peer runs too, so each service must become ready: database migrated, peers answer.
    ready = wait_for(service, "/readyz")
    assert ready.json()["status"] == "ready", ready.text
    metrics = wait_for(service, "/metrics")
    assert "csp_http_requests" in metrics.text


def test_services_stop_cleanly_on_sigterm(containers: dict[str, Started]) -> None:
    for service in containers.values():
        wait_for(service, "/healthz")
    for service in containers.values():
        service.process.send_signal(signal.SIGTERM)
    for service in containers.values():
        # uvicorn finishes its shutdown, then exits by the signal it got, as a container expects.
        assert service.process.wait(30) in (0, -signal.SIGTERM), service.tail()
        assert "Application shutdown complete" in service.tail()
