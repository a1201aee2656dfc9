"""Property-based API fuzzing of the gateway's public OpenAPI with schemathesis.

Starts the four services on free ports with fresh SQLite files, seeds the demo, then runs
``st run`` against the gateway's merged ``/openapi.json`` with the checks
``not_a_server_error,response_schema_conformance``: no 5xx and no response that breaks its
declared schema (errors are declared as ``application/problem+json``, so they are checked too).

Path and query parameters (dataset, agreement id, batch id, agency code, layer, source_ref) are
drawn with probability 0.8 from what the seeded demo holds (schemathesis dictionaries written to
``schemathesis.toml``), so most cases reach real resources instead of answering 404.

Order, so that no run can make another meaningless:

1. as the demo council (a recipient agency): every operation. An agency cannot revoke keys or
   suspend anything, so it cannot lock itself or anyone else out;
2. as operators: every operation except the destructive ones (``DESTRUCTIVE``: key revocation,
   agency suspension, agreement suspension and revocation), which could otherwise stop the
   operators' own agency, the demo agencies or the demo agreement mid-run and turn the rest of
   the run into 403s;
3. as the demo police (the provider agency): every operation, pushes and retractions included;
4. as operators, the destructive operations only, last, when nothing else depends on the state.

After each run its key must still answer ``GET /v1/me`` with 200, or the run counts as a failure.
The gateway's rate limit is lifted for the run (429s test nothing here).

Budget (CI on 2 cores: about 3 min 10 s in all, of which about 15 s start-up and seeding):
``CSP_FUZZ_SECONDS`` (default 55) is the time of each of the three main runs and a quarter of it
the destructive run; schemathesis repeats fuzzing until that time is spent, with at most
``CSP_FUZZ_EXAMPLES`` (default 20) cases per operation and phase. The seed is fixed
(``CSP_FUZZ_SEED``) and no example database is kept, so a run replays the same first cases;
the time bound means a faster machine adds more. With ``CSP_FUZZ_PG_URL`` (a PostgreSQL server
URL, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) the services use fresh
PostgreSQL databases instead, which finds what only PostgreSQL refuses (NUL in text, column
lengths, 32-bit integers). Exit status is non-zero on any failure; service logs and
schemathesis's NDJSON reports are kept in
``CSP_FUZZ_OUT`` (default ``var/fuzz``). Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from sqlalchemy import make_url, text

from scripts.demo import DEMO_LAYER, DEMO_PROVIDER, DEMO_RECIPIENT, demo_records, seed
from scripts.hub import DEFAULT_PORTS, Hub, HubKeys, free_port
from shared.db import make_engine

ADMIN_KEY = "csp_ops_schemathesis-operators-key"
CHECKS = "not_a_server_error,response_schema_conformance"
DESTRUCTIVE = (
    "DELETE /v1/agencies/{code}/keys/{key_id}",
    "POST /v1/agencies/{code}/suspend",
    "POST /v1/agreements/{agreement_id}/suspend",
    "POST /v1/agreements/{agreement_id}/revoke",
)
DESTRUCTIVE_REGEX = (
    "^(" + "|".join(d.replace("{", r"\{").replace("}", r"\}") for d in DESTRUCTIVE) + ")$"
)


# Path and query parameters drawn mostly from what the demo holds, so cases reach real resources.
BINDINGS = {
    "path.dataset": "datasets",
    "query.dataset": "datasets",
    "path.agreement_id": "agreements",
    "path.batch_id": "batches",
    "path.code": "agencies",
    "query.agency": "agencies",
    "query.provider": "agencies",
    "path.layer": "layers",
    "query.geography": "layers",
    "path.source_ref": "source_refs",
}


def postgres_databases(server: str, create: bool) -> dict[str, str]:
    """Fresh databases ``csp_fuzz_<service>`` on the PostgreSQL server (dropped when not create)."""
    admin = make_engine(server, isolation_level="AUTOCOMMIT")
    urls = {}
    with admin.connect() as connection:
        for service in DEFAULT_PORTS:
            name = f"csp_fuzz_{service}"
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            if create:
                connection.execute(text(f"CREATE DATABASE {name}"))
            urls[service] = make_url(server).set(database=name).render_as_string(False)
    admin.dispose()
    return urls


def demo_values(gateway_url: str, keys: dict[str, str]) -> dict[str, list[str]]:
    """Names of what the seeded demo holds; one more push of a demo record gives a batch id."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    provider = {"Authorization": f"Bearer {keys[DEMO_PROVIDER['code']]}"}
    with httpx.Client(base_url=gateway_url, timeout=60) as client:
        agreements = client.get("/v1/agreements", headers=admin).json()["items"]
        records = demo_records(3)
        pushed = client.post(
            "/v1/datasets/police-crime/records", json={"records": records}, headers=provider
        ).json()
    return {
        # The demo agreement's only dataset: any other catalogue dataset answers 403 to the demo.
        "datasets": ["police-crime"],
        "agreements": [a["id"] for a in agreements],
        "batches": [pushed["batch_id"]],
        "agencies": [DEMO_PROVIDER["code"], DEMO_RECIPIENT["code"], "ops"],
        "layers": [DEMO_LAYER],
        "source_refs": [r["source_ref"] for r in records],
    }


