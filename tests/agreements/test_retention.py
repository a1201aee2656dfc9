"""Retention rules once agreements end: the last agreement's retention_days after it ended."""

from __future__ import annotations

from services.agreements.lifecycle import DatasetGrant
from services.agreements.retention import retention_rules
from tests.agreements.builders import NOW, agreement, day, version


def rules(*made, revoked_on=None):
    return retention_rules(made, revoked_on or {}, NOW)


def test_an_agreement_in_force_keeps_the_longest_retention_without_an_end() -> None:
    active = agreement(version(), agreement_id="isa-1")
    suspended = agreement(
        version(agreement_id="isa-2", end=10), state="suspended", agreement_id="isa-2"
    )
    assert rules(active, suspended) == [
        {"provider": "gmp", "dataset": "police-crime", "retention_days": 91}
    ]  # suspension does not count as ended


def test_no_agreement_in_force_gives_the_last_ones_end_and_retention() -> None:
    expired = agreement(version(start=-300, end=-40), agreement_id="isa-1")
    revoked = agreement(
        version(agreement_id="isa-2", number=2, start=-100, end=200), state="revoked",
        agreement_id="isa-2",
    )  # fmt: skip
    never = agreement(version(agreement_id="isa-3", signed=False), agreement_id="isa-3")
    assert rules(expired, never) == [
        {"provider": "gmp", "dataset": "police-crime", "retention_days": 91,
         "ended": day(-40).isoformat()}
    ]  # fmt: skip
    # Revoked five days ago, after the other ended: the revoked one is the last, with its days.
    assert rules(expired, revoked, never, revoked_on={"isa-2": day(-5)}) == [
        {"provider": "gmp", "dataset": "police-crime", "retention_days": 92,
         "ended": day(-5).isoformat()}
    ]  # fmt: skip


def test_another_dataset_or_provider_in_force_does_not_keep_an_ended_pair() -> None:
    ended = agreement(version(start=-300, end=-40), agreement_id="isa-1")
    other = agreement(
        version(
            agreement_id="isa-2",
            grants=(DatasetGrant("fire-incident", "aggregate"),),
        ),
        agreement_id="isa-2",
    )
    found = {(r["dataset"], r.get("ended")) for r in rules(ended, other)}
    assert found == {("police-crime", day(-40).isoformat()), ("fire-incident", None)}
