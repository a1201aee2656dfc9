"""The partnership's quarterly information-sharing report, as plain functions over the store.

The 2007 Regulations (CDA s17A) set quarterly information periods, each due by the end of the
following one. Per provider and dataset the report counts the accepted records whose
``occurred_at`` falls in the quarter, when they arrived, whether that was by the due date, how
complete and how well located they are, and the rows its pushes in the quarter refused (and
why). Agreements come
from the agreements service; ``maturity`` grades each provider-recipient partnership from both.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import msgspec
from sqlalchemy import Connection, func, select

from services.ingest.tables import BATCH, RECORD, REJECTION
from shared.catalogue import Dataset

QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
QUARTER_PATTERN = QUARTER.pattern
# Records before 1900 are refused at push; the due date of 9998-Q4 is still a date.
FIRST_YEAR, LAST_YEAR = 1900, 9998
REASONS_SHOWN = 3
# What "monthly geocoded feeds with quality figures" asks of every shared dataset.
MONTHLY_FEED_MONTHS = 3
GEOCODED_AT_LEAST = 0.9
REQUIRED_COMPLETE_AT_LEAST = 0.95
MATURITY_LEVELS = (
    "no agreement in force",
    "agreement signed and in force",
    "prescribed datasets flowing quarterly, on time",
    "monthly geocoded feeds with quality figures",
    "case-level sharing under a specific agreement",
)
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class Quarter:
    label: str
    start: date
    end: date  # the quarter's last day
    due: date  # the last day of the following quarter

    @property
    def months(self) -> list[str]:
        return [f"{self.start.year}-{self.start.month + i:02d}" for i in range(3)]


def _quarter_start(year: int, number: int) -> date:
    return date(year + (number - 1) // 4, (number - 1) % 4 * 3 + 1, 1)


def parse_quarter(label: str) -> Quarter:
    """``2024-Q3`` -> its first and last days and its due date; ValueError if malformed."""
    found = QUARTER.match(label)
    if found is None:
        raise ValueError("must be a quarter like 2024-Q3")
    year, number = int(found.group(1)), int(found.group(2))
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"must be a quarter of a year from {FIRST_YEAR} to {LAST_YEAR}")
    start = _quarter_start(year, number)
    following = _quarter_start(year, number + 1)
    after_following = _quarter_start(year, number + 2)
    return Quarter(label, start, following - timedelta(days=1), after_following - timedelta(days=1))


def _stamp(day: date) -> str:
    """The first instant of ``day`` as stored (UTC ISO text, which sorts as time)."""
    return day.isoformat() + "T00:00:00Z"


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class _Tally:
    records: int = 0
    received_first: str | None = None
    received_last: str | None = None
    geocoded: int = 0
    required_filled: int = 0
    optional_filled: int = 0

    def __post_init__(self) -> None:
        self.receipt_months: set[str] = set()
        self.occurred_months: set[str] = set()

    def add(self, row: Any, required: set[str], optional: set[str]) -> None:
        """Count one stored record of the quarter."""
        self.records += 1
        received = row.received_at
        if self.received_first is None or received < self.received_first:
            self.received_first = received
        if self.received_last is None or received > self.received_last:
            self.received_last = received
        self.receipt_months.add(received[:7])
        self.occurred_months.add(row.occurred_at[:7])
        self.geocoded += row.location_source != "none"
        filled = {name for name, value in _decode(row.data).items() if value not in (None, "")}
        self.required_filled += len(filled & required)
        self.optional_filled += len(filled & optional)

    def row(
        self,
        key: tuple[str, str],
        quarter: Quarter,
        fields: tuple[int, int],
        rejected: int,
        refusals: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The report's row for one provider and dataset (``fields``: required, optional)."""
        due_end = _stamp(quarter.due + timedelta(days=1))
        on_time = None if self.received_last is None else self.received_last < due_end
        return {
            "provider": key[0],
            "dataset": key[1],
            "records": self.records,
            "received_first": self.received_first,
            "received_last": self.received_last,
            "due": quarter.due.isoformat(),
            "on_time": on_time,
            "completeness": {
                "required": _share(self.required_filled, self.records * fields[0]),
                "optional": _share(self.optional_filled, self.records * fields[1]),
            },
            "geocoded": _share(self.geocoded, self.records),
            "months_with_records": sum(m in self.occurred_months for m in quarter.months),
            "receipt_months": len(self.receipt_months),
            "rejected": rejected,
            "rejected_reasons": refusals[:REASONS_SHOWN],
        }


