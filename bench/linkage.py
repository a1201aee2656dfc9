"""Person linkage: its cost and its quality on the seeded synthetic cohort.

``python -m bench.linkage`` generates ``CSP_BENCH_LINKAGE_PEOPLE`` people (default 20,000, a
PPO / IOM cohort of a tenth of them), pushes probation's cohort and OASys assessments, trains the
model on them, pushes the police offences (all linked as they arrive: these are the known
people), stores the drug service's treatment episodes unlinked (at most
``CSP_BENCH_LINKAGE_INCOMING`` of them), and then links those incoming records twice in the same
run: the exact-identifier pass alone (the baseline, rolled back) and the whole linkage (exact,
then Splink). It reports records/s of each, peak RSS, and pairwise precision and recall of every
link against the generator's truth. ``CSP_BENCH_LINKAGE_SCALE=issue`` asks for the issue's size,
100,000 incoming records against 1,000,000 people: long (hours here), opt in.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import distinct, func, select

from bench.results import peak_rss_mb, record
from scripts.synthetic_cohort import generate
from services.ingest.linkage import LINK, LinkageConfig, link_records, pair_quality, train
from services.ingest.models import Base
from services.ingest.service import PushOptions, push
from services.ingest.service_sql import RECORD, utc_now
from shared.catalogue import load_catalogue
from shared.db import make_engine
from shared.validation import compile_dataset

SCALE = os.environ.get("CSP_BENCH_LINKAGE_SCALE", "")
PEOPLE = 1_000_000 if SCALE == "issue" else int(os.environ.get("CSP_BENCH_LINKAGE_PEOPLE", "20000"))
INCOMING_MAX = (
    100_000 if SCALE == "issue" else int(os.environ.get("CSP_BENCH_LINKAGE_INCOMING", "0"))
)
CONFIG = LinkageConfig(key="bench-linkage-key-not-for-production")
KNOWN = (("offender-cohort", "probation"), ("oasys-assessment", "probation"))
LATER = (("offender-offence", "police"),)
INCOMING = (("drug-treatment", "drugs"),)


def _push(engine: Any, dataset: str, provider: str, rows: list[dict[str, Any]], link: bool) -> None:
    compiled = compile_dataset(load_catalogue()[dataset])
    options = PushOptions(provider=provider, linkage=CONFIG if link else None)
    outcome = push(engine, compiled, iter(enumerate(rows, start=1)), options)
    assert outcome.rejected == 0, outcome.errors[:3]


def main() -> None:
    started = time.perf_counter()
    cohort = generate(people=PEOPLE, cohort=max(PEOPLE // 10, 50), seed=2024)
    print(f"generated {PEOPLE:,} people in {time.perf_counter() - started:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'ingest.db'}")
        Base.metadata.create_all(engine)
        for dataset, provider in KNOWN:
            _push(engine, dataset, provider, cohort.records[dataset], link=True)
        train(engine, CONFIG)
        for dataset, provider in LATER:
            _push(engine, dataset, provider, cohort.records[dataset], link=True)
        for dataset, provider in INCOMING:
            episodes = cohort.records[dataset]
            if INCOMING_MAX:
                episodes = episodes[:INCOMING_MAX]
            _push(engine, dataset, provider, episodes, link=False)
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
        with engine.begin() as connection:
            began = time.perf_counter()
            link_records(connection, catalogue, list(incoming), CONFIG, utc_now())
            full_seconds = time.perf_counter() - began
        with engine.connect() as connection:
            rows = connection.execute(
                select(RECORD.c.dataset, RECORD.c.source_ref, LINK.c.person_id).join(
                    LINK, LINK.c.record_id == RECORD.c.id
                )
            ).all()
        engine.dispose()
    assigned = {i: person for i, (_, _, person) in enumerate(rows)}
    truth = {i: str(cohort.truth[(d, ref)]) for i, (d, ref, _) in enumerate(rows)}
    quality = pair_quality(assigned, truth)
    sizes: dict[str, Any] = {
        "people": PEOPLE,
        "known_people": known,
        "incoming": count,
        "measured_under": "shared 2 cores",
    }
    record(
        "linkage_records_per_s",
        count / full_seconds,
        "records/s",
        baseline=count / exact_seconds,
        **sizes,
    )
    record("linkage_precision", quality["precision"], "ratio", baseline=1.0, target=0.98, **sizes)
    record("linkage_recall", quality["recall"], "ratio", baseline=1.0, target=0.98, **sizes)
    record(
        "linkage_peak_rss_mb",
        peak_rss_mb(),
        "MiB",
        baseline=4096,
        target=1.0,
        higher_is_better=False,
        **sizes,
    )


if __name__ == "__main__":
    main()
