"""Starts the four services as plain processes: used by ``make run`` and the end-to-end tests.

Each service is started exactly as its container starts it (``python -m services.<name>``), with
its settings in the environment.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.tokens import SIGNERS, TokenKey, format_public_keys, private_key

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("agreements", "depersonalise", "ingest", "gateway")
DEFAULT_PORTS = {"gateway": 8000, "agreements": 8001, "ingest": 8002, "depersonalise": 8003}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class HubKeys:
    """The hub's keys: each calling service's token key (base64 Ed25519 seeds), ingest's record
    key secret and depersonalise's cell key secret. Each service is given only its own."""

    token_seeds: Mapping[str, str]
    record_key_secret: str
    cell_key_secret: str

    @classmethod
    def generate(cls) -> HubKeys:
        seeds = {name: base64.b64encode(secrets.token_bytes(32)).decode() for name in SIGNERS}
        return cls(seeds, secrets.token_urlsafe(32), secrets.token_urlsafe(32))

    def token_key(self, name: str) -> TokenKey:
        return TokenKey(name, private_key(self.token_seeds[name]))

    @property
    def public_keys(self) -> str:
        """``CSP_INTERNAL_PUBLIC_KEYS``: every signer's public key (no secret in it)."""
        return format_public_keys({name: self.token_key(name).public for name in self.token_seeds})

    def environment(self, service: str) -> dict[str, str]:
        env = {"CSP_INTERNAL_PUBLIC_KEYS": self.public_keys}
        if service in self.token_seeds:
            env[f"CSP_{service.upper()}_TOKEN_KEY"] = self.token_seeds[service]
        if service == "ingest":
            env["CSP_INGEST_RECORD_KEY_SECRET"] = self.record_key_secret
        if service == "depersonalise":
            env["CSP_DEPERSONALISE_CELL_KEY_SECRET"] = self.cell_key_secret
        return env


def service_environment(
    ports: Mapping[str, int],
    database_urls: Mapping[str, str],
    keys: HubKeys,
    extra: Mapping[str, str] | None = None,
) -> dict[str, dict[str, str]]:
    """The environment of each service: its own port, database and keys, its peers' addresses."""

    def url(name: str) -> str:
        return f"http://127.0.0.1:{ports[name]}"

    base = {key: value for key, value in os.environ.items() if not key.startswith("CSP_")}
    base.update({"PYTHONUNBUFFERED": "1"})
    base["PYTHONPATH"] = str(REPO)
    environments = {}
    for name in SERVICES:
        prefix = f"CSP_{name.upper()}_"
        env = dict(base)
        env.update(keys.environment(name))
        env[prefix + "PORT"] = str(ports[name])
        env[prefix + "HOST"] = "127.0.0.1"
        env[prefix + "DATABASE_URL"] = database_urls[name]
        environments[name] = env
    environments["gateway"].update(
        CSP_GATEWAY_AGREEMENTS_URL=url("agreements"),
        CSP_GATEWAY_INGEST_URL=url("ingest"),
        CSP_GATEWAY_DEPERSONALISE_URL=url("depersonalise"),
    )
    environments["ingest"].update(
        CSP_INGEST_DEPERSONALISE_URL=url("depersonalise"),
        CSP_INGEST_AGREEMENTS_URL=url("agreements"),
    )
    environments["depersonalise"].update(CSP_DEPERSONALISE_INGEST_URL=url("ingest"))
    for env in environments.values():
        env.update(extra or {})
    return environments


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    sink: Callable[[str], None] = print
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _pump_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self.sink(f"{self.name:>13} | {line}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                tail = "\n".join(self.lines[-30:])
                raise RuntimeError(f"{self.name} exited while starting:\n{tail}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer /healthz within {timeout} s")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(self.url + "/readyz", timeout=2).status_code
                if status == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} was not ready within {timeout} s (last status {status})")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.process is None:
            return
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._pump_thread is not None:
            self._pump_thread.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


class Hub:
    """The four services as processes, started in dependency order and stopped in reverse."""

    def __init__(
        self,
        ports: Mapping[str, int],
        database_urls: Mapping[str, str],
        keys: HubKeys,
        extra_env: Mapping[str, str] | None = None,
        sink: Callable[[str], None] = print,
    ) -> None:
        self.keys = keys
        environments = service_environment(ports, database_urls, keys, extra_env)
        self.services = {
            name: ServiceProcess(name, ports[name], environments[name], sink) for name in SERVICES
        }

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    @property
    def gateway_url(self) -> str:
        return self.services["gateway"].url

    def start(self, timeout: float = 90) -> None:
        try:
            for service in self.services.values():
                service.start()
            for service in self.services.values():
                service.wait_healthy(timeout)
            for service in self.services.values():
                service.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
