"""Answers read from the read replica when one is given; events and releases go to the writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.depersonalise.models import Base
from shared.db import make_engine, prepare_schema
from tests.depersonalise.conftest import event, reader, service, wait_rebuild
from tests.depersonalise.test_api import load_demo

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "depersonalise" / "migrations"


def test_aggregates_and_records_read_the_replica_releases_the_writer(
    make_client: Any, database_url: Any
) -> None:
    replica_url = database_url("depersonalise-replica")
    replica = make_engine(replica_url)
    prepare_schema(replica, Base.metadata, MIGRATIONS)
    replica.dispose()
    client, _ = make_client(read_database_url=replica_url)
    load_demo(client)
    assert wait_rebuild(client)["state"] == "complete"
    events = [event(i + 1, f"k{i}", 382_000.0 + i, 398_000.0) for i in range(12)]
    stored = client.post("/internal/events", json={"events": events}, headers=service())
    assert stored.json()["depersonalised"] == 12
    answer = client.get("/v1/datasets/police-crime/aggregates?geography=demo", headers=reader())
    assert answer.status_code == 200, answer.text
    # The replica has not caught up (nothing copies to it here): its answer counts nothing.
    assert answer.json()["disclosure"]["records"] == 0
    pages = client.get(
        "/v1/datasets/police-crime/records", headers=reader(level="depersonalised")
    ).json()
    assert pages["records"] == [] and pages["disclosure"]["records"] == 0
    # The release was recorded by the writer, where the recipient finds it.
    release = answer.json()["release_id"]
    assert client.get(f"/v1/releases/{release}", headers=reader()).status_code == 200
