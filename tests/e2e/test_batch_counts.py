"""Batch counts are true and converge, whatever rebuilds, restarts and revisions happen meanwhile.

Real processes: pushes while a layer rebuild replays from ingest, a second load during the first
rebuild, depersonalise SIGKILLed mid-rebuild, ingest down mid-rebuild, corrections and
retractions of a batch still in flight. Every time: 0 records lost, 0 duplicated, and each batch's
``delivered`` and ``depersonalised`` reach ``accepted`` exactly.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from itertools import count
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from scripts.demo import crime_agreement
from scripts.hub import Hub
from tests.e2e.conftest import ADMIN_KEY, agree, bearer, load_demo_layer, register_agencies

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POLICE, COUNCIL = "fc-police", "fc-council"
HELD = 16_000  # records already held before the faults start, so a rebuild takes a while
_layers = count(1)
_refs = count(1)


def rows(n: int, refs: list[str] | None = None, category: str = "Burglary") -> list[dict[str, Any]]:
    refs = refs or [f"FC-{next(_refs):07d}" for _ in range(n)]
    return [
        {
            "source_ref": ref,
            "occurred_at": f"2024-0{1 + number % 6}-{1 + number % 28:02d}T10:00:00Z",
            "category": category,
            "easting": 380_100.0 + (number * 37) % 5_800,
            "northing": 394_100.0 + (number * 53) % 5_800,
        }
        for number, ref in enumerate(refs)
    ]


class Partner:
    def __init__(self, hub: Hub, keys: dict[str, str]) -> None:
        self.hub = hub
        self.keys = keys
        self.expected: set[str] = set()  # source_refs that must be held

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.hub.gateway_url, timeout=300)

    def push(self, records: list[dict[str, Any]]) -> str:
        with self.client() as client:
            answer = client.post(
                "/v1/datasets/police-crime/records",
                json={"records": records},
                headers=bearer(self.keys[POLICE]),
            )
        assert answer.status_code == 202, answer.text
        assert answer.json()["accepted"] == len(records), answer.text
        self.expected.update(r["source_ref"] for r in records)
        return str(answer.json()["batch_id"])

    def retract(self, ref: str) -> None:
        with self.client() as client:
            answer = client.delete(
                f"/v1/datasets/police-crime/records/{ref}", headers=bearer(self.keys[POLICE])
            )
        assert answer.status_code == 204, answer.text
        self.expected.discard(ref)

    def load_layer(self) -> str:
        name = f"fc-layer-{next(_layers)}"
        with self.client() as client:
            load_demo_layer(client, name)
        return name

    def batch(self, batch_id: str) -> dict[str, Any]:
        with self.client() as client:
            return dict(
                client.get(f"/v1/batches/{batch_id}", headers=bearer(self.keys[POLICE])).json()
            )

    def rebuild_state(self) -> dict[str, Any]:
        with self.client() as client:
            answer = client.get("/v1/geographies", headers=bearer(ADMIN_KEY))
        if answer.status_code != 200:  # an unanswered poll says nothing about the rebuild
            return {"state": "running", "unanswered": answer.status_code}
        return dict(answer.json().get("rebuild") or {})

    def wait_rebuilding(self, processed: int = 1, timeout: float = 60) -> None:
        """Until the replay of a rebuild has written at least ``processed`` records."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.rebuild_state()
            if state.get("state") == "running" and state.get("processed", 0) >= processed:
                return
            time.sleep(0.05)
        raise AssertionError(f"no rebuild running: {self.rebuild_state()}")

    def converged(self, batch_ids: list[str], timeout: float = 60) -> None:
        """Every batch exact within ``timeout`` s, the layers served, the store exactly right."""
        deadline = time.monotonic() + timeout
        pending: dict[str, Any] = {}
        while time.monotonic() < deadline:
            counts = {b: self.batch(b) for b in batch_ids}
            pending = {
                b: c
                for b, c in counts.items()
                if not c["delivered"] == c["depersonalised"] == c["accepted"]
            }
            if not pending and self.rebuild_state().get("state") != "running":
                break
            for c in counts.values():
                assert c["delivered"] <= c["accepted"], c
                assert c["depersonalised"] <= c["accepted"], c
            time.sleep(0.25)
        assert not pending, f"counts stuck after {timeout} s: {pending}"
        time.sleep(1.0)  # nothing counted twice after converging
        for b in batch_ids:
            c = self.batch(b)
            assert c["delivered"] == c["depersonalised"] == c["accepted"], c
        self.check_store()
        # The reconciler, through the gateway, finds raw and derived in agreement. It waits out
        # a rebuild (a retried one may start after the counts converged): ask until none runs.
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                report = client.post("/v1/reconcile", headers=bearer(ADMIN_KEY))
                assert report.status_code == 200, report.text
                if report.json()["state"] != "skipped" or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        assert report.json()["state"] == "complete", report.json()
        assert report.json()["lag_records"] == 0, report.json()

    def check_store(self) -> None:
        """Depersonalise holds each expected record once in the served generation, nothing else."""
        url = self.hub["depersonalise"].env["CSP_DEPERSONALISE_DATABASE_URL"]
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                generation = conn.execute(text("SELECT generation FROM service_state")).scalar()
                live, keys = conn.execute(
                    text(
                        "SELECT count(*), count(DISTINCT record_key) FROM derived_record "
                        "WHERE generation = :g AND dataset = 'police-crime' AND provider = :p "
                        "AND deleted = :f"
                    ),
                    {"g": generation, "p": POLICE, "f": False},
                ).one()
        finally:
            engine.dispose()
        assert keys == live, f"{live - keys} records duplicated"
        assert live == len(self.expected), f"held {live}, expected {len(self.expected)}"


