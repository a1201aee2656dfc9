"""``csp report``: the quarter's tables in the terminal, or the report as a file in a format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from csp_cli import main as cli_main
from csp_cli.main import app
from typer.testing import CliRunner

from tests.cli.fake_gateway import KEY, problem

runner = CliRunner()
BODY = {
    "quarter": "2024-Q1",
    "rows": [
        {
            "provider": "demo-police",
            "dataset": "police-crime",
            "records": 185,
            "received_last": "2024-05-10T09:30:00Z",
            "due": "2024-06-30",
            "on_time": True,
            "completeness": {"required": 1.0, "optional": 0.2222},
            "geocoded": 1.0,
            "rejected": 3,
        }
    ],
    "agreements": [
        {"id": "isa-9", "title": "Demo", "status": "active", "review_by": "2030-06-30",
         "review_state": "current"}
    ],
    "maturity": [
        {"provider": "demo-police", "recipient": "demo-council", "level": 2, "label": "flowing"}
    ],
}  # fmt: skip


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.params.get("quarter") == "2024-Q9":
            return problem(422, "The request is not valid: quarter.")
        if request.url.params.get("format") == "csv":
            return httpx.Response(200, text="quarter,provider\n2024-Q1,demo-police\n")
        return httpx.Response(200, json=BODY)

    monkeypatch.setattr(
        cli_main,
        "gateway_options",
        {"transport": httpx.MockTransport(handle), "sleep": lambda _seconds: None},
    )
    monkeypatch.setenv("CSP_API_KEY", KEY)
    monkeypatch.delenv("CSP_URL", raising=False)
    monkeypatch.delenv("CSP_CONFIG", raising=False)
    yield seen


def test_report_prints_the_quarter(asked: list[httpx.Request]) -> None:
    result = runner.invoke(app, ["report", "2024-Q1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "demo-police" in result.output and "185" in result.output
    assert "isa-9" in result.output and "demo-council" in result.output
    assert asked[0].url.path == "/v1/reports/partnership"
    assert asked[0].url.params["quarter"] == "2024-Q1"


def test_report_to_a_csv_file(asked: list[httpx.Request], tmp_path: Path) -> None:
    target = tmp_path / "q1.csv"
    result = runner.invoke(app, ["report", "2024-Q1", "--format", "csv", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == "quarter,provider\n2024-Q1,demo-police\n"
    assert asked[0].url.params["format"] == "csv"


def test_a_bad_quarter_fails_with_the_detail(asked: list[httpx.Request]) -> None:
    result = runner.invoke(app, ["report", "2024-Q9"])
    assert result.exit_code != 0
    assert "quarter" in result.output
