from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from csp_cli import main as cli_main

from tests.cli.fake_gateway import KEY, FakeGateway


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeGateway]:
    """A fake gateway behind the CLI, the key in the environment, config and state under tmp."""
    gateway = FakeGateway()
    monkeypatch.setattr(
        cli_main,
        "gateway_options",
        {"transport": gateway.transport(), "sleep": lambda _seconds: None},
    )
    monkeypatch.setenv("CSP_API_KEY", KEY)
    monkeypatch.delenv("CSP_URL", raising=False)
    monkeypatch.delenv("CSP_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield gateway