def write_config(path: Path, values: dict[str, list[str]]) -> None:
    lines = []
    for name, entries in values.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(entries)}", ""]
    lines.append("[parameters]")
    for parameter, dictionary in BINDINGS.items():
        lines.append(f'"{parameter}" = {{ dictionary = "{dictionary}", probability = 0.8 }}')
    path.write_text("\n".join(lines) + "\n")


def schemathesis(
    gateway_url: str, key: str, config: Path, report: Path, seconds: int, selection: list[str]
) -> int:
    return subprocess.call(
        [
            str(Path(sys.executable).parent / "st"),
            "--config-file",
            str(config),
            "run",
            f"{gateway_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            CHECKS,
            "--max-examples",
            os.environ.get("CSP_FUZZ_EXAMPLES", "20"),
            "--max-time",
            str(seconds),
            "--seed",
            os.environ.get("CSP_FUZZ_SEED", "20240101"),
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            "--workers",
            "1",
            "--suppress-health-check",
            "all",
            "--warnings",
            "off",
            "--no-color",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
            *selection,
        ]
    )


def still_authenticated(gateway_url: str, key: str) -> bool:
    answer = httpx.get(
        f"{gateway_url}/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    return answer.status_code == 200


def main() -> int:
    seconds = int(os.environ.get("CSP_FUZZ_SECONDS", "55"))
    out = Path(os.environ.get("CSP_FUZZ_OUT", "var/fuzz"))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "services.log"
    failures = 0
    server = os.environ.get("CSP_FUZZ_PG_URL")
    with tempfile.TemporaryDirectory() as folder, log.open("w") as sink:
        databases = {name: f"sqlite:///{Path(folder) / name}.db" for name in DEFAULT_PORTS}
        if server:
            databases = postgres_databases(server, create=True)
        ports = {name: free_port() for name in DEFAULT_PORTS}
        hub = Hub(
            ports,
            databases,
            HubKeys.generate(),
            {"CSP_ADMIN_KEY": ADMIN_KEY, "CSP_GATEWAY_RATE_LIMIT": "100000/second"},
            sink=lambda line: print(line, file=sink, flush=True),
        )
        hub.start()
        try:
            keys = seed(hub.gateway_url, ADMIN_KEY)
            config = out / "schemathesis.toml"
            write_config(config, demo_values(hub.gateway_url, keys))
            runs: tuple[tuple[str, str, int, list[str]], ...] = (
                ("recipient", keys[DEMO_RECIPIENT["code"]], seconds, []),
                ("operators", ADMIN_KEY, seconds, ["--exclude-name-regex", DESTRUCTIVE_REGEX]),
                ("provider", keys[DEMO_PROVIDER["code"]], seconds, []),
                (
                    "operators-destructive",
                    ADMIN_KEY,
                    max(seconds // 4, 5),
                    ["--include-name-regex", DESTRUCTIVE_REGEX],
                ),
            )
            for who, key, budget, selection in runs:
                print(f"--- schemathesis as {who} ({budget} s) ---", flush=True)
                report = out / f"{who}.ndjson"
                failed = schemathesis(hub.gateway_url, key, config, report, budget, selection) != 0
                if not still_authenticated(hub.gateway_url, key):
                    print(f"the {who} key stopped working during its run", file=sys.stderr)
                    failed = True
                failures += failed
            crashed = [s.name for s in hub.services.values() if not s.alive()]
            if crashed:
                print(f"services that died: {crashed}", file=sys.stderr)
                failures += 1
        finally:
            hub.stop()
            if server:
                postgres_databases(server, create=False)
    if failures:
        print(f"{failures} failing run(s); service logs in {log}", file=sys.stderr)
        problems = [line for line in log.read_text().splitlines() if '"level": "error"' in line]
        print("\n".join(problems[-40:]), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
