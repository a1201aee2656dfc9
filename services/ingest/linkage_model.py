"""The probabilistic model linkage scores pairs with: a Splink (DuckDB) model trained on the hub's
own records (``train``: u-probabilities by random sampling, m from the pairs the exact pass already
linked), the one in force, and the scored pairs of a chunk (``predict``)."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from services.ingest.instants import iso, utc_now
from services.ingest.linkage_fields import COMPARED, KEYS, LinkageConfig, swapped_dob
from services.ingest.tables import LINK, MODEL, inserted_id
from shared.db import in_read_transaction, in_write_transaction
from shared.errors import ProblemError

# Candidate pairs: the same date of birth (or transposed), surname and forename, forename and
# birth year, or forename and postcode district; ``fresh`` keeps only pairs with a new record.
_BLOCKS = (
    "l.dob = r.dob",
    "l.dob = r.dob_swapped",
    "l.name_key = r.name_key",
    "l.forename_year = r.forename_year",
    "l.district = r.district AND l.forename = r.forename",
)


def _settings() -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator

    dob = cl.CustomComparison(
        output_column_name="dob",
        comparison_levels=[
            cll.NullLevel("dob"),
            cll.ExactMatchLevel("dob"),
            cll.ColumnsReversedLevel("dob", "dob_swapped").configure(
                label_for_charts="day and month transposed"
            ),
            cll.DamerauLevenshteinLevel("dob", 1),
            cll.ElseLevel(),
        ],
    )
    surname = cl.CustomComparison(
        output_column_name="surname",
        comparison_levels=[
            cll.NullLevel("surname"),
            cll.ExactMatchLevel("surname"),
            cll.JaroWinklerLevel("surname", 0.92),
            # one slip, however short the name (cox / cxo, ali / ail)
            cll.DamerauLevenshteinLevel("surname", 1),
            cll.JaroWinklerLevel("surname", 0.8),
            cll.ElseLevel(),
        ],
    )
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[
            surname,
            cl.JaroWinklerAtThresholds("forename", [0.92, 0.8]),
            dob,
            cl.ExactMatch("district"),
        ],
        blocking_rules_to_generate_predictions=[{"blocking_rule": rule} for rule in _BLOCKS],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def _table(rows: Iterable[dict[str, Any]]) -> Any:
    import pyarrow as pa

    columns = ("unique_id", "label", "fresh", *COMPARED, "dob_swapped", *KEYS)
    listed = list(rows)
    return pa.table({name: [row.get(name) for row in listed] for name in columns})


def comparison_row(unique_id: str, fields: Mapping[Any, Any], **extra: Any) -> dict[str, Any]:
    return {
        "unique_id": unique_id,
        **{name: fields.get(name) for name in (*COMPARED, *KEYS)},
        "dob_swapped": swapped_dob(fields.get("dob")),
        **extra,
    }


def train(engine: Engine, config: LinkageConfig, seed: int = 42) -> dict[str, Any]:
    """Train the model on the records the hub holds and make it the one in force.

    A fit takes minutes, so it holds no transaction: the records are read on a connection of their
    own, the model kept in a write transaction of its own (on SQLite, queued with the others)."""
    rows = in_read_transaction(engine, training_rows)
    sizes: dict[int, int] = {}
    for row in rows:
        sizes[row["label"]] = sizes.get(row["label"], 0) + 1
    labelled = sum(n * (n - 1) // 2 for n in sizes.values())
    if len(rows) < config.min_training_records or labelled == 0:
        raise ProblemError(
            409,
            f"Training needs at least {config.min_training_records} records with names and "
            "some people already linked on an exact identifier.",
            slug="linkage-not-enough-data",
            records=len(rows),
            labelled_pairs=labelled,
        )
    model = _fit(rows, labelled, config.duckdb_memory, seed)
    moment = iso(utc_now())
    model_id = in_write_transaction(engine, keep_model, model, moment, len(rows), labelled)
    return {
        "model": model_id,
        "trained_at": moment,
        "records": len(rows),
        "labelled_pairs": labelled,
    }


def training_rows(connection: Connection) -> list[dict[str, Any]]:
    """Every linked record with a surname, labelled with its person (the exact pass's links)."""
    return [
        comparison_row(f"r{row.record_id}", row._mapping, label=row.person_id)
        for row in connection.execute(
            select(LINK).where(LINK.c.surname.is_not(None)).order_by(LINK.c.record_id)
        )
    ]


def _fit(rows: list[dict[str, Any]], labelled: int, memory: str, seed: int) -> dict[str, Any]:
    from splink import DuckDBAPI, Linker

    api = DuckDBAPI(_duckdb(memory))
    linker = Linker(api.register(_table(rows)), _settings(), log_level=logging.ERROR)
    linker.training.estimate_u_using_random_sampling(max_pairs=2e5, seed=seed)
    linker.training.estimate_m_from_label_column("label")
    model: dict[str, Any] = linker.misc.save_model_to_json()
    total_pairs = len(rows) * (len(rows) - 1) // 2
    model["probability_two_random_records_match"] = max(labelled / total_pairs, 1e-9)
    return model


def keep_model(
    connection: Connection, model: dict[str, Any], moment: str, records: int, labelled: int
) -> int:
    """Store a trained model: the newest is the one in force."""
    return inserted_id(
        connection.execute(
            insert(MODEL).values(
                trained_at=moment, records=records, labelled_pairs=labelled, model=json.dumps(model)
            )
        )
    )


def current_model(connection: Connection) -> dict[str, Any] | None:
    row = connection.execute(select(MODEL.c.model).order_by(MODEL.c.id.desc()).limit(1)).first()
    return None if row is None else dict(json.loads(row.model))


def _duckdb(memory: str) -> Any:
    """An in-memory DuckDB bounded to ``memory`` that spills to a private temporary folder."""
    import duckdb

    connection = duckdb.connect(":memory:")
    spill = Path(tempfile.gettempdir()) / "csp-linkage-duckdb"
    spill.mkdir(mode=0o700, exist_ok=True)
    connection.execute(f"SET memory_limit = '{memory}'")
    connection.execute(f"SET temp_directory = '{spill}'")
    connection.execute("SET preserve_insertion_order = false")
    return connection


def predict(
    model: dict[str, Any], rows: list[dict[str, Any]], min_weight: float, memory: str = "2GB"
) -> list[tuple[str, str, float]]:
    """Scored pairs (unique id, unique id, match weight) with at least one fresh record."""
    from splink import DuckDBAPI, Linker

    settings = dict(model)
    settings["blocking_rules_to_generate_predictions"] = [
        {"blocking_rule": f"({rule}) AND (l.fresh OR r.fresh)"} for rule in _BLOCKS
    ]
    api = DuckDBAPI(_duckdb(memory))
    linker = Linker(api.register(_table(rows)), settings, log_level=logging.ERROR)
    scored = linker.inference.predict(threshold_match_weight=min_weight)
    relation = scored.as_duckdbpyrelation()
    pairs = relation.select("unique_id_l, unique_id_r, match_weight").fetchall()
    return [(str(a), str(b), float(w)) for a, b, w in pairs]
