"""The hub's clock and the text form every stored instant takes (``YYYY-MM-DDTHH:MM:SSZ``)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"
