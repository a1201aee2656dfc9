"""Instants and calendar periods, parsed and labelled one way for every service.

Instants are UTC (text without an offset is taken as UTC). Periods are ``day``, ``week`` (ISO,
Monday first), ``month``, ``quarter`` and ``year``; a period's label is what answers and stored
rows show: ``2024-01-05``, ``2024-W01``, ``2024-01``, ``2024-Q1``, ``2024``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

PERIODS = ("day", "week", "month", "quarter", "year")
_MONTHS = {"month": 1, "quarter": 3, "year": 12}


def as_utc(moment: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_iso(text: str) -> datetime:
    """ISO 8601 date or date-time text as an aware UTC datetime; ValueError when it is not one."""
    return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def parse_instant(value: Any) -> datetime | None:
    """A date, datetime or ISO 8601 text as an aware UTC datetime; None for none or for text
    that is not a date."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        return parse_iso(str(value))
    except ValueError:
        return None


def day_of(value: Any) -> date | None:
    """``parse_instant``'s day (UTC)."""
    moment = parse_instant(value)
    return moment.date() if moment else None


def period_start(day: date, period: str) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return date(day.year, 1, 1)


def period_label(day: date, period: str) -> str:
    start = period_start(day, period)
    if period == "day":
        return start.isoformat()
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{start.year}-{start.month:02d}"
    if period == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return str(start.year)


def stored_period_label(stamp: str, period: str) -> str:
    """``period_label`` of a stored UTC stamp (``YYYY-MM-DDT...Z``) for ``month`` (the default),
    ``quarter`` or ``year``, read off the text without parsing it (it is on hot loops)."""
    if period == "year":
        return stamp[:4]
    if period == "quarter":
        return f"{stamp[:4]}-Q{(int(stamp[5:7]) - 1) // 3 + 1}"
    return stamp[:7]


def next_period(start: date, period: str) -> date:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    total = start.year * 12 + start.month - 1 + _MONTHS[period]
    return date(total // 12, total % 12 + 1, 1)


def periods_between(first: date, last: date, period: str) -> list[tuple[date, str]]:
    """Every period overlapping [first, last], in order."""
    result = []
    current = period_start(first, period)
    while current <= last:
        result.append((current, period_label(current, period)))
        current = next_period(current, period)
    return result


def period_count(first: date, last: date, period: str) -> int:
    """How many periods overlap [first, last], without listing them."""
    start, end = period_start(first, period), period_start(last, period)
    if period in ("day", "week"):
        return (end - start).days // (1 if period == "day" else 7) + 1
    months = (end.year - start.year) * 12 + end.month - start.month
    return months // _MONTHS[period] + 1


def coarser_or_equal(asked: str, resolution: str) -> bool:
    """Can data held at ``resolution`` be counted by ``asked``? (week does not nest in month.)"""
    if resolution == "week":
        return asked in {"week"}
    if resolution == "day":
        return True
    return PERIODS.index(asked) >= PERIODS.index(resolution) and asked != "week"
