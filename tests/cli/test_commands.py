from __future__ import annotations

import json
from pathlib import Path

import pytest
from csp_cli.main import app
from typer.testing import CliRunner

from tests.cli.fake_gateway import KEY, FakeGateway

runner = CliRunner()


def test_aggregates_to_a_file_with_every_parameter(fake: FakeGateway, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    result = runner.invoke(
        app,
        [
            "aggregates",
            "police-crime",
            "--geography",
            "lsoa21",
            "--period",
            "month",
            "--from",
            "2024-01-01",
            "--to",
            "2024-12-31",
            "--by",
            "category",
            "--format",
            "geojson",
            "-o",
            str(target),
        ],
    )
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert text.startswith("area,period,count\nE01000001,2024-01,12\n")
    sent = json.loads(text.splitlines()[-1])
    assert sent == {
        "geography": "lsoa21",
        "period": "month",
        "from": "2024-01-01",
        "to": "2024-12-31",
        "by": "category",
        "format": "geojson",
    }
    assert not (tmp_path / "out.csv.part").exists()


def test_a_refusal_names_the_rule_and_writes_no_file(fake: FakeGateway, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    result = runner.invoke(
        app, ["aggregates", "police-crime", "--geography", "nope", "-o", str(target)]
    )
    assert result.exit_code == 1
    assert "HTTP 403" in result.stderr and "no-active-agreement" in result.stderr
    assert not target.exists()


def test_key_comes_from_env_or_private_config_file_never_a_flag(
    fake: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["--key", KEY, "datasets"]).exit_code != 0
    monkeypatch.delenv("CSP_API_KEY")
    missing = runner.invoke(app, ["datasets"])
    assert missing.exit_code == 1 and "CSP_API_KEY" in missing.stderr

    config = tmp_path / "config" / "csp" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'api_key = "{KEY}"\nurl = "http://gateway.test:8000"\n')
    config.chmod(0o644)
    unsafe = runner.invoke(app, ["datasets"])
    assert unsafe.exit_code == 1 and "chmod 600" in unsafe.stderr
    config.chmod(0o600)
    listed = runner.invoke(app, ["datasets"])
    assert listed.exit_code == 0, listed.output
    assert "police-crime" in listed.output
    assert str(fake.requests[-1].url).startswith("http://gateway.test:8000/v1/datasets")
    # --url and CSP_URL win over the file.
    monkeypatch.setenv("CSP_URL", "http://other.test")
    runner.invoke(app, ["datasets"])
    assert fake.requests[-1].url.host == "other.test"
    runner.invoke(app, ["--url", "http://third.test", "datasets"])
    assert fake.requests[-1].url.host == "third.test"
    shown = runner.invoke(app, ["config"])
    assert KEY not in shown.output


def test_wrong_key_is_reported(fake: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSP_API_KEY", "csp_wrong")
    result = runner.invoke(app, ["quality", "police-crime"])
    assert result.exit_code == 1 and "HTTP 401" in result.stderr


def test_batch_and_quality(fake: FakeGateway) -> None:
    batch = runner.invoke(app, ["batch", "b-42"])
    assert batch.exit_code == 0 and "b-42" in batch.output and "done" in batch.output
    quality = runner.invoke(app, ["quality", "police-crime"])
    assert quality.exit_code == 0 and '"late": 1' in quality.output


def test_agencies_keys_and_agreements(fake: FakeGateway, tmp_path: Path) -> None:
    added = runner.invoke(
        app, ["agencies", "add", "gmp", "--name", "Greater Manchester Police", "--kind", "police"]
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["agencies", "list"])
    assert listed.exit_code == 0
    for code in ("agency-0", "agency-1", "agency-2", "gmp"):  # across three cursor pages
        assert code in listed.output
    issued = runner.invoke(app, ["keys", "issue", "gmp"])
    assert "key: csp_new_secret" in issued.output and "not shown again" in issued.stderr
    assert json.loads(fake.requests[-1].read()) == {}
    scoped = runner.invoke(
        app,
        [*("keys", "issue", "gmp", "--holder", "J. Analyst", "--scope", "read", "--scope", "push"),
         *("--expires", "2027-03-31")],
    )  # fmt: skip
    assert scoped.exit_code == 0, scoped.output
    assert json.loads(fake.requests[-1].read()) == {
        "holder": "J. Analyst",
        "scopes": ["read", "push"],
        "expires": "2027-03-31",
    }
    revoked = runner.invoke(app, ["keys", "revoke", "gmp", "k1"])
    assert revoked.exit_code == 0
    assert fake.requests[-1].method == "DELETE"
    assert fake.requests[-1].url.path == "/v1/agencies/gmp/keys/k1"

    body = {"title": "Police crime", "providers": ["gmp"], "recipients": ["mcc"]}
    (tmp_path / "agreement.json").write_text(json.dumps(body))
    created = runner.invoke(app, ["agreements", "create", str(tmp_path / "agreement.json")])
    assert created.exit_code == 0 and "agr-1" in created.output
    for action, status in (("sign", "active"), ("suspend", "suspended"), ("revoke", "revoked")):
        answer = runner.invoke(app, ["agreements", action, "agr-1"])
        assert answer.exit_code == 0 and status in answer.output
        assert fake.requests[-1].url.path == f"/v1/agreements/agr-1/{action}"
    assert "active" in runner.invoke(app, ["agreements", "list"]).output


def test_geography_upload_streams_the_file(
    fake: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("csp_cli.main.POLL_SECONDS", 0.01)
    layer = tmp_path / "lsoa.geojson"
    layer.write_bytes(b'{"type": "FeatureCollection", "features": []}' + b" " * 3_000_000)
    result = runner.invoke(
        app,
        [
            "geographies",
            "load",
            "lsoa21",
            str(layer),
            "--code-field",
            "LSOA21CD",
            "--name-field",
            "LSOA21NM",
        ],
    )
    assert result.exit_code == 0, result.output
    # It waited, polling the answer's Location, until the layer was served.
    assert fake.layer_polls == 3
    assert json.loads(result.stdout[result.stdout.index("{") :])["status"] == "active"
    path, query, body, content_type = fake.uploads[-1]
    assert path == "/v1/geographies/lsoa21"
    assert query == {"code_field": ["LSOA21CD"], "name_field": ["LSOA21NM"]}
    assert body == layer.read_bytes() and content_type == "application/geo+json"
    wrong = tmp_path / "lsoa.txt"
    wrong.write_text("x")
    assert (
        runner.invoke(
            app, ["geographies", "load", "x", str(wrong), "--code-field", "a", "--name-field", "b"]
        ).exit_code
        == 1
    )


def test_postcodes_load_in_chunks_each_with_the_header(fake: FakeGateway, tmp_path: Path) -> None:
    source = tmp_path / "ONSPD.csv"
    lines = ["pcds,oseast1m,osnrth1m,doterm"] + [f"M1 {i}AA,38{i:04d},39{i:04d}," for i in range(9)]
    source.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["postcodes", "load", str(source), "--chunk-rows", "4"])
    assert result.exit_code == 0, result.output
    assert len(fake.postcode_bodies) == 3
    assert all(b.startswith("pcds,oseast1m,osnrth1m,doterm\n") for b in fake.postcode_bodies)
    assert "9 postcodes loaded" in result.output


def test_audit_verify_and_export(fake: FakeGateway, tmp_path: Path) -> None:
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "intact" in ok.output and "7 entries" in ok.output
    fake.audit_ok = False
    broken = runner.invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1 and "entry 4" in broken.stderr
    target = tmp_path / "audit.jsonl"
    exported = runner.invoke(app, ["audit", "export", "-o", str(target)])
    assert exported.exit_code == 0
    assert [json.loads(line)["seq"] for line in target.read_text().splitlines()] == [1, 2]


def test_snap_layer_from_postcodes_uploads_the_people_table_then_the_postcodes(
    fake: FakeGateway, tmp_path: Path
) -> None:
    postcodes = tmp_path / "m.csv"
    postcodes.write_text('"M1 1AA",10,384000,398000,E92000001\n')
    people = tmp_path / "people.csv"
    people.write_text("geography code,households\nE01000001,40\n")
    result = runner.invoke(
        app,
        [
            "snap-layers", "from-postcodes", "manchester", str(postcodes),
            "--layer", "lsoa21", "--people", str(people),
            "--code-column", "geography code", "--count-column", "households",
            "--persons-per-household", "1", "--k", "10",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (first, query, body, _), (second, params, sent, kind) = fake.uploads[-2:]
    assert first == "/v1/populations/lsoa21" and body == people.read_bytes()
    assert query == {"code_column": ["geography code"], "population_column": ["households"]}
    assert second == "/v1/snap-layers/manchester/postcodes" and sent == postcodes.read_bytes()
    assert params == {"layer": ["lsoa21"], "k": ["10"], "persons_per_household": ["1.0"]}
    assert kind == "text/csv" and '"points": 1' in result.output


def test_reconcile_runs_shows_pairs_and_fails_on_disagreement(fake: FakeGateway) -> None:
    ran = runner.invoke(app, ["reconcile"])
    assert ran.exit_code == 1 and "police-crime" in ran.stdout and "lag_records" in ran.stdout
    assert fake.requests[-1].method == "POST" and fake.requests[-1].url.path == "/v1/reconcile"
    last = runner.invoke(app, ["reconcile", "--last"])
    assert last.exit_code == 0, last.output
    assert fake.requests[-1].method == "GET"
