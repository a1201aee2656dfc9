"""A rebuild by replay with many records held: records/s and peak RSS (``bench.aggregates``).

A child process holds ``CSP_BENCH_REBUILD_RECORDS`` (1,000,000 by default) derived police-crime
records in a 300-square grid layer, loads a second layer and rebuilds: ingest's
``GET /internal/records`` is served in-process, page by page, from a generator (nothing is held
whole), so the figure is depersonalise's own work: masking, area assignment, the derived rows
(COPY on PostgreSQL) and the next generation's cube (one aggregation once the replay is done,
generations.recount_cube; its share is reported as ``recount_seconds``), while the old generation
stays served. A reader thread asks for the old generation's 300-area × 12-month table every
``PROBE_SECONDS`` while it is served, as the aggregates route asks (read again if the switch to
the rebuilt generation commits during a read), and checks each answer is the one given before the
rebuild began (``served_answers``, ``served_worst_seconds``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any

import httpx
import numpy as np
import shapely
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.aggregates import SECRET, body_of, fill, table_on
from bench.results import peak_rss_mb
from services.depersonalise import generations, replay
from services.depersonalise.geography import Layer
from services.depersonalise.layer_registry import (
    Registry,
    load_registry,
    on_served_generation,
    save_layer,
)
from services.depersonalise.service_state import read_state
from shared.catalogue import load_catalogue
from shared.db import in_read_transaction
from shared.tokens import TokenKey

SIDE, ORIGIN = 20, (380_000.0, 390_000.0)  # 20 × 15 squares of 1 km
CATEGORIES = ["Burglary", "Robbery", "Vehicle crime", "Criminal damage and arson"]
PROBE_SECONDS = 2.0


def grid(name: str, size: float = 1000.0) -> Layer:
    x0, y0 = ORIGIN
    boxes = [
        shapely.box(x0 + i * size, y0 + j * size, x0 + (i + 1) * size, y0 + (j + 1) * size)
        for j in range(15)
        for i in range(SIDE)
    ]
    codes = np.array([f"{name}{k:04d}" for k in range(len(boxes))], dtype=object)
    return Layer(name, codes, codes.copy(), np.asarray(boxes, dtype=object))


def event(i: int) -> dict[str, Any]:
    h = (i * 2654435761) % 2**32
    return {
        "event_id": i + 1,
        "op": "upsert",
        "dataset": "police-crime",
        "provider": "gmp",
        "record_key": f"r{i:09d}",
        "revision": 1,
        "location_source": "coordinates",
        "easting": ORIGIN[0] + (h % 20_000),
        "northing": ORIGIN[1] + (h // 20_000) % 15_000,
        "record": {
            "occurred_at": f"2024-{1 + h % 12:02d}-{1 + h % 28:02d}T10:00:00Z",
            "category": CATEGORIES[h % 4],
            "outcome": "charged" if h % 3 else "no-suspect",
        },
    }


def ingest(records: int) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        if params["dataset"] != "police-crime":
            return httpx.Response(200, json={"events": [], "next": None})
        after, limit = int(params.get("after", 0)), int(params["limit"])
        events = [event(i) for i in range(after, min(after + limit, records))]
        done = after + limit >= records
        return httpx.Response(200, json={"events": events, "next": None if done else after + limit})

    return httpx.MockTransport(handle)


class Probe(threading.Thread):
    """Reads the old generation's table until stopped or switched from: how many answers, the
    slowest, and whether every one equals the answer given before the rebuild began."""

    def __init__(self, answer: Any) -> None:
        super().__init__(daemon=True)
        self.answer, self.expected = answer, answer()
        self.stop = threading.Event()
        self.times: list[float] = []
        self.changed = 0

    def run(self) -> None:
        while not self.stop.wait(PROBE_SECONDS):
            started = time.perf_counter()
            answer = self.answer()
            if answer is None:  # the rebuilt generation is served: the old one's answers end
                return
            if answer != self.expected:
                self.changed += 1
            self.times.append(time.perf_counter() - started)


def old_answer(engine: Any, spec: Any) -> bytes | None:
    """The old generation's table while it is served, read as the aggregates route reads it
    (again if the switch to the rebuilt generation commits during the read); None once the
    rebuilt generation is served (its records have no ``bench`` areas: the bench fills them
    straight into the old generation)."""
    with engine.connect() as conn:

        def registry_of(attempt: int) -> Registry:
            return Registry(generation=read_state(conn)["generation"])

        def table(registry: Registry) -> dict[str, Any] | None:
            return table_on(conn, registry, 300, spec) if registry.generation == 1 else None

        _, found = on_served_generation(conn, registry_of, table)
    return None if found is None else body_of(found)


async def run(url: str, records: int) -> dict[str, Any]:
    """Hold ``records`` derived records (stored in bulk), load a layer, rebuild by replay."""
    catalogue = {"police-crime": load_catalogue()["police-crime"]}
    engine = fill(url, records, 300, catalogue["police-crime"])
    held = in_read_transaction(engine, generations.live_records, 1)
    save_layer(engine, grid("second"), "code", None)
    counting: list[float] = []
    recount = generations.recount_cube

    def timed_recount(*args: Any) -> None:
        began = time.perf_counter()
        recount(*args)
        counting.append(time.perf_counter() - began)

    generations.recount_cube = timed_recount  # type: ignore[assignment]
    spec = catalogue["police-crime"]
    probe = Probe(lambda: old_answer(engine, spec))
    probe.start()
    async with httpx.AsyncClient(transport=ingest(records), base_url="http://ingest") as client:
        started = time.perf_counter()
        done = await replay.rebuild(
            engine,
            client,
            "http://ingest",
            TokenKey("depersonalise", Ed25519PrivateKey.generate()),
            catalogue,
            2000,
            replay.cached_registry(engine),
            record_keys=SECRET,
        )
        seconds = time.perf_counter() - started
    probe.stop.set()
    probe.join()
    generation = load_registry(engine).generation
    rebuilt = in_read_transaction(engine, generations.live_records, generation)
    engine.dispose()
    assert done["state"] == "complete" and rebuilt == held, (done, rebuilt, held)
    assert probe.times and not probe.changed, (len(probe.times), probe.changed)
    return {
        "records": held,
        "seconds": seconds,
        "recount_seconds": sum(counting),
        "peak_rss_mb": peak_rss_mb(),
        "served_answers": len(probe.times),
        "served_worst_seconds": max(probe.times),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(sys.argv[1], int(sys.argv[2])))))
