"""The demo data set ``make run`` seeds on first start: clearly labelled, generated here.

Two demo agencies with keys, an active agreement between them, a demo grid geography over central
Manchester and a few hundred synthetic crime records. Nothing in it describes real people.
"""

from __future__ import annotations

import random
import time
from datetime import date, timedelta
from typing import Any

import httpx

from services.depersonalise.demo import demo_layer

DEMO_PROVIDER = {"code": "demo-police", "name": "Demo Police (demo data)", "kind": "police"}
DEMO_RECIPIENT = {
    "code": "demo-council",
    "name": "Demo City Council (demo data)",
    "kind": "local-authority",
}
DEMO_LAYER = "demo-grid"
DEMO_SNAP_LAYER = "demo-points"
# The 6 km x 6 km square of demo_layer() around central Manchester, British National Grid metres.
DEMO_EXTENT = (380000.0, 394000.0, 386000.0, 400000.0)
DEMO_CATEGORIES = (
    "Burglary",
    "Robbery",
    "Vehicle crime",
    "Violence and sexual offences",
    "Criminal damage and arson",
    "Shoplifting",
)


def demo_records(count: int = 400, seed: int = 2024) -> list[dict[str, Any]]:
    """Synthetic crime records clustered on the demo extent's centre, January to June 2024."""
    rng = random.Random(seed)
    min_x, min_y, max_x, max_y = DEMO_EXTENT
    centre_x, centre_y = (min_x + max_x) / 2, (min_y + max_y) / 2
    start = date(2024, 1, 1)
    records = []
    for number in range(1, count + 1):
        day = start + timedelta(days=rng.randrange(182))
        clock = f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z"
        # A town-centre hotspot: most events near the middle, a few anywhere in the square.
        x = min(max(rng.gauss(centre_x, 900), min_x + 10), max_x - 10)
        y = min(max(rng.gauss(centre_y, 900), min_y + 10), max_y - 10)
        records.append(
            {
                "source_ref": f"DEMO-{number:05d}",
                "occurred_at": f"{day.isoformat()}T{clock}",
                "category": rng.choice(DEMO_CATEGORIES),
                "easting": round(x, 1),
                "northing": round(y, 1),
            }
        )
    return records


def demo_address_points(spacing: float = 80.0, seed: int = 7) -> str:
    """Synthetic candidate map points with household counts (CSV), for the demo snap layer.

    Street-like points every ``spacing`` metres with a little jitter and 0–14 households each, so
    the snap layer build has to merge sparse points until each catchment holds k = 8.
    """
    rng = random.Random(seed)
    min_x, min_y, max_x, max_y = DEMO_EXTENT
    lines = ["easting,northing,households"]
    y = min_y + spacing / 2
    while y < max_y:
        x = min_x + spacing / 2
        while x < max_x:
            jitter_x, jitter_y = rng.uniform(-15, 15), rng.uniform(-15, 15)
            lines.append(f"{x + jitter_x:.1f},{y + jitter_y:.1f},{rng.randrange(15)}")
            x += spacing
        y += spacing
    return "\n".join(lines) + "\n"


def crime_agreement(
    title: str, providers: list[str], recipients: list[str], level: str = "depersonalised"
) -> dict[str, Any]:
    """An agreement body for police-crime under s115 for the strategic assessment, 2024-2030."""
    return {
        "title": title,
        "purpose": "strategic-assessment",
        "legal_basis": ["cda-1998-s115", "uk-gdpr-6-1-e"],
        "providers": providers,
        "recipients": recipients,
        "datasets": [{"dataset": "police-crime", "level": level}],
        "start": "2024-01-01",
        "end": "2030-12-31",
        "review_by": "2030-06-30",
        "retention_days": 3650,
    }


def demo_agreement() -> dict[str, Any]:
    return crime_agreement(
        "DEMO: police crime data for the strategic assessment",
        [DEMO_PROVIDER["code"]],
        [DEMO_RECIPIENT["code"]],
    )


def _check(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 400:
        raise RuntimeError(f"demo seeding failed at {what}: {response.status_code} {response.text}")
    return response.json() if response.content else {}


def seed(gateway_url: str, admin_key: str) -> dict[str, str]:
    """Create the demo through the public API; returns the demo agencies' keys."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    keys: dict[str, str] = {}
    with httpx.Client(base_url=gateway_url, timeout=60) as client:
        for agency in (DEMO_PROVIDER, DEMO_RECIPIENT):
            _check(client.post("/v1/agencies", json=agency, headers=admin), "agency")
            issued = _check(
                client.post(f"/v1/agencies/{agency['code']}/keys", headers=admin), "key"
            )
            keys[agency["code"]] = issued["key"]
        agreement = _check(
            client.post("/v1/agreements", json=demo_agreement(), headers=admin), "agreement"
        )
        for code in keys:
            _check(
                client.post(
                    f"/v1/agreements/{agreement['id']}/sign",
                    json={"signatory": "Demo signatory"},
                    headers={"Authorization": f"Bearer {keys[code]}"},
                ),
                "signature",
            )
        _check(
            client.post(
                f"/v1/geographies/{DEMO_LAYER}",
                params={"code_field": "code", "name_field": "name"},
                json=demo_layer(),
                headers=admin,
            ),
            "geography",
        )
        _check(
            client.post(
                f"/v1/snap-layers/{DEMO_SNAP_LAYER}",
                params={"k": 8},
                content=demo_address_points(),
                headers={**admin, "Content-Type": "text/csv"},
            ),
            "snap layer",
        )
        police = {"Authorization": f"Bearer {keys[DEMO_PROVIDER['code']]}"}
        pushed = _check(
            client.post(
                "/v1/datasets/police-crime/records",
                json={"records": demo_records()},
                headers=police,
            ),
            "push",
        )
        _wait_served(client, admin, police, pushed["batch_id"])
    return keys


def _wait_served(
    client: httpx.Client,
    admin: dict[str, str],
    police: dict[str, str],
    batch_id: str,
    timeout: float = 90,
) -> None:
    """Until the demo layers are served and every demo record is depersonalised."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        layers = _check(client.get("/v1/geographies", headers=admin), "geographies")["layers"]
        batch = _check(client.get(f"/v1/batches/{batch_id}", headers=police), "batch")
        served = all(layer.get("status") == "active" for layer in layers)
        if served and batch["depersonalised"] >= batch["accepted"]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the demo was not served within {timeout} s")
