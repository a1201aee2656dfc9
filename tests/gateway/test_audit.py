"""The audit trail: every request, fail-closed, hash-chained, signed, tamper-evident."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from services.gateway import (
    audit,
    audit_chain,
    audit_entries,
    audit_queries,
    audit_sign,
    chain,
    retention_audit,
)
from services.gateway.models import Base
from shared.db import make_engine, prepare_schema
from tests.gateway.conftest import Hub, MakeHub

AGGREGATES = "/v1/datasets/police-crime/aggregates?geography=lsoa21"
REPO = Path(__file__).resolve().parents[2]


def sql(hub: Hub, statement: str, **params: object) -> list[dict[str, object]]:
    engine = create_engine(hub.settings.database_url)
    with engine.begin() as connection:
        result = connection.execute(text(statement), params)
        rows = [dict(r._mapping) for r in result] if result.returns_rows else []
    engine.dispose()
    return rows


async def entries(hub: Hub, **query: str) -> list[dict[str, object]]:
    answer = await hub.client.get(
        "/v1/audit", params={"limit": "1000", **query}, headers=hub.admin()
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["entries"])


async def test_allowed_denied_and_unauthenticated_requests_are_all_recorded(hub: Hub) -> None:
    council = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "aggregate")
    await hub.client.get(AGGREGATES, headers={**council, "X-Request-ID": "r-allowed"})
    await hub.client.get(
        "/v1/datasets/police-crime/records?level=personal",
        headers={**council, "X-Request-ID": "r-denied", "CSP-Purpose": "licensing"},
    )
    await hub.client.get("/v1/me", headers={"X-Request-ID": "r-nokey"})
    by_id = {e["request_id"]: e for e in await entries(hub)}
    allowed = by_id["r-allowed"]
    assert allowed["agency"] == "manchester-cc" and allowed["key_id"]
    assert allowed["route"] == "/v1/datasets/{dataset}/aggregates"
    assert (allowed["dataset"], allowed["action"], allowed["level"]) == (
        "police-crime",
        "read",
        "aggregate",
    )
    assert allowed["purpose"] == "strategic-assessment"
    assert (allowed["agreement"], allowed["version"], allowed["rule"]) == (
        "agr-1",
        3,
        "agreement-allows",
    )
    assert allowed["providers"] == ["gmp"]
    assert (allowed["status"], allowed["outcome"], allowed["records"]) == (200, "allowed", 812)
    denied = by_id["r-denied"]
    assert (denied["status"], denied["outcome"], denied["level"]) == (403, "denied", "personal")
    assert denied["rule"] == "no-active-agreement" and denied["purpose"] == "licensing"
    nokey = by_id["r-nokey"]
    assert (nokey["status"], nokey["outcome"], nokey["agency"]) == (401, "denied", None)


async def test_a_push_is_logged_before_it_is_forwarded_and_contents_never(hub: Hub) -> None:
    provider = await hub.issue("gmp")
    hub.allow("gmp", "push", "police-crime", None)
    secret = "Jane Doe 12 Acacia Avenue"
    answer = await hub.client.post(
        "/v1/datasets/police-crime/records?note=Acacia",
        json={"records": [{"source_ref": secret}]},
        headers={**provider, "X-Request-ID": "r-push"},
    )
    assert answer.status_code == 202
    phases = [(e["phase"], e["outcome"]) for e in await entries(hub) if e["request_id"] == "r-push"]
    assert phases == [("intent", "pending"), ("complete", "allowed")]
    dump = json.dumps(sql(hub, "SELECT * FROM audit_entry"))
    assert "Acacia" not in dump and "Jane" not in dump


async def test_the_request_is_refused_when_the_audit_cannot_be_written(hub: Hub) -> None:
    provider = await hub.issue("gmp")
    hub.allow("gmp", "push", "police-crime", None)
    hub.allow("gmp", "read", "police-crime", "aggregate")
    sql(hub, "DROP TABLE audit_entry")
    push = await hub.client.post(
        "/v1/datasets/police-crime/records", json={"records": []}, headers=provider
    )
    assert push.status_code == 503
    assert push.json()["type"].endswith("audit-unavailable")
    assert hub.ingest.state.seen == []  # never forwarded unlogged
    read = await hub.client.get(AGGREGATES, headers=provider)
    assert read.status_code == 503
    assert "cells" not in read.text
    assert (await hub.client.get("/v1/me")).status_code == 503  # even a refusal is not unlogged


async def test_the_audit_carries_on_once_its_store_is_back(hub: Hub) -> None:
    for _ in range(3):
        assert (await hub.client.get("/v1/me", headers=hub.admin())).status_code == 200
    sql(hub, "ALTER TABLE audit_entry RENAME TO audit_entry_away")
    assert (await hub.client.get("/v1/me", headers=hub.admin())).status_code == 503
    sql(hub, "ALTER TABLE audit_entry_away RENAME TO audit_entry")
    for _ in range(3):
        assert (await hub.client.get("/v1/me", headers=hub.admin())).status_code == 200
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is True and check["entries"] == 6  # the refused request left no entry


async def test_a_stale_audit_connection_is_replaced_without_refusing_anyone(hub: Hub) -> None:
    assert (await hub.client.get("/v1/me", headers=hub.admin())).status_code == 200
    writer = hub.app.state.gateway.audit.writer
    writer._connection.dbapi_connection.close()  # as if the database had dropped it
    assert (await hub.client.get("/v1/me", headers=hub.admin())).status_code == 200
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is True and check["entries"] == 2


async def test_replicas_sharing_a_database_extend_one_chain(make_hub: MakeHub) -> None:
    first = await make_hub()
    second = await make_hub(admin_key=first.admin_key)
    replicas = [first, second] * 30
    answers = await asyncio.gather(*(r.client.get("/v1/me", headers=r.admin()) for r in replicas))
    assert [a.status_code for a in answers] == [200] * len(replicas)
    for _ in range(3):  # each writer now remembers a head the other has moved on from
        for replica in (first, second):
            assert (await replica.client.get("/v1/me", headers=replica.admin())).status_code == 200
    check = (await second.client.get("/v1/audit/verify", headers=second.admin())).json()
    assert check["ok"] is True and check["entries"] == len(replicas) + 6
    seqs = [row["seq"] for row in sql(first, "SELECT seq FROM audit_entry ORDER BY seq")]
    assert seqs == list(range(1, len(replicas) + 8))  # and the verification itself


def purge(purge_id: int, provider: str, deleted: int) -> dict[str, object]:
    return {
        "id": purge_id,
        "ran_at": "2026-11-26T03:00:00Z",
        "provider": provider,
        "dataset": "police-crime",
        "retention_days": 30,
        "cutoff": "2026-10-27T03:00:00Z",
        "deleted": deleted,
        "batch_id": None,
    }


async def take_in(hub: Hub, page: int = 500) -> int:
    gateway = hub.app.state.gateway
    return await retention_audit.take_in_purges(
        gateway.audit, gateway.upstreams["ingest"], gateway.service_token(), hub.app.state.engine,
        page,
    )  # fmt: skip


async def test_retention_purges_are_recorded_once_and_shown_to_the_provider(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub(retention_audit_seconds=0)
    hub.ingest.state.purges = [purge(1, "gmp", 3), purge(2, "gmp", 0), purge(3, "other", 5)]
    assert await take_in(hub, page=2) == 2  # a purge that erased nothing is not an entry
    assert await take_in(hub) == 0  # already taken in
    hub.ingest.state.purges.append(purge(4, "gmp", 7))
    assert await take_in(hub) == 1
    recorded = [e for e in await entries(hub) if e["phase"] == "retention"]
    assert [(e["request_id"], e["providers"], e["records"]) for e in recorded] == [
        ("purge-1", ["gmp"], 3),
        ("purge-3", ["other"], 5),
        ("purge-4", ["gmp"], 7),
    ]
    assert {(e["action"], e["method"], e["dataset"]) for e in recorded} == {
        ("erase", "JOB", "police-crime")
    }
    provider = await hub.issue("gmp")
    seen = (await hub.client.get("/v1/audit", headers=provider)).json()["entries"]
    assert [e["request_id"] for e in seen if e["phase"] == "retention"] == ["purge-1", "purge-4"]
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is True


async def test_two_replicas_record_each_purge_once(make_hub: MakeHub) -> None:
    first = await make_hub(retention_audit_seconds=0)
    second = await make_hub(admin_key=first.admin_key, retention_audit_seconds=0)
    for replica in (first, second):
        replica.ingest.state.purges = [purge(i, "gmp", i) for i in range(1, 7)]
    written = await asyncio.gather(take_in(first, page=2), take_in(second, page=2))
    assert sum(written) == 6
    rows = sql(first, "SELECT request_id FROM audit_entry WHERE phase = 'retention'")
    assert sorted(r["request_id"] for r in rows) == [f"purge-{i}" for i in range(1, 7)]


async def test_chain_verifies_and_a_direct_edit_is_detected(hub: Hub) -> None:
    council = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "aggregate")
    for _ in range(5):
        await hub.client.get(AGGREGATES, headers=council)
    # Full verification re-hashes the whole chain: an operator's job (an agency is refused).
    refused = await hub.client.get("/v1/audit/verify", headers=council)
    assert refused.status_code == 403 and refused.json()["rule"] == "admin-only"
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is True and check["entries"] >= 7
    counted = sql(hub, "SELECT hash FROM audit_entry WHERE seq = :s", s=check["entries"])
    assert check["head"] == counted[0]["hash"]
    sql(hub, "UPDATE audit_entry SET agency = 'someone-else' WHERE seq = 3")
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check == {
        "ok": False,
        "first_bad_entry": 3,
        "reason": "content does not match its digest",
        "entries": None,
        "head": None,
        "checkpoint": None,
    }


async def test_rewriting_an_entry_with_a_fresh_digest_breaks_the_chain(hub: Hub) -> None:
    for _ in range(4):
        await hub.client.get("/v1/me", headers=hub.admin())
    row = sql(hub, "SELECT * FROM audit_entry WHERE seq = 2")[0]
    row["status"] = 200 if row["status"] != 200 else 204
    row["providers"] = None
    forged = chain.digest(row)
    sql(
        hub,
        "UPDATE audit_entry SET status = :s, digest = :d WHERE seq = 2",
        s=row["status"],
        d=forged,
    )
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is False and check["first_bad_entry"] == 2


async def test_deleting_the_latest_entries_is_detected(hub: Hub) -> None:
    for _ in range(3):
        await hub.client.get("/v1/me", headers=hub.admin())
    last = sql(hub, "SELECT max(seq) AS m FROM audit_entry")[0]["m"]
    sql(hub, "DELETE FROM audit_entry WHERE seq = :s", s=last)
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is False


async def test_signed_checkpoints_catch_a_rewritten_chain(make_hub: MakeHub) -> None:
    hub = await make_hub(audit_checkpoint_every=2)
    for _ in range(6):
        await hub.client.get("/v1/me", headers=hub.admin())
    checkpoints = sql(hub, "SELECT * FROM audit_checkpoint ORDER BY seq")
    assert checkpoints
    target = checkpoints[0]
    sql(
        hub,
        "UPDATE audit_checkpoint SET signature = :sig WHERE seq = :s",
        sig="A" * 88,
        s=target["seq"],
    )
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is False and check["first_bad_entry"] == target["seq"]
    assert "signature" in check["reason"]


async def test_a_cursor_beyond_the_seq_column_is_a_problem_naming_it(hub: Hub) -> None:
    answer = await hub.client.get("/v1/audit", params={"after": str(2**63)}, headers=hub.admin())
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in answer.json()["errors"]] == ["after"]
    for after in (2**31, 2**40):
        answer = await hub.client.get("/v1/audit", params={"after": after}, headers=hub.admin())
        assert answer.status_code == 422, answer.text
    answer = await hub.client.get("/v1/audit", params={"after": 2**31 - 1}, headers=hub.admin())
    assert answer.status_code == 200 and answer.json()["entries"] == []


async def test_values_longer_than_their_column_are_cut_to_fit_not_refused(hub: Hub) -> None:
    council = await hub.issue("manchester-cc")
    answer = await hub.client.get(
        "/v1/datasets/police-crime/records",
        params={"level": "l" * 30},
        headers={**council, "CSP-Purpose": "p" * 100, "X-Request-ID": "r-long"},
    )
    assert answer.status_code == 403, answer.text
    answer = await hub.client.request("PROPPATCHING", "/v1/me", headers={"X-Request-ID": "r-verb"})
    assert answer.status_code in (401, 404, 405), answer.text
    by_id = {e["request_id"]: e for e in await entries(hub)}
    assert by_id["r-long"]["level"] == "l" * 20 and by_id["r-long"]["purpose"] == "p" * 100
    assert by_id["r-verb"]["method"] == "PROPPATCHI"
    council_nul = {**council, "X-Request-ID": "r-nul"}
    await hub.client.get("/v1/datasets/police-crime/records?level=a%00b", headers=council_nul)
    assert {e["request_id"]: e for e in await entries(hub)}["r-nul"]["level"] == "ab"
    for name in ("agency", "dataset", "from", "to"):
        refused = await hub.client.get(f"/v1/audit?{name}=x%00", headers=hub.admin())
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == name
    assert (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()["ok"] is True


async def test_a_provider_sees_who_used_its_data_and_nothing_else(hub: Hub) -> None:
    council = await hub.issue("manchester-cc")
    provider = await hub.issue("gmp")
    other = await hub.issue("tvp")
    hub.allow("manchester-cc", "read", "police-crime", "aggregate", providers=["gmp", "tvp"])
    hub.allow("tvp", "read", "police-crime", "depersonalised", providers=["cleveland"])
    await hub.client.get(AGGREGATES, headers={**council, "X-Request-ID": "r-use"})
    await hub.client.get(
        "/v1/datasets/police-crime/records", headers={**other, "X-Request-ID": "r-other"}
    )
    mine = (await hub.client.get("/v1/audit", headers=provider)).json()["entries"]
    assert [e["request_id"] for e in mine] == ["r-use"]
    assert mine[0]["agency"] == "manchester-cc" and mine[0]["agreement"] == "agr-1"
    filtered = (await hub.client.get("/v1/audit?agency=tvp", headers=provider)).json()["entries"]
    assert filtered == []


async def test_operator_filters_and_csv_export_neutralise_formulas(hub: Hub) -> None:
    council = await hub.issue("manchester-cc")
    await hub.client.get("/v1/me", headers={**council, "X-Request-ID": "=cmd|' /C calc'!A0"})
    await hub.client.get("/v1/me", headers={"X-Request-ID": "r-anon"})
    assert {e["agency"] for e in await entries(hub, agency="manchester-cc")} == {"manchester-cc"}
    denied = await entries(hub, outcome="denied")
    assert denied and {e["status"] for e in denied} == {401}
    assert await entries(hub, to="2000-01-01") == []
    assert len(await entries(hub, **{"from": "2000-01-01"})) >= 2
    answer = await hub.client.get("/v1/audit?format=csv", headers=hub.admin())
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert any(r["request_id"] == "'=cmd|' /C calc'!A0" for r in rows)
    assert not any(r["request_id"].startswith("=") for r in rows)


async def test_exported_chain_verifies_offline_and_tampering_fails(
    hub: Hub, tmp_path: Path
) -> None:
    for _ in range(4):
        await hub.client.get("/v1/me", headers=hub.admin())
    export = await hub.client.get("/v1/audit/export", headers=hub.admin())
    assert export.status_code == 200
    good = tmp_path / "audit.jsonl"
    good.write_text(export.text)
    script = str(REPO / "scripts" / "verify_audit.py")
    ok = subprocess.run([sys.executable, script, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    lines = [json.loads(line) for line in export.text.splitlines()]
    entry = next(line for line in lines if line["type"] == "entry" and line["seq"] == 2)
    entry["route"] = "/v1/elsewhere"
    bad = tmp_path / "tampered.jsonl"
    bad.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    failed = subprocess.run([sys.executable, script, str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["first_bad_entry"] == 2


def _chained(contents: list[dict[str, object]]) -> list[dict[str, object]]:
    prev = chain.GENESIS
    out = []
    for seq, content in enumerate(contents, start=1):
        entry = {**content, "seq": seq, "prev_hash": prev}
        entry["digest"] = chain.digest(entry)
        prev = entry["hash"] = chain.link(prev, str(entry["digest"]))
        out.append(entry)
    return out


CONTENT = st.fixed_dictionaries(
    {
        "agency": st.one_of(st.none(), st.text(max_size=8)),
        "route": st.text(max_size=12),
        "status": st.one_of(st.none(), st.integers(100, 599)),
        "providers": st.one_of(st.none(), st.lists(st.text(min_size=1, max_size=5), max_size=3)),
    }
)


@settings(max_examples=60, deadline=None)
@given(st.lists(CONTENT, min_size=1, max_size=12), st.data())
def test_any_chain_verifies_and_any_single_edit_is_found(
    contents: list[dict[str, object]], data: st.DataObject
) -> None:
    entries = _chained(contents)
    assert chain.verify(entries)["ok"] is True
    victim = data.draw(st.integers(0, len(entries) - 1))
    field = data.draw(st.sampled_from(["agency", "route", "status", "providers"]))
    edited = [dict(e) for e in entries]
    edited[victim][field] = "tampered" if edited[victim][field] != "tampered" else "x"
    result = chain.verify(edited)
    assert result == {**result, "ok": False, "first_bad_entry": victim + 1}


async def test_closing_the_log_signs_its_head_once(database_url: Callable[[str], str]) -> None:
    engine = make_engine(database_url("gateway"))
    prepare_schema(engine, Base.metadata, REPO / "services" / "gateway" / "migrations")
    with engine.begin() as connection:
        audit_chain.ensure_head(connection)
        signer = audit_sign.load_signer(connection, None)
    log = audit.AuditLog(engine, signer, checkpoint_every=1000, checkpoint_seconds=3600)
    log.start()
    for n in range(3):
        entry = {"at": audit_entries.now_iso(), "request_id": f"r-{n}", "phase": "complete"}
        await log.append({**entry, "method": "GET", "route": "/v1/me", "outcome": "allowed"})
    await log.close()
    with engine.connect() as connection:
        signed = [row[0] for row in connection.execute(text("SELECT seq FROM audit_checkpoint"))]
    assert signed == [3]
    with engine.connect() as connection:
        assert audit_queries.verify_store(connection)["ok"] is True
    engine.dispose()


async def test_a_provider_sees_who_read_its_data_and_nothing_of_other_sharing(hub: Hub) -> None:
    council = await hub.issue("manchester-cc")
    # tvp shares with the council under agreement agr-9, to which gmp is no party.
    hub.allow("manchester-cc", "read", "police-crime", "aggregate",
              providers=["gmp", "tvp"], agreement="agr-9")  # fmt: skip
    await hub.client.get(AGGREGATES, headers={**council, "X-Request-ID": "r-both"})
    hub.allow("manchester-cc", "read", "police-crime", "aggregate", providers=["gmp"])
    hub.app.state.gateway.decisions.clear()
    await hub.client.get(AGGREGATES, headers={**council, "X-Request-ID": "r-own"})
    provider = await hub.issue("gmp")
    seen = {
        e["request_id"]: e
        for e in (await hub.client.get("/v1/audit", headers=provider)).json()["entries"]
    }
    assert seen["r-both"]["agency"] == "manchester-cc"  # who read it
    assert seen["r-both"]["providers"] == ["gmp"]
    assert seen["r-both"]["agreement"] is None and seen["r-both"]["version"] is None
    assert seen["r-own"]["agreement"] == "agr-1"  # gmp is party to agr-1
    csv_view = (await hub.client.get("/v1/audit?format=csv", headers=provider)).text
    assert "tvp" not in csv_view and "agr-9" not in csv_view
    full = {e["request_id"]: e for e in await entries(hub)}
    assert full["r-both"]["providers"] == ["gmp", "tvp"]
    assert full["r-both"]["agreement"] == "agr-9"


async def test_data_answers_record_how_many_records_they_held(hub: Hub) -> None:
    council = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "aggregate")
    await hub.client.get(AGGREGATES, headers={**council, "X-Request-ID": "r-count"})
    by_id = {e["request_id"]: e for e in await entries(hub)}
    assert by_id["r-count"]["records"] == 812  # from the backend's CSP-Record-Count


def offline_verdict(path: Path) -> dict[str, object]:
    script = str(REPO / "scripts" / "verify_audit.py")
    run = subprocess.run([sys.executable, script, str(path)], capture_output=True, text=True)
    verdict: dict[str, object] = json.loads(run.stdout)
    assert (run.returncode == 0) == verdict["ok"]
    return verdict


async def test_a_redacted_entry_keeps_its_digest_and_the_chain_and_is_audited(
    hub: Hub, tmp_path: Path
) -> None:
    council = await hub.issue("manchester-cc")
    await hub.client.get("/v1/me", headers={**council, "X-Request-ID": "person-named-here"})
    target = next(e for e in await entries(hub) if e["request_id"] == "person-named-here")
    refused = await hub.client.post(f"/v1/audit/{target['seq']}/redact", headers=council)
    assert refused.status_code == 403
    done = await hub.client.post(f"/v1/audit/{target['seq']}/redact", headers=hub.admin())
    assert done.status_code == 200, done.text
    after = {e["seq"]: e for e in await entries(hub)}
    redacted = after[target["seq"]]
    assert redacted["redacted_at"] and redacted["digest"] == target["digest"]
    assert redacted["request_id"] == "" and redacted["agency"] is None
    assert redacted["key_id"] is None and redacted["hash"] == target["hash"]
    recording = [e for e in after.values() if e["request_id"] == f"redact-{target['seq']}"]
    assert len(recording) == 1 and recording[0]["action"] == "redact"
    assert recording[0]["key_id"] == hub.admin_key.split("_")[1]
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is True, check
    export = tmp_path / "audit.jsonl"
    export.write_text((await hub.client.get("/v1/audit/export", headers=hub.admin())).text)
    assert offline_verdict(export)["ok"] is True
    again = await hub.client.post(f"/v1/audit/{target['seq']}/redact", headers=hub.admin())
    assert again.status_code == 409
    missing = await hub.client.post("/v1/audit/999999/redact", headers=hub.admin())
    assert missing.status_code == 404


async def test_a_redaction_nobody_recorded_fails_both_verifiers(hub: Hub, tmp_path: Path) -> None:
    for _ in range(3):
        await hub.client.get("/v1/me", headers=hub.admin())
    sql(hub, "UPDATE audit_entry SET route = '/v1/hidden', redacted_at = 'x' WHERE seq = 2")
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is False and check["first_bad_entry"] == 2
    assert check["reason"] == "entry redacted without a recorded redaction"
    export = tmp_path / "audit.jsonl"
    export.write_text((await hub.client.get("/v1/audit/export", headers=hub.admin())).text)
    verdict = offline_verdict(export)
    assert verdict["ok"] is False and verdict["first_bad_entry"] == 2


def rewrite_from(hub: Hub, seq: int) -> None:
    """What an operator with the database could do: change entry ``seq``, relink every later
    entry and move the head, without the signing key."""
    rows = sql(hub, "SELECT * FROM audit_entry ORDER BY seq")
    prev = chain.GENESIS
    for row in rows:
        entry = {**row, "providers": audit_entries.providers_list(row["providers"])}  # type: ignore[arg-type]
        if row["seq"] == seq:
            entry["agency"] = "someone-else"
        if row["seq"] >= seq:
            digest = chain.digest(entry)
            link = chain.link(prev, digest)
            statement = (
                "UPDATE audit_entry SET agency = :a, digest = :d, prev_hash = :p, hash = :h"
                " WHERE seq = :s"
            )
            sql(hub, statement, a=entry["agency"], d=digest, p=prev, h=link, s=row["seq"])
            row = {**row, "hash": link}
        prev = str(row["hash"])
    sql(hub, "UPDATE audit_head SET hash = :h WHERE id = 1", h=prev)


async def test_checkpoints_are_written_every_n_entries_whatever_the_batch(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub(audit_checkpoint_every=3)
    await asyncio.gather(*(hub.client.get("/v1/me", headers=hub.admin()) for _ in range(20)))
    seqs = [row["seq"] for row in sql(hub, "SELECT seq FROM audit_checkpoint ORDER BY seq")]
    last = sql(hub, "SELECT max(seq) AS m FROM audit_entry")[0]["m"]
    assert seqs == list(range(3, int(last) + 1, 3))  # type: ignore[call-overload]


async def test_full_verification_checks_every_signed_tree_head(make_hub: MakeHub) -> None:
    hub = await make_hub(audit_checkpoint_every=5)
    for _ in range(12):
        await hub.client.get("/v1/me", headers=hub.admin())
    assert (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()["ok"] is True
    sql(hub, "UPDATE audit_checkpoint SET root = :r WHERE seq = 10", r="ab" * 32)
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is False and check["first_bad_entry"] == 10
    assert check["reason"] == "signed tree head does not match the entries"


async def test_deleting_checkpoints_to_rewrite_the_chain_fails_verification(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub(audit_checkpoint_every=5)
    for _ in range(20):
        await hub.client.get("/v1/me", headers=hub.admin())
    assert (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()["ok"] is True
    # Keep the first checkpoint, drop every later one and the last entries, rewrite entry 7.
    sql(hub, "DELETE FROM audit_checkpoint WHERE seq > 5")
    sql(hub, "DELETE FROM audit_entry WHERE seq > 12")
    sql(hub, "UPDATE audit_head SET seq = 12 WHERE id = 1")
    rewrite_from(hub, 7)
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is False
    assert check["first_bad_entry"] == 11 and "no signed checkpoint" in check["reason"]


async def test_a_key_added_to_the_table_is_not_trusted_when_the_key_is_configured(
    make_hub: MakeHub,
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()
    hub = await make_hub(audit_checkpoint_every=4, audit_signing_key=seed)
    for _ in range(8):
        await hub.client.get("/v1/me", headers=hub.admin())
    assert sql(hub, "SELECT private_seed FROM audit_signing_key")[0]["private_seed"] is None
    # The attacker re-signs every checkpoint of a rewritten chain with a key of their own.
    forger = audit_sign.Signer(Ed25519PrivateKey.generate())
    sql(hub, "INSERT INTO audit_signing_key (key_id, public_key, created_at) VALUES (:k, :p, 0)",
        k=forger.key_id, p=forger.public_b64)  # fmt: skip
    rewrite_from(hub, 2)
    for row in sql(hub, "SELECT a.seq, a.hash, c.at FROM audit_entry a JOIN audit_checkpoint c"
                   " ON a.seq = c.seq"):  # fmt: skip
        signature = forger.sign(int(row["seq"]), str(row["hash"]), str(row["at"]))
        statement = (
            "UPDATE audit_checkpoint SET hash = :h, signing_key_id = :k, signature = :s"
            " WHERE seq = :q"
        )
        sql(hub, statement, h=row["hash"], k=forger.key_id, s=signature, q=row["seq"])
    check = (await hub.client.get("/v1/audit/verify", headers=hub.admin())).json()
    assert check["ok"] is False and "unknown key" in check["reason"]


async def test_agencies_fetch_checkpoints_and_a_consistency_proof(make_hub: MakeHub) -> None:
    hub = await make_hub(audit_checkpoint_every=4)
    council = await hub.issue("manchester-cc")
    for _ in range(12):
        await hub.client.get("/v1/me", headers=council)
    page = (await hub.client.get("/v1/audit/checkpoints", headers=council)).json()
    found = page["checkpoints"]
    assert [c["seq"] for c in found][:3] == [4, 8, 12]
    assert set(page["public_keys"]) >= {c["signing_key_id"] for c in found}
    proof = (await hub.client.get("/v1/audit/consistency?from=4&to=12", headers=council)).json()
    assert len(proof["digests"]) == 8
    assert chain.consistent(proof["first"]["hash"], proof["digests"], proof["second"]["hash"])
    assert not chain.consistent(proof["first"]["hash"], proof["digests"][1:], found[2]["hash"])
    missing = await hub.client.get("/v1/audit/consistency?from=4&to=6", headers=council)
    assert missing.status_code == 404
    backwards = await hub.client.get("/v1/audit/consistency?from=8&to=4", headers=council)
    assert backwards.status_code == 422 and backwards.json()["field"] == "to"
    # Incremental verification starts at a checkpoint already verified.
    since = (await hub.client.get("/v1/audit/verify?from=8", headers=hub.admin())).json()
    assert since["ok"] is True and since["checkpoint"] >= 12


async def test_the_offline_verifier_requires_checkpoints_too(
    make_hub: MakeHub, tmp_path: Path
) -> None:
    hub = await make_hub(audit_checkpoint_every=3)
    for _ in range(9):
        await hub.client.get("/v1/me", headers=hub.admin())
    lines = (await hub.client.get("/v1/audit/export", headers=hub.admin())).text.splitlines()
    script = str(REPO / "scripts" / "verify_audit.py")
    good = tmp_path / "audit.jsonl"
    good.write_text("\n".join(lines) + "\n")
    run = [sys.executable, script, str(good), "--checkpoint-every", "3"]
    assert subprocess.run(run, capture_output=True).returncode == 0
    kept = [line for line in lines if json.loads(line)["type"] != "checkpoint"]
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join(kept) + "\n")
    failed = subprocess.run([*run[:2], str(bare), *run[3:]], capture_output=True, text=True)
    assert failed.returncode == 1
    assert "no signed checkpoint" in json.loads(failed.stdout)["reason"]


async def test_a_witness_holds_checkpoints_and_catches_a_re_signed_rewrite(
    make_hub: MakeHub, tmp_path: Path
) -> None:
    """Even an operator holding the signing key cannot rewrite what an agency has witnessed."""
    from csp_cli import witness

    hub = await make_hub(audit_checkpoint_every=4)
    council = await hub.issue("manchester-cc")
    loop = asyncio.get_running_loop()

    def get_json(path: str, **params: object) -> object:
        call = hub.client.get(path, params=params, headers=council)  # type: ignore[arg-type]
        answer = asyncio.run_coroutine_threadsafe(call, loop).result()
        assert answer.status_code == 200, answer.text
        return answer.json()

    asked: list[dict[str, object]] = []

    def recording(path: str, **params: object) -> object:
        if path == "/v1/audit/consistency":
            asked.append(params)
        return get_json(path, **params)

    state = tmp_path / "witness.json"
    for _ in range(11):
        await hub.client.get("/v1/me", headers=council)
    first = await asyncio.to_thread(witness.witness, recording, state)
    assert first.verified == 3 and first.newest["seq"] == 12 and first.signatures_checked
    # Each checkpoint checked by the tree's consistency proof, no digest downloaded.
    assert [p["digests"] for p in asked] == ["false"] * 3
    for _ in range(8):
        await hub.client.get("/v1/me", headers=council)
    second = await asyncio.to_thread(witness.witness, get_json, state)
    assert second.verified >= 2 and second.newest["seq"] >= 20
    held = json.loads(state.read_text())
    # The operator rewrites entry 3, re-signs every checkpoint with the hub's own key and
    # rebuilds the Merkle tree with its signed tree heads.
    rewrite_from(hub, 3)
    signer = hub.app.state.gateway.audit.signer
    for row in sql(hub, "SELECT a.seq, a.hash, c.at FROM audit_entry a JOIN audit_checkpoint c"
                   " ON a.seq = c.seq"):  # fmt: skip
        sql(hub, "UPDATE audit_checkpoint SET hash = :h, signature = :s WHERE seq = :q",
            h=row["hash"], s=signer.sign(int(row["seq"]), str(row["hash"]), str(row["at"])),
            q=row["seq"])  # fmt: skip
    sql(hub, "DELETE FROM audit_tree_node")
    sql(hub, "UPDATE audit_head SET frontier = NULL")
    sql(hub, "UPDATE audit_checkpoint SET root = NULL")
    with hub.app.state.engine.begin() as connection:
        assert audit_chain.ensure_tree(connection, signer) >= 20
    for _ in range(4):
        await hub.client.get("/v1/me", headers=council)
    with pytest.raises(witness.WitnessError, match="no longer agrees"):
        await asyncio.to_thread(witness.witness, get_json, state)
    assert json.loads(state.read_text()) == held  # nothing kept from a failed check
    # Even answering with the held checkpoint as it was, the tree proof gives the rewrite away.

    def lying(path: str, **params: object) -> object:
        answer = get_json(path, **params)
        if path == "/v1/audit/consistency":
            answer["first"] = held["checkpoint"]  # type: ignore[index]
        return answer

    with pytest.raises(witness.WitnessError, match="does not extend"):
        await asyncio.to_thread(witness.witness, lying, state)
    assert json.loads(state.read_text()) == held


async def test_an_entry_is_proved_in_a_signed_tree_head(make_hub: MakeHub) -> None:
    """Any key can prove an entry is in the log a checkpoint signed (RFC 6962 inclusion)."""
    from csp_cli.tree import inclusion_ok

    hub = await make_hub(audit_checkpoint_every=5)
    council = await hub.issue("manchester-cc")
    for _ in range(12):
        await hub.client.get("/v1/me", headers=council)
    checkpoints = (await hub.client.get("/v1/audit/checkpoints", headers=council)).json()
    last = checkpoints["checkpoints"][-1]
    assert last["tree_size"] == last["seq"] and len(last["root"]) == 64
    for seq in range(1, last["seq"] + 1):
        answer = await hub.client.get(f"/v1/audit/{seq}/proof?size={last['seq']}", headers=council)
        assert answer.status_code == 200, answer.text
        proof = answer.json()
        leaf = chain.hashlib.sha256(b"\x00" + bytes.fromhex(proof["digest"])).digest()
        assert inclusion_ok(seq - 1, last["seq"], leaf, proof["proof"], last["root"])
    beyond = await hub.client.get(f"/v1/audit/1/proof?size={last['seq'] + 1}", headers=council)
    assert beyond.status_code == 404
    assert (await hub.client.get("/v1/audit/9/proof?size=5", headers=council)).status_code == 422
    between = await hub.client.get(
        f"/v1/audit/consistency?from=5&to={last['seq']}&digests=false", headers=council
    )
    assert between.status_code == 200 and between.json()["digests"] is None


def test_an_entry_without_a_reason_keeps_the_digest_it_had_before_reasons_existed() -> None:
    entry = {name: None for name in chain.CONTENT_FIELDS if name != "reason"}
    entry.update(seq=1, at="2026-01-01T00:00:00Z", request_id="r", phase="complete")
    before = chain.hashlib.sha256(chain._CANONICAL.encode(entry).encode("ascii")).hexdigest()
    assert chain.digest({**entry, "reason": None}) == before
    assert chain.digest({**entry, "reason": "IOM case review"}) != before
