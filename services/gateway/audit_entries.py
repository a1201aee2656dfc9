"""An audit entry as stored: the audit tables, the entry's columns and how client-given values
fit them, the UTC instants entries carry, and the entries and views the gateway makes of them
besides a request's own (a redaction's entry, a provider's view)."""

from __future__ import annotations

import time
from typing import Any

from services.gateway import chain
from services.gateway.models import (
    AuditCheckpoint,
    AuditEntry,
    AuditHead,
    AuditSigningKey,
    AuditTreeNode,
)
from shared.db import table_of

ENTRY = table_of(AuditEntry)
HEAD = table_of(AuditHead)
CHECKPOINT = table_of(AuditCheckpoint)
SIGNING_KEY = table_of(AuditSigningKey)
TREE_NODE = table_of(AuditTreeNode)

ENTRY_COLUMNS = [*chain.CONTENT_FIELDS, "digest", "prev_hash", "hash"]

READ_COLUMNS = [*ENTRY_COLUMNS, "redacted_at"]

# What a redaction keeps of an entry besides its digest and links: when, and how it ended.
KEPT_WHEN_REDACTED = {"seq", "at", "phase", "outcome"}

# Clients choose some values (level, purpose, method...); PostgreSQL refuses one over its column.
COLUMN_LENGTHS: list[tuple[int, int]] = [
    (chain.CONTENT_FIELDS.index(column.name), length)
    for column in ENTRY.columns
    if isinstance(length := getattr(column.type, "length", None), int)
    and column.name in chain.CONTENT_FIELDS
]

PROVIDERS_AT = chain.CONTENT_FIELDS.index("providers")


_SECOND: list[Any] = [None, ""]  # the last whole second formatted, reused within that second


def now_iso() -> str:
    """UTC now as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; called for every request, so the formatting of
    the whole second is done once a second."""
    now = time.time()
    second = int(now)
    if second != _SECOND[0]:
        _SECOND[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_SECOND[1]}.{int((now - second) * 1_000_000):06d}Z"


def outcome_of(status: int | None, phase: str) -> str:
    if phase == "intent":
        return "pending"
    if status in (401, 403):
        return "denied"
    if status is not None and status < 400:
        return "allowed"
    return "error"


def fit_values(values: list[Any]) -> list[Any]:
    """An entry's values (in ``chain.CONTENT_FIELDS`` order) as stored: a client-given value loses
    NUL (PostgreSQL text cannot hold it) and is cut to its column's length."""
    for at, length in COLUMN_LENGTHS:
        value = values[at]
        if value.__class__ is str and (len(value) > length or "\x00" in value):
            values[at] = value.replace("\x00", "")[:length]
    return values


def providers_column(providers: list[str] | None) -> str | None:
    return None if providers is None else "," + ",".join(providers) + ","


def providers_list(column: str | None) -> list[str] | None:
    return None if column is None else [p for p in column.split(",") if p]


def entry_dict(row: Any) -> dict[str, Any]:
    entry = dict(row._mapping)
    entry["providers"] = providers_list(entry.get("providers"))
    return entry


def provider_view(entry: dict[str, Any], agency: str, agreements: set[str]) -> dict[str, Any]:
    """An entry as a provider sees it: who read its data, and nothing of other providers' sharing
    (the providers list narrowed to itself, an agreement it is not party to left out). The digest
    and hashes still cover the whole entry as stored."""
    shown = dict(entry)
    if shown.get("providers") is not None:
        shown["providers"] = [p for p in shown["providers"] if p == agency]
    if shown.get("agreement") is not None and shown["agreement"] not in agreements:
        shown["agreement"] = None
        shown["version"] = None
    return shown


def redaction_entry(seq: int, agency: str, key_id: str) -> dict[str, Any]:
    """The entry that records an operator's redaction of entry ``seq``."""
    return {
        "at": now_iso(),
        "request_id": f"{chain.REDACT_PREFIX}{seq}",
        "phase": "complete",
        "agency": agency,
        "key_id": key_id,
        "method": "POST",
        "route": "/v1/audit/{seq}/redact",
        "dataset": None,
        "action": chain.REDACT,
        "level": None,
        "purpose": None,
        "rule": None,
        "agreement": None,
        "version": None,
        "providers": None,
        "status": 200,
        "outcome": "allowed",
        "records": 1,
    }
