"""The four services as real processes on free ports, driven only over HTTP, and the steps every
end-to-end test takes through the public API: agencies with keys, agreements made and signed,
batches waited for."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.hub import DEFAULT_PORTS, Hub, free_port
from services.depersonalise.demo import demo_layer
from tests.conftest import TEST_KEYS, create_pg_database, drop_pg_database, using_postgres

ADMIN_KEY = "csp_ops_end-to-end-test-operators-key"


@contextmanager
def running_hub(folder: Path, extra: dict[str, str] | None = None) -> Iterator[Hub]:
    """The four services on free ports over fresh databases, with ``extra`` settings."""
    if using_postgres():
        databases = {name: create_pg_database(name) for name in DEFAULT_PORTS}
    else:
        databases = {name: f"sqlite:///{folder / name}.db" for name in DEFAULT_PORTS}
    ports = {name: free_port() for name in DEFAULT_PORTS}
    lines: list[str] = []
    running = Hub(
        ports,
        databases,
        TEST_KEYS,
        {
            "CSP_ADMIN_KEY": ADMIN_KEY,
            "CSP_INGEST_RELAY_INTERVAL_SECONDS": "0.2",
            "CSP_INGEST_LINKAGE_KEY": "end-to-end-linkage-key-not-for-production",
            **(extra or {}),
        },
        sink=lines.append,
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
        if using_postgres():
            for url in databases.values():
                drop_pg_database(url)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("hub")) as running:
        yield running


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def register_agencies(
    client: httpx.Client,
    agencies: Iterable[tuple[str, str]],
    name: Callable[[str], str] = str,
) -> dict[str, str]:
    """Each ``(code, kind)`` registered by the operators, with a key of its own: code → key."""
    admin = bearer(ADMIN_KEY)
    keys = {}
    for code, kind in agencies:
        made = client.post(
            "/v1/agencies", json={"code": code, "name": name(code), "kind": kind}, headers=admin
        )
        assert made.status_code == 201, made.text
        issued = client.post(f"/v1/agencies/{code}/keys", headers=admin)
        assert issued.status_code == 201, issued.text
        keys[code] = issued.json()["key"]
    return keys


def agreement_terms(
    title: str,
    purpose: str,
    providers: list[str],
    recipients: list[str],
    datasets: list[dict[str, Any]],
    *,
    legal_basis: tuple[str, ...] = ("cda-1998-s115", "uk-gdpr-6-1-e"),
    start: str = "2024-01-01",
    retention_days: int = 3650,
) -> dict[str, Any]:
    """The body of an agreement in force from ``start`` to the end of 2030."""
    return {
        "title": title,
        "purpose": purpose,
        "legal_basis": list(legal_basis),
        "providers": providers,
        "recipients": recipients,
        "datasets": datasets,
        "start": start,
        "end": "2030-12-31",
        "review_by": "2030-06-30",
        "retention_days": retention_days,
    }


def create_agreement(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """The agreement the operators made of ``body`` (a draft until every party signs)."""
    made = client.post("/v1/agreements", json=body, headers=bearer(ADMIN_KEY))
    assert made.status_code == 201, made.text
    answer: dict[str, Any] = made.json()
    return answer


def agree(
    client: httpx.Client,
    body: dict[str, Any],
    signers: Iterable[str],
    signatory: str | None = None,
) -> dict[str, Any]:
    """An agreement made of ``body`` and signed with each key of ``signers``."""
    made = create_agreement(client, body)
    extra = {} if signatory is None else {"json": {"signatory": signatory}}
    for key in signers:
        signed = client.post(f"/v1/agreements/{made['id']}/sign", headers=bearer(key), **extra)
        assert signed.status_code == 200, signed.text
    return made


def load_demo_layer(client: httpx.Client, layer: str) -> None:
    """The demo grid loaded as ``layer`` by the operators (its build runs on; 202)."""
    answer = client.post(
        f"/v1/geographies/{layer}",
        params={"code_field": "code", "name_field": "name"},
        json=demo_layer(),
        headers=bearer(ADMIN_KEY),
    )
    assert answer.status_code == 202, answer.text


def wait_depersonalised(client: httpx.Client, batch_id: str, key: str, expected: int) -> dict:
    deadline = time.monotonic() + 60
    batch: dict[str, Any] = {}
    while time.monotonic() < deadline:
        batch = client.get(f"/v1/batches/{batch_id}", headers=bearer(key)).json()
        if batch.get("depersonalised") == expected:
            return batch
        time.sleep(0.3)
    raise AssertionError(f"batch not depersonalised in time: {batch}")
