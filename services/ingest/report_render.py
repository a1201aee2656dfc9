"""The partnership report as CSV (one line per provider and dataset) and as a printable page."""

from __future__ import annotations

import csv
import html
import io
from typing import Any

from shared.http import neutralise

CSV_COLUMNS = (
    "quarter",
    "provider",
    "dataset",
    "records",
    "received_first",
    "received_last",
    "due",
    "on_time",
    "completeness_required",
    "completeness_optional",
    "geocoded",
    "months_with_records",
    "receipt_months",
    "rejected",
    "rejected_reasons",
)


def _flat(quarter: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: row[k] for k in CSV_COLUMNS if k in row},
        "quarter": quarter,
        "completeness_required": row["completeness"]["required"],
        "completeness_optional": row["completeness"]["optional"],
        "rejected_reasons": "; ".join(_reason(r) for r in row["rejected_reasons"]),
    }


def _reason(refusal: dict[str, Any]) -> str:
    where = refusal["field"] or "row"
    return f"{where} {refusal['reason']} ({refusal['rows']})"


def report_csv(body: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in body["rows"]:
        writer.writerow(
            {k: "" if v is None else neutralise(v) for k, v in _flat(body["quarter"], row).items()}
        )
    return out.getvalue()


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.1f} %"


def _table(caption: str, columns: list[str], lines: list[list[Any]]) -> str:
    head = "".join(f'<th scope="col">{html.escape(c)}</th>' for c in columns)
    body = (
        "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in line) + "</tr>"
            for line in lines
        )
        or f'<tr><td colspan="{len(columns)}">None.</td></tr>'
    )
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def report_html(body: dict[str, Any]) -> str:
    quarter = html.escape(body["quarter"])
    rows = _table(
        "What each provider shared",
        ["provider", "dataset", "records", "first received", "last received", "due",
         "on time", "required complete", "optional complete", "geocoded", "rejected rows",
         "commonest reasons"],
        [
            [r["provider"], r["dataset"], r["records"], r["received_first"] or "–",
             r["received_last"] or "–", r["due"],
             {True: "yes", False: "late", None: "–"}[r["on_time"]],
             _percent(r["completeness"]["required"]), _percent(r["completeness"]["optional"]),
             _percent(r["geocoded"]), r["rejected"],
             "; ".join(_reason(x) for x in r["rejected_reasons"]) or "–"]
            for r in body["rows"]
        ],
    )  # fmt: skip
    agreements = _table(
        "Agreements",
        ["id", "title", "status", "review by", "review state", "due for review"],
        [
            [a["id"], a["title"], a["status"], a["review_by"] or "–", a["review_state"],
             "yes" if a["id"] in body["review_due"] else "no"]
            for a in body["agreements"]
        ],
    )  # fmt: skip
    maturity = _table(
        "Maturity of each partnership (levels 0-4)",
        ["provider", "recipient", "level", "meaning", "next step"],
        [
            [m["provider"], m["recipient"], m["level"], m["label"], m["next"] or "–"]
            for m in body["maturity"]
        ],
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Partnership information-sharing report {quarter}</title>"
        "<style>body{font-family:sans-serif;color:#111;margin:2em}"
        "table{border-collapse:collapse;margin:1em 0 2em}caption{text-align:left;"
        "font-weight:bold;margin-bottom:.5em}td,th{border:1px solid #555;padding:4px 6px;"
        "text-align:left}@media print{body{margin:0}table{page-break-inside:avoid}}</style>"
        f"</head><body><h1>Partnership information-sharing report, {quarter}</h1>"
        f"<p>Records that occurred from {html.escape(body['from'])} to "
        f"{html.escape(body['to'])}, due by {html.escape(body['due'])} (the end of the "
        "following quarter).</p>"
        f"{rows}{agreements}{maturity}</body></html>"
    )