@pytest.fixture(scope="module")
def partner(hub: Hub) -> Iterator[Partner]:
    with httpx.Client(base_url=hub.gateway_url, timeout=120) as client:
        keys = register_agencies(client, ((POLICE, "police"), (COUNCIL, "local-authority")))
        body = crime_agreement("Crime data for the fault tests", [POLICE], [COUNCIL], "aggregate")
        agree(client, body, keys.values(), signatory="Fault tests")
    held = Partner(hub, keys)
    held.load_layer()
    seeded = [held.push(rows(HELD // 2)), held.push(rows(HELD // 2))]
    held.converged(seeded, timeout=120)
    yield held


def _in_thread(function: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(function(*args)))
    thread.start()
    return thread, out


def test_push_during_a_rebuild_converges(partner: Partner) -> None:
    pushing, out = _in_thread(partner.push, rows(9_784))
    partner.load_layer()
    pushing.join(300)
    partner.converged(out)


def test_second_load_while_the_first_rebuild_runs(partner: Partner) -> None:
    partner.load_layer()
    partner.wait_rebuilding()
    pushing, out = _in_thread(partner.push, rows(4_000))
    partner.load_layer()
    pushing.join(300)
    partner.converged(out)


def test_depersonalise_killed_mid_rebuild_and_restarted(partner: Partner, hub: Hub) -> None:
    first = partner.push(rows(3_000))
    partner.load_layer()
    partner.wait_rebuilding(processed=2_000)
    hub["depersonalise"].stop(signal.SIGKILL)
    later = partner.push(rows(3_000))  # accepted by ingest while depersonalise is down
    hub["depersonalise"].start()
    hub["depersonalise"].wait_ready(60)
    partner.converged([first, later])


def test_ingest_down_during_a_rebuild(partner: Partner, hub: Hub) -> None:
    first = partner.push(rows(3_000))
    partner.load_layer()
    partner.wait_rebuilding(processed=2_000)
    hub["ingest"].stop()
    time.sleep(3)
    hub["ingest"].start()
    hub["ingest"].wait_ready(60)
    partner.converged([first])


def test_correction_and_retraction_of_a_batch_in_flight(partner: Partner) -> None:
    original = rows(6_000)
    refs = [r["source_ref"] for r in original]
    first = partner.push(original)
    corrected = partner.push(rows(200, refs=refs[-200:], category="Robbery"))
    for ref in refs[-300:-250] + refs[-20:]:
        partner.retract(ref)
    partner.converged([first, corrected])
