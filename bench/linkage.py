"""Person linkage: its cost and its quality on the seeded synthetic cohort.

``python -m bench.linkage`` generates ``CSP_BENCH_LINKAGE_PEOPLE`` people (default 20,000, a
PPO / IOM cohort of a tenth of them), pushes probation's cohort and OASys assessments, trains the
model on them, pushes the police offences (linked as they arrive: these are the known people),
stores the drug service's treatment episodes unlinked (at most ``CSP_BENCH_LINKAGE_INCOMING`` of
them), and then links those incoming records twice in the same run: the exact-identifier pass
alone (the baseline, rolled back) and the whole linkage (exact, then Splink). It reports
records/s of each, peak RSS of the linking process, and pairwise precision and recall of every
link an incoming record takes part in, against the generator's truth.

The database is built in a forked child, so the parent's peak RSS is the linkage's own (the
generator's millions of rows never sit in it). ``CSP_BENCH_LINKAGE_SCALE=issue`` asks for the
issue's size: 100,000 incoming records against 1,000,000 known people (2,250,000 people
generated, of whom the offenders are known); there the offences are linked by the exact pass
alone while the database is built (each carries its PNC ID), Splink runs in passes of
``CSP_BENCH_LINKAGE_CHUNK`` records (default 5,000) with DuckDB bounded to 2 GB and spilling to
disk. Long (tens of minutes here): opt in. ``CSP_BENCH_LINKAGE_DATABASE=PATH`` builds the
database there and keeps it (or, when it exists, links in it without building; it is changed by
the run, so a copy of it serves a second run).
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import distinct, func, select

from bench.results import peak_rss_mb, record
from scripts.synthetic_cohort import generate
from services.ingest.instants import utc_now
from services.ingest.linkage import link_records
from services.ingest.linkage_fields import LinkageConfig
from services.ingest.linkage_model import train
from services.ingest.models import Base
from services.ingest.service import PushOptions, push
from services.ingest.tables import LINK, RECORD
from shared.catalogue import load_catalogue
from shared.db import make_engine
from shared.validation import compile_dataset

SCALE = os.environ.get("CSP_BENCH_LINKAGE_SCALE", "")
ISSUE = SCALE == "issue"
PEOPLE = 2_250_000 if ISSUE else int(os.environ.get("CSP_BENCH_LINKAGE_PEOPLE", "20000"))
INCOMING_MAX = 100_000 if ISSUE else int(os.environ.get("CSP_BENCH_LINKAGE_INCOMING", "0"))
CHUNK = int(os.environ.get("CSP_BENCH_LINKAGE_CHUNK", "5000")) if ISSUE else None
CONFIG = LinkageConfig(key="bench-linkage-key-not-for-production", chunk_records=CHUNK)
KNOWN = (("offender-cohort", "probation"), ("oasys-assessment", "probation"))
LATER = (("offender-offence", "police"),)
INCOMING = (("drug-treatment", "drugs"),)


def _push(engine: Any, dataset: str, provider: str, rows: list[dict[str, Any]], link: bool) -> None:
    compiled = compile_dataset(load_catalogue()[dataset])
    options = PushOptions(provider=provider, linkage=CONFIG if link else None)
    outcome = push(engine, compiled, iter(enumerate(rows, start=1)), options)
    assert outcome.rejected == 0, outcome.errors[:3]


def _exact_only(engine: Any, dataset: str) -> None:
    """Link a dataset's stored records by the exact pass alone, a chunk at a time."""
    catalogue = load_catalogue()
    after = 0
    while True:
        with engine.begin() as connection:
            rows = connection.execute(
                select(RECORD.c.id, RECORD.c.provider, RECORD.c.dataset, RECORD.c.data)
                .where(RECORD.c.dataset == dataset, RECORD.c.id > after)
                .order_by(RECORD.c.id)
                .limit(50_000)
            ).all()
            if not rows:
                return
            link_records(connection, catalogue, list(rows), CONFIG, utc_now(), False)
        after = rows[-1].id


