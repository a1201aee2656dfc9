"""Instants and periods: one parsing and one labelling for ingest and depersonalise."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.periods import (
    PERIODS,
    coarser_or_equal,
    day_of,
    next_period,
    parse_instant,
    period_count,
    period_label,
    period_start,
    periods_between,
    stored_period_label,
)
from shared.validation import parse_datetime

days = st.dates(min_value=date(1900, 1, 1), max_value=date(9996, 12, 31))


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("2024-01-05T22:10:00Z", datetime(2024, 1, 5, 22, 10, tzinfo=UTC)),
        ("2024-01-05T22:10:00", datetime(2024, 1, 5, 22, 10, tzinfo=UTC)),
        ("2024-01-06T00:10:00+02:00", datetime(2024, 1, 5, 22, 10, tzinfo=UTC)),
        (" 2024-01-05 ", datetime(2024, 1, 5, tzinfo=UTC)),
        (date(2024, 1, 5), datetime(2024, 1, 5, tzinfo=UTC)),
        (datetime(2024, 1, 5, 12), datetime(2024, 1, 5, 12, tzinfo=UTC)),
        (None, None),
        ("", None),
        ("yesterday", None),
    ],
)
def test_an_instant_is_utc_and_no_offset_means_utc(value: object, moment: datetime | None) -> None:
    assert parse_instant(value) == moment


def test_the_day_of_an_instant_is_its_utc_day() -> None:
    assert day_of("2024-01-06T00:30:00+01:00") == date(2024, 1, 5)
    assert day_of("not a day") is None


@given(st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(9998, 1, 1)))
def test_a_validated_datetime_is_the_same_instant_as_parsed(moment: datetime) -> None:
    text = moment.replace(tzinfo=timezone(timedelta(hours=5))).isoformat()
    parsed = parse_instant(text)
    assert parsed is not None
    assert parse_instant(parse_datetime(text)) == parsed.replace(microsecond=0)


@pytest.mark.parametrize(
    ("period", "label"),
    [
        ("day", "2024-01-05"),
        ("week", "2024-W01"),
        ("month", "2024-01"),
        ("quarter", "2024-Q1"),
        ("year", "2024"),
    ],
)
def test_labels(period: str, label: str) -> None:
    assert period_label(date(2024, 1, 5), period) == label


@given(days, st.sampled_from(["month", "quarter", "year"]))
def test_a_stored_stamp_has_the_label_of_its_day(day: date, period: str) -> None:
    assert stored_period_label(day.isoformat() + "T10:00:00Z", period) == period_label(day, period)


@given(days, st.sampled_from(PERIODS))
def test_a_day_lies_in_its_period_and_before_the_next(day: date, period: str) -> None:
    start = period_start(day, period)
    assert start <= day < next_period(start, period)
    assert period_label(start, period) == period_label(day, period)


@given(days, st.integers(min_value=0, max_value=800), st.sampled_from(PERIODS))
def test_counting_periods_agrees_with_listing_them(first: date, span: int, period: str) -> None:
    last = first + timedelta(days=span)
    listed = periods_between(first, last, period)
    assert period_count(first, last, period) == len(listed)
    assert listed[0][0] <= first and listed[-1][0] <= last


def test_weeks_do_not_nest_in_months() -> None:
    assert coarser_or_equal("month", "day") and coarser_or_equal("year", "month")
    assert not coarser_or_equal("month", "week") and not coarser_or_equal("week", "month")
    assert coarser_or_equal("week", "week") and not coarser_or_equal("day", "month")
