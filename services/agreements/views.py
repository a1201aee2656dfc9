"""What clients see of agencies and agreements: plain dictionaries built from plain data."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from services.agreements.decision_log import Usage
from services.agreements.lifecycle import (
    Version,
    governing,
    grace_until,
    in_force,
    iso_utc,
    review_state,
    version_status,
)
from services.agreements.service import StoredAgreement
from shared.http import neutralise


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_utc(moment)


def agreement_view(
    stored: StoredAgreement, now: datetime, grace_days: int, version: Version | None = None
) -> dict[str, Any]:
    agreement = stored.agreement
    shown = version or governing(agreement, now)
    signed = stored.signatures.get(shown.version, {})
    current = in_force(agreement, now)
    grace = grace_until(shown, grace_days)
    view: dict[str, Any] = {
        "id": agreement.id,
        "version": shown.version,
        "status": version_status(agreement, shown, now),
    }
    view.update(stored.terms[shown.version])
    view.update(
        parties=[
            {
                "agency": party,
                "role": shown.role_of(party),
                "signatory": signed[party].signatory if party in signed else None,
                "signed_at": _iso(signed[party].signed_at) if party in signed else None,
            }
            for party in shown.parties
        ],
        signatures=[
            {"agency": agency, "signatory": s.signatory, "signed_at": _iso(s.signed_at)}
            for agency, s in signed.items()
        ],
        pending_signatures=[p for p in shown.parties if p not in signed],
        review={
            "due": shown.review_by.isoformat() if shown.review_by else None,
            "state": review_state(shown, now.date(), grace_days),
            "grace_until": grace.isoformat() if grace else None,
        },
        in_force_version=current.version if current else None,
        latest_version=agreement.latest.version,
        versions=[
            {"version": v.version, "status": version_status(agreement, v, now)}
            for v in agreement.versions
        ],
        created_at=_iso(stored.created_at),
    )
    return view


def party_summary(
    stored: StoredAgreement, agency: str, now: datetime, grace_days: int
) -> dict[str, Any] | None:
    """One line of ``/v1/me``: the version that governs, or the newest one naming the agency."""
    agreement = stored.agreement
    shown = governing(agreement, now)
    if agency not in shown.parties:
        named = [v for v in agreement.versions if agency in v.parties]
        if not named:
            return None
        shown = named[-1]
    return {
        "id": agreement.id,
        "title": shown.title,
        "status": version_status(agreement, shown, now),
        "version": shown.version,
        "role": shown.role_of(agency),
        "datasets": [
            {
                "dataset": g.dataset,
                "level": g.level,
                "fields": None if g.fields is None else list(g.fields),
            }
            for g in shown.datasets
        ],
        "review_state": review_state(shown, now.date(), grace_days),
    }


REGISTER_COLUMNS = (
    "id",
    "version",
    "title",
    "type",
    "status",
    "purpose",
    "legal_basis",
    "providers",
    "recipients",
    "datasets",
    "start",
    "end",
    "review_by",
    "review_state",
    "grace_until",
    "signed",
    "dpia_reference",
    "retention_days",
    "onward_sharing",
    "decisions_allowed",
    "decisions_denied",
    "last_decision_at",
)


def register_rows(
    agreements: Iterable[StoredAgreement],
    usage: Mapping[str, Usage],
    now: datetime,
    grace_days: int,
) -> list[dict[str, Any]]:
    rows = []
    for stored in agreements:
        view = agreement_view(stored, now, grace_days)
        used = usage.get(stored.agreement.id, Usage())
        rows.append(
            {
                "id": view["id"],
                "version": view["version"],
                "title": view["title"],
                "type": view["type"],
                "status": view["status"],
                "purpose": view["purpose"],
                "legal_basis": "; ".join(view["legal_basis"]),
                "providers": "; ".join(view["providers"]),
                "recipients": "; ".join(view["recipients"]),
                "datasets": "; ".join(f"{d['dataset']} ({d['level']})" for d in view["datasets"]),
                "start": view["start"],
                "end": view["end"],
                "review_by": view["review"]["due"],
                "review_state": view["review"]["state"],
                "grace_until": view["review"]["grace_until"],
                "signed": f"{len(view['signatures'])}/{len(view['parties'])}",
                "dpia_reference": view.get("dpia_reference"),
                "retention_days": view["retention_days"],
                "onward_sharing": view["onward_sharing"],
                "decisions_allowed": used.allowed,
                "decisions_denied": used.denied,
                "last_decision_at": _iso(used.last_at),
            }
        )
    return rows


def register_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=REGISTER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # A leading formula character would run in a spreadsheet: quote it out.
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    return "" if value is None else neutralise(value)


def register_html(rows: list[dict[str, Any]], generated: datetime) -> str:
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in REGISTER_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape('' if row[c] is None else str(row[c]))}</td>"
            for c in REGISTER_COLUMNS
        )
        + "</tr>"
        for row in rows
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Register of information sharing agreements</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px;text-align:left}</style></head><body>"
        "<h1>Register of information sharing agreements</h1>"
        f"<p>{len(rows)} agreements; generated {html.escape(_iso(generated) or '')}.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>"
    )


def report_entry(stored: StoredAgreement, now: datetime, grace_days: int) -> dict[str, Any]:
    """An agreement as the partnership report needs it: status, review and who shares what."""
    agreement = stored.agreement
    shown = governing(agreement, now)
    return {
        "id": agreement.id,
        "title": shown.title,
        "type": stored.terms[shown.version].get("type"),
        "status": version_status(agreement, shown, now),
        "review_by": shown.review_by.isoformat() if shown.review_by else None,
        "review_state": review_state(shown, now.date(), grace_days),
        "providers": list(shown.providers),
        "recipients": list(shown.recipients),
        "datasets": [{"dataset": g.dataset, "level": g.level} for g in shown.datasets],
    }