def build(path: str) -> None:
    """The database the parent links in: known people linked, incoming records stored, and the
    generator's truth of every record in a ``bench_truth`` table."""
    started = time.perf_counter()
    cohort = generate(people=PEOPLE, cohort=max(PEOPLE // 10, 50), seed=2024)
    print(f"generated {PEOPLE:,} people in {time.perf_counter() - started:.1f} s", flush=True)
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    for dataset, provider in KNOWN:
        _push(engine, dataset, provider, cohort.records[dataset], link=True)
    train(engine, CONFIG)
    for dataset, provider in LATER:
        _push(engine, dataset, provider, cohort.records[dataset], link=not ISSUE)
        if ISSUE:
            _exact_only(engine, dataset)
    for dataset, provider in INCOMING:
        episodes = cohort.records[dataset]
        if INCOMING_MAX:
            episodes = episodes[:INCOMING_MAX]
        _push(engine, dataset, provider, episodes, link=False)
    engine.dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE bench_truth (dataset TEXT, source_ref TEXT, person INT)")
        connection.executemany(
            "INSERT INTO bench_truth VALUES (?, ?, ?)",
            ((d, ref, person) for (d, ref), person in cohort.truth.items()),
        )
        connection.execute("CREATE INDEX ix_bench_truth ON bench_truth (dataset, source_ref)")
    print(f"database built in {time.perf_counter() - started:.1f} s", flush=True)


def _pairs(groups: Counter[Any], incoming: Counter[Any]) -> int:
    """Pairs within each group that involve at least one incoming record."""
    return sum(
        n * (n - 1) // 2 - (n - incoming[g]) * (n - incoming[g] - 1) // 2 for g, n in groups.items()
    )


def quality(path: str) -> dict[str, Any]:
    """Pairwise precision and recall over the pairs an incoming record takes part in."""
    names = tuple(d for d, _ in INCOMING)
    query = (
        "SELECT l.person_id, t.person, r.dataset IN ({}) FROM record r "
        "JOIN person_link l ON l.record_id = r.id "
        "JOIN bench_truth t ON t.dataset = r.dataset AND t.source_ref = r.source_ref"
    ).format(",".join("?" * len(names)))
    found: Counter[Any] = Counter()
    true: Counter[Any] = Counter()
    both: Counter[Any] = Counter()
    found_in: Counter[Any] = Counter()
    true_in: Counter[Any] = Counter()
    both_in: Counter[Any] = Counter()
    with sqlite3.connect(path) as connection:
        for assigned, truth, is_incoming in connection.execute(query, names):
            found[assigned] += 1
            true[truth] += 1
            both[assigned, truth] += 1
            if is_incoming:
                found_in[assigned] += 1
                true_in[truth] += 1
                both_in[assigned, truth] += 1
    pairs_found, pairs_true = _pairs(found, found_in), _pairs(true, true_in)
    hits = _pairs(both, both_in)
    return {
        "pairs_found": pairs_found,
        "pairs_true": pairs_true,
        "precision": round(hits / pairs_found, 4) if pairs_found else 1.0,
        "recall": round(hits / pairs_true, 4) if pairs_true else 1.0,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.environ.get("CSP_BENCH_LINKAGE_DATABASE") or str(Path(folder) / "ingest.db")
        if not Path(path).exists():
            child = multiprocessing.get_context("fork").Process(target=build, args=(path,))
            child.start()
            child.join()
            assert child.exitcode == 0, f"building the database failed ({child.exitcode})"
        engine = make_engine(f"sqlite:///{path}")
        catalogue = load_catalogue()
        with engine.connect() as connection:
            known = connection.execute(select(func.count(distinct(LINK.c.person_id)))).scalar()
            incoming = connection.execute(
                select(RECORD.c.id, RECORD.c.provider, RECORD.c.dataset, RECORD.c.data).where(
                    RECORD.c.dataset.in_([d for d, _ in INCOMING])
                )
            ).all()
        count = len(incoming)
        print(f"{count:,} incoming records against {known:,} known people", flush=True)
        with engine.connect() as connection, connection.begin() as transaction:
            began = time.perf_counter()
            link_records(connection, catalogue, list(incoming), CONFIG, utc_now(), False)
            exact_seconds = time.perf_counter() - began
            transaction.rollback()
        print(f"exact pass alone: {exact_seconds:.1f} s", flush=True)
        with engine.begin() as connection:
            began = time.perf_counter()
            link_records(connection, catalogue, list(incoming), CONFIG, utc_now())
            full_seconds = time.perf_counter() - began
        print(f"whole linkage: {full_seconds:.1f} s", flush=True)
        peak = peak_rss_mb()
        engine.dispose()
        found = quality(path)
    sizes: dict[str, Any] = {
        "people": PEOPLE,
        "known_people": known,
        "incoming": count,
        "chunk_records": CONFIG.chunk_records,
        "measured_under": "shared 2 cores",
    }
    record(
        "linkage_records_per_s",
        count / full_seconds,
        "records/s",
        baseline=count / exact_seconds,
        **sizes,
    )
    record("linkage_precision", found["precision"], "ratio", baseline=1.0, target=0.98, **sizes)
    record("linkage_recall", found["recall"], "ratio", baseline=1.0, target=0.98, **sizes)
    record(
        "linkage_peak_rss_mb",
        peak,
        "MiB",
        baseline=4096,
        target=1.0,
        higher_is_better=False,
        **sizes,
    )


if __name__ == "__main__":
    main()
