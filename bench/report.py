"""Partnership report benchmark: the quarter's figures over 200,000 stored records.

Baseline: a bare scan of the same rows and columns the report reads (no JSON decoding, no
tallies), in the same run on the same database. The figure is the report's speed as a share of
that scan's (baseline time / report time).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from bench.results import record
from scripts.demo import demo_records
from services.ingest.models import Base
from services.ingest.report import parse_quarter, provider_rows
from services.ingest.service import PushOptions, push
from services.ingest.tables import RECORD
from shared.catalogue import load_catalogue
from shared.db import in_read_transaction, make_engine
from shared.validation import compile_dataset

RECORDS = 200_000
ROUNDS = 3


def main() -> None:
    catalogue = load_catalogue()
    compiled = compile_dataset(catalogue["police-crime"])
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'ingest.db'}")
        Base.metadata.create_all(engine)
        rows = demo_records(RECORDS, seed=11)
        for provider in ("bench-police-a", "bench-police-b"):
            push(engine, compiled, iter(enumerate(rows, start=1)), PushOptions(provider=provider))
        quarter = parse_quarter("2024-Q1")
        columns = ("provider", "dataset", "received_at", "occurred_at", "location_source", "data")
        scan = select(*(RECORD.c[name] for name in columns)).where(
            RECORD.c.occurred_at >= "2024-01-01", RECORD.c.occurred_at < "2024-04-01"
        )
        report_times, scan_times = [], []
        for _ in range(ROUNDS):  # alternate, so neither side has the warmer cache every time
            started = time.perf_counter()
            with engine.connect() as connection:
                scanned = sum(1 for _row in connection.execute(scan))
            scan_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            report_rows = in_read_transaction(engine, provider_rows, catalogue, quarter, None)
            report_times.append(time.perf_counter() - started)
        assert sum(r["records"] for r in report_rows) == scanned
        engine.dispose()
    best_report, best_scan = min(report_times), min(scan_times)
    record(
        "report_quarter_200k_records_s",
        best_report,
        "s",
        baseline=best_scan,
        target=None,
        higher_is_better=False,
        records_in_quarter=scanned,
        rounds=ROUNDS,
    )


if __name__ == "__main__":
    main()