def provider_rows(
    connection: Connection,
    catalogue: dict[str, Dataset],
    quarter: Quarter,
    provider: str | None,
) -> list[dict[str, Any]]:
    """One row per provider and dataset with records in the quarter or rows refused by pushes
    received during it (each refusal counts once, in the quarter it arrived), ``provider`` alone
    if given."""
    start, end = _stamp(quarter.start), _stamp(quarter.end + timedelta(days=1))
    records = select(
        RECORD.c.provider,
        RECORD.c.dataset,
        RECORD.c.received_at,
        RECORD.c.occurred_at,
        RECORD.c.location_source,
        RECORD.c.data,
    ).where(RECORD.c.occurred_at >= start, RECORD.c.occurred_at < end)
    if provider is not None:
        records = records.where(RECORD.c.provider == provider)
    tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    required = {n: {f.name for f in d.fields if f.required} for n, d in catalogue.items()}
    optional = {n: {f.name for f in d.fields if not f.required} for n, d in catalogue.items()}
    for row in connection.execution_options(yield_per=5000).execute(records):
        tallies[(row.provider, row.dataset)].add(
            row, required.get(row.dataset, set()), optional.get(row.dataset, set())
        )
    rejected, reasons = _refusals(connection, start, end, provider)
    out = []
    for key in sorted(set(tallies) | set(reasons) | set(rejected)):
        tally = tallies.get(key) or _Tally()
        refusals = sorted(reasons.get(key, []), key=lambda r: (-r["rows"], str(r["field"])))
        fields = (len(required.get(key[1], ())), len(optional.get(key[1], ())))
        out.append(tally.row(key, quarter, fields, rejected.get(key, 0), refusals))
    return out


Pair = tuple[str, str]


def _refusals(
    connection: Connection, start: str, end: str, provider: str | None
) -> tuple[dict[Pair, int], dict[Pair, list[dict[str, Any]]]]:
    """Per provider and dataset, the rows pushes received in ``[start, end)`` refused, and why."""
    refused = (
        select(
            REJECTION.c.provider,
            REJECTION.c.dataset,
            REJECTION.c.field,
            REJECTION.c.reason,
            func.sum(REJECTION.c.rows),
        )
        .where(REJECTION.c.received_at >= start, REJECTION.c.received_at < end)
        .group_by(REJECTION.c.provider, REJECTION.c.dataset, REJECTION.c.field, REJECTION.c.reason)
    )
    batches = (
        select(BATCH.c.provider, BATCH.c.dataset, func.sum(BATCH.c.rejected))
        .where(BATCH.c.kind == "push", BATCH.c.created_at >= start, BATCH.c.created_at < end)
        .group_by(BATCH.c.provider, BATCH.c.dataset)
    )
    if provider is not None:
        refused = refused.where(REJECTION.c.provider == provider)
        batches = batches.where(BATCH.c.provider == provider)
    rejected = {
        (code, dataset): int(rows or 0)
        for code, dataset, rows in connection.execute(batches)
        if rows
    }
    reasons: dict[Pair, list[dict[str, Any]]] = defaultdict(list)
    for provider_code, dataset, name, reason, rows in connection.execute(refused):
        reasons[(provider_code, dataset)].append(
            {"field": name, "reason": reason, "rows": int(rows)}
        )
    return rejected, reasons


def _monthly(row: dict[str, Any]) -> bool:
    completeness = row["completeness"]["required"] or 0.0
    return (
        row["receipt_months"] >= MONTHLY_FEED_MONTHS
        and (row["geocoded"] or 0.0) >= GEOCODED_AT_LEAST
        and completeness >= REQUIRED_COMPLETE_AT_LEAST
    )


def maturity(rows: list[dict[str, Any]], agreements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The level (0-4, see ``MATURITY_LEVELS``) of every provider-recipient partnership that any
    agreement names; each level needs the ones below it."""
    by_row = {(r["provider"], r["dataset"]): r for r in rows}
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for agreement in agreements:
        for provider in agreement["providers"]:
            for recipient in agreement["recipients"]:
                if provider != recipient:
                    pairs[(provider, recipient)].append(agreement)
    out = []
    for (provider, recipient), named in sorted(pairs.items()):
        active = [a for a in named if a["status"] == "active"]
        shared = sorted({d["dataset"] for a in active for d in a["datasets"]})
        flows = [by_row.get((provider, d)) for d in shared]
        steps = [
            bool(active),
            bool(flows) and all(r is not None and r["records"] and r["on_time"] for r in flows),
            bool(flows) and all(r is not None and _monthly(r) for r in flows),
            any(d["level"] == "personal" for a in active for d in a["datasets"]),
        ]
        level = 0
        while level < len(steps) and steps[level]:
            level += 1
        out.append(
            {
                "provider": provider,
                "recipient": recipient,
                "level": level,
                "label": MATURITY_LEVELS[level],
                "next": MATURITY_LEVELS[level + 1] if level + 1 < len(MATURITY_LEVELS) else None,
                "agreements": [a["id"] for a in active],
                "datasets": shared,
            }
        )
    return out


def _review_due(agreement: dict[str, Any], quarter: Quarter) -> bool:
    """In force or suspended, and past its review date or reaching it by the due date."""
    if agreement["status"] not in ("active", "suspended"):
        return False
    review_by = agreement["review_by"]
    return agreement["review_state"] != "current" or (
        review_by is not None and review_by <= quarter.due.isoformat()
    )


def report(
    quarter: Quarter, rows: list[dict[str, Any]], agreements: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "quarter": quarter.label,
        "from": quarter.start.isoformat(),
        "to": quarter.end.isoformat(),
        "due": quarter.due.isoformat(),
        "rows": rows,
        "agreements": [
            {k: a[k] for k in ("id", "title", "type", "status", "review_by", "review_state")}
            for a in agreements
        ],
        "review_due": [a["id"] for a in agreements if _review_due(a, quarter)],
        "maturity": maturity(rows, agreements),
    }
