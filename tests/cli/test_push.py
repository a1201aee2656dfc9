from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from csp_cli import chunks as chunks_module
from csp_cli.main import app
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.cli.fake_gateway import FakeGateway

runner = CliRunner()


def write_csv(path: Path, rows: int, missing_at: set[int] = frozenset()) -> Path:  # type: ignore[assignment]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source_ref", "occurred_at", "category", "location_description"])
        for number in range(1, rows + 1):
            when = "" if number in missing_at else f"2024-01-{1 + number % 28:02d}"
            # A quoted newline and comma: the splitter must cut between records, not lines.
            writer.writerow([f"ref-{number}", when, "Burglary", "behind the shops,\nnear the park"])
    return path


def test_push_sends_chunks_with_keys_and_reports_file_rows(
    fake: FakeGateway, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "crimes.csv", 25, missing_at={17})
    result = runner.invoke(app, ["push", "police-crime", str(data), "--chunk-rows", "10"])
    assert result.exit_code == 0, result.output
    assert len(fake.push_calls) == 3
    keys = [r.headers["idempotency-key"] for r in fake.push_calls]
    assert len(set(keys)) == 3
    assert all(r.headers["content-type"] == "text/csv" for r in fake.push_calls)
    assert len(fake.records) == 24
    assert "accepted 24" in result.output and "rejected 1" in result.output
    # Row 7 of the second chunk is row 17 of the file.
    assert "│ 17  │ occurred_at" in result.output.replace("┃", "│")


def test_interrupted_push_resumes_without_duplicates(fake: FakeGateway, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "crimes.csv", 50)
    fake.fail_from_push = 2
    first = runner.invoke(app, ["push", "police-crime", str(data), "--chunk-rows", "10"])
    assert first.exit_code == 1
    assert "again to resume" in first.stderr
    sent_before = {r.headers["idempotency-key"] for r in fake.push_calls[:2]}
    assert fake.stored_rows == 20

    fake.fail_from_push = None
    calls_before = len(fake.push_calls)
    second = runner.invoke(app, ["push", "police-crime", str(data), "--chunk-rows", "10"])
    assert second.exit_code == 0, second.output
    resent = {r.headers["idempotency-key"] for r in fake.push_calls[calls_before:]}
    assert not resent & sent_before, "completed chunks were sent again"
    assert "2 from an earlier run" in second.output
    assert fake.stored_rows == 50 and len(fake.records) == 50
    assert "accepted 50" in second.output


def test_lost_state_still_stores_nothing_twice(fake: FakeGateway, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "crimes.csv", 30)
    assert (
        runner.invoke(app, ["push", "police-crime", str(data), "--chunk-rows", "10"]).exit_code == 0
    )
    again = runner.invoke(
        app, ["push", "police-crime", str(data), "--chunk-rows", "10", "--no-resume"]
    )
    assert again.exit_code == 0, again.output
    # The gateway replayed its first answers: every row stored exactly once.
    assert fake.stored_rows == 30
    assert "accepted 30" in again.output


def test_transient_failures_are_retried_under_the_same_key(
    fake: FakeGateway, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "crimes.csv", 5)
    fake.transient_503 = 2
    result = runner.invoke(app, ["push", "police-crime", str(data)])
    assert result.exit_code == 0, result.output
    keys = {r.headers.get("idempotency-key") for r in fake.requests}
    assert len(keys) == 1
    assert fake.stored_rows == 5


def test_json_jsonl_and_csv_push_the_same_records(fake: FakeGateway, tmp_path: Path) -> None:
    records = [
        {"source_ref": f"r{i}", "occurred_at": "2024-02-01", "category": "Arson", "easting": 1.5}
        for i in range(7)
    ]
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.json").write_text(json.dumps({"records": records}, indent=2))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name in ("a.json", "b.json", "c.jsonl"):
        fake.records.clear()
        result = runner.invoke(
            app, ["push", "fire-incident", str(tmp_path / name), "--chunk-rows", "3"]
        )
        assert result.exit_code == 0, result.output
        assert sorted(fake.records.values(), key=lambda r: r["source_ref"]) == records
    assert all(r.headers["content-type"] == "application/json" for r in fake.push_calls)


def test_unreadable_file_is_an_error_not_a_crash(fake: FakeGateway, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"source_ref": "a"}, {"source_ref": ')
    result = runner.invoke(app, ["push", "police-crime", str(bad)])
    assert result.exit_code == 1
    assert "not valid" in result.stderr
    unknown = tmp_path / "data.txt"
    unknown.write_text("x")
    assert runner.invoke(app, ["push", "police-crime", str(unknown)]).exit_code == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(records=st.lists(json_values, max_size=12), wrapped=st.booleans(), block=st.integers(1, 9))
def test_streaming_json_reader_matches_json_loads(records: list, wrapped: bool, block: int) -> None:
    text = json.dumps({"records": records} if wrapped else records, indent=1)
    original = chunks_module.READ_BYTES
    chunks_module.READ_BYTES = block
    try:
        assert list(chunks_module.json_records(io.StringIO(text))) == records
    finally:
        chunks_module.READ_BYTES = original
