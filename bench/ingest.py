"""Ingest push path vs a bare insert of the same rows into the same table.

``python -m bench.ingest`` writes a 1,000,000-row police-crime CSV (``CSP_BENCH_INGEST_ROWS``),
pushes it through the push path (streamed CSV parse, validation, WGS84 → BNG, bulk upsert, outbox,
batch) and, in the same run, inserts the same stored rows with a bare SQLAlchemy Core
``executemany`` (same schema, indexes and chunk size) on SQLite, and with ``COPY`` on PostgreSQL
when it answers. Peak RSS is measured in a child process that runs only the push.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.results import peak_rss_mb, record
from services.ingest.bodies import csv_header, csv_rows
from services.ingest.identity import revision_range
from services.ingest.models import Base
from services.ingest.service import PushOptions, check_header, push
from services.ingest.tables import RECORD
from shared.catalogue import load_catalogue
from shared.db import make_engine
from shared.validation import compile_dataset

ROWS = int(os.environ.get("CSP_BENCH_INGEST_ROWS", "1000000"))
CHUNK = 2000
PG_URL = os.environ.get("CSP_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CATEGORIES = ["Burglary", "Robbery", "Vehicle crime", "Criminal damage and arson"]


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as handle:
        handle.write("source_ref,occurred_at,category,latitude,longitude,offence_code\n")
        for i in range(rows):
            handle.write(
                f"ref-{i},2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}T{i % 24:02d}:15:00Z,"
                f"{CATEGORIES[i % 4]},{53.4 + (i % 997) / 10000:.5f},"
                f"{-2.3 + (i % 991) / 10000:.5f},{28 + i % 3}\n"
            )


def bare_rows(rows: int, seq: int) -> Iterator[list[dict[str, Any]]]:
    """The rows the push path stores, built cheaply, chunk by chunk."""
    base, _ = revision_range(seq)
    for start in range(0, rows, CHUNK):
        yield [
            {
                "provider": "bench",
                "dataset": "police-crime",
                "source_ref": f"ref-{i}",
                "revision": base | (i + 1),
                "batch_seq": seq,
                "first_batch": seq,
                "received_at": "2026-01-01T00:00:00Z",
                "occurred_at": "2024-01-01T10:15:00Z",
                "easting": 383000.0 + i % 1000,
                "northing": 398000.0,
                "location_source": "coordinates",
                "late": True,
                "corrections": 0,
                "unlisted": None,
                "data": json.dumps(
                    {
                        "source_ref": f"ref-{i}",
                        "occurred_at": "2024-01-01T10:15:00Z",
                        "category": CATEGORIES[i % 4],
                        "latitude": 53.4,
                        "longitude": -2.3,
                        "offence_code": str(28 + i % 3),
                    },
                    separators=(",", ":"),
                ),
            }
            for i in range(start, min(start + CHUNK, rows))
        ]


def fresh_engine(url: str) -> Any:
    engine = make_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    return engine


def run_push(url: str, csv_path: Path) -> tuple[float, dict[str, Any]]:
    engine = fresh_engine(url)
    compiled = compile_dataset(load_catalogue()["police-crime"])
    started = time.perf_counter()
    with csv_path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as tx:
        header, reader = csv_header(tx)
        check_header(compiled, header, None)
        options = PushOptions(provider="bench", chunk_rows=CHUNK, max_rows=ROWS + 1)
        outcome = push(engine, compiled, csv_rows(header, reader), options)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, {"accepted": outcome.accepted, "rejected": outcome.rejected}


def run_executemany(url: str) -> float:
    engine = fresh_engine(url)
    started = time.perf_counter()
    with engine.begin() as connection:
        for chunk in bare_rows(ROWS, 1):
            connection.execute(RECORD.insert(), chunk)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def run_copy(url: str) -> float:
    engine = fresh_engine(url)
    columns = [c.name for c in RECORD.columns if c.name != "id"]
    started = time.perf_counter()
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(f"COPY record ({', '.join(columns)}) FROM STDIN") as copy:
            for chunk in bare_rows(ROWS, 1):
                for row in chunk:
                    copy.write_row([row[c] for c in columns])
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def bench_database(create: bool, name: str = "csp_bench_ingest") -> str | None:
    """A database of its own on the PostgreSQL server (None when it does not answer)."""
    try:
        admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            if create:
                connection.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
    except Exception:
        return None
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def child(url: str, csv_path: str) -> None:
    """Run only the push and print its time and this process's peak RSS."""
    elapsed, counts = run_push(url, Path(csv_path))
    print(json.dumps({"seconds": elapsed, "rss_mb": peak_rss_mb(), **counts}))


