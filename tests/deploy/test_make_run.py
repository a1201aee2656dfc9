"""The newcomer path: ``make run`` stops on SIGINT and SIGTERM however started, keeps ``var/``
private, and ``make clean`` starts afresh so the next run seeds the demo again."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from scripts.hub import DEFAULT_PORTS, free_port
from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BANNER = "CSP hub is up at"


def _ignore_sigint() -> None:
    # What a shell does to `make run &` in a script: the background job inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Run:
    def __init__(self, var: Path, ports: dict[str, int]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CSP_")}
        env.update({f"CSP_{name.upper()}_PORT": str(port) for name, port in ports.items()})
        env.update(
            CSP_VAR_DIR=str(var), CSP_ADMIN_KEY="csp_ops_newcomer-test-key", PYTHONPATH=str(REPO)
        )
        self.ports = ports
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scripts.run"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_ignore_sigint,
        )
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 150) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        tail = "\n".join(self.lines[-40:])
        raise AssertionError(f"{text!r} never appeared:\n{tail}")

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(40)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
            self.pump.join(5)
            assert self.process.stdout is not None
            self.process.stdout.close()

    def services_gone(self) -> bool:
        for port in self.ports.values():
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                return False
            except httpx.HTTPError:
                continue
        return True


def test_sigint_sigterm_private_var_and_clean_reseeds(tmp_path: Path) -> None:
    var = tmp_path / "var"
    ports = {name: free_port() for name in DEFAULT_PORTS}
    first = Run(var, ports)
    try:
        first.wait_for(BANNER)
        # Every service answered ready before the banner, and the demo is served at once.
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        keys = dict(
            line.split("export ", 1)[1].split("=", 1)
            for line in first.lines
            if "export " in line and "=" in line
        )
        answer = httpx.get(
            f"{gateway}/v1/datasets/police-crime/aggregates",
            params={
                "geography": "demo-grid",
                "period": "quarter",
                "from": "2024-01-01",
                "to": "2024-06-30",
            },
            headers={"Authorization": f"Bearer {keys['COUNCIL_KEY']}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        disclosure = answer.json()["disclosure"]
        # The demo's small monthly counts are hidden, with the quarters and the total holding them.
        assert disclosure["suppressed"] > 0 and disclosure["records"] is None
        assert disclosure["protection"] == "release-lattice"
        for path in [var, *var.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), (path.name, oct(mode))
        assert {
            "gateway-token-key",
            "record-key-secret",
            "gateway.db",
            "ingest.db",
            "demo-seeded",
        } <= {p.name for p in var.iterdir()}
    finally:
        code = first.stop(signal.SIGINT)
    assert code == 0, "\n".join(first.lines[-30:])
    assert first.services_gone()

    second = Run(var, ports)
    try:
        second.wait_for("demo seeded earlier")
    finally:
        assert second.stop(signal.SIGTERM) == 0
    assert second.services_gone()

    cleaned = subprocess.run(
        ["make", "clean", f"CSP_VAR_DIR={var}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cleaned.returncode == 0, cleaned.stderr
    assert not var.exists()
    third = Run(var, ports)
    try:
        third.wait_for(BANNER)
        assert any("export POLICE_KEY=" in line for line in third.lines)
    finally:
        assert third.stop(signal.SIGTERM) == 0