def measured_push(url: str, csv_path: Path) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--child", url, str(csv_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def http_push(folder: str, csv_path: Path) -> dict[str, Any]:
    """Push the CSV over HTTP to a real ingest process; its peak RSS from the kernel (VmHWM)."""
    import httpx

    from scripts.hub import REPO, HubKeys, free_port
    from shared.tokens import issue_token

    keys = HubKeys.generate()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CSP_")}
    env.update(
        **keys.environment("ingest"),
        CSP_INGEST_PORT=str(port),
        CSP_INGEST_DATABASE_URL=f"sqlite:///{folder}/http.db",
        CSP_INGEST_RELAY_ENABLED="false",
        CSP_INGEST_PURGE_ENABLED="false",
        CSP_INGEST_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO),
    )
    process = subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=REPO, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        claims = {"sub": "bench", "roles": ["agency"], "action": "push", "dataset": "police-crime"}
        token = issue_token(keys.token_key("gateway"), claims, ttl_seconds=3600)
        started = time.perf_counter()
        with csv_path.open("rb") as body:
            answer = httpx.post(
                base + "/v1/datasets/police-crime/records",
                content=body,
                headers={"Content-Type": "text/csv", "CSP-Internal-Token": token},
                timeout=1800,
            )
        elapsed = time.perf_counter() - started
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak_kb = int(
            next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]
        )
        answer.raise_for_status()
        return {"seconds": elapsed, "rss_mb": peak_kb / 1024, **answer.json()}
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "crimes.csv"
        write_csv(csv_path, ROWS)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"{ROWS:,} rows, {size_mb:.0f} MB CSV", flush=True)
        sqlite_url = f"sqlite:///{folder}/bench.db"
        pushed = measured_push(sqlite_url, csv_path)
        assert pushed["accepted"] == ROWS, pushed
        bare = run_executemany(sqlite_url)
        record(
            "ingest_push_sqlite_rows_per_s",
            ROWS / pushed["seconds"],
            "rows/s",
            baseline=ROWS / bare,
            target=0.3,
            baseline_name="bare SQLAlchemy Core executemany, same table and chunk size",
        )
        record(
            "ingest_push_peak_rss_mb",
            pushed["rss_mb"],
            "MiB",
            baseline=500.0,
            target=1.0,
            higher_is_better=False,
            baseline_name="the 500 MB limit",
        )
        over_http = http_push(folder, csv_path)
        assert over_http["accepted"] == ROWS, {k: over_http[k] for k in ("accepted", "rejected")}
        record(
            "ingest_http_push_peak_rss_mb",
            over_http["rss_mb"],
            "MiB",
            baseline=500.0,
            target=1.0,
            higher_is_better=False,
            baseline_name="the 500 MB limit, for the ingest process receiving the CSV over HTTP",
            rows_per_s=round(ROWS / over_http["seconds"]),
        )
        pg_url = bench_database(create=True)
        if pg_url is not None:
            pushed_pg = measured_push(pg_url, csv_path)
            copied = run_copy(pg_url)
            record(
                "ingest_push_postgresql_rows_per_s",
                ROWS / pushed_pg["seconds"],
                "rows/s",
                baseline=ROWS / copied,
                target=0.5,
                baseline_name="COPY of the same rows into the same table",
            )
            bench_database(create=False)
        else:
            print("PostgreSQL does not answer: skipped the COPY comparison", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
