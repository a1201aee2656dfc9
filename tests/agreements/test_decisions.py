"""The decision function alone: each rule by example, then properties that hold for all inputs."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.agreements.decisions import (
    RULES,
    AgencyFacts,
    Decision,
    DecisionRequest,
    decide,
)
from services.agreements.lifecycle import Agreement, DatasetGrant, Version
from shared.grants import slices
from shared.levels import LEVEL_RANK
from shared.tokens import InternalClaims
from tests.agreements.builders import GRACE, NOW, TODAY, agreement, day, version


def ask(
    agency: str = "mcc",
    action: str = "read",
    level: str | None = "aggregate",
    purpose: str | None = None,
    fields: tuple[str, ...] | None = None,
    agreements: tuple[Agreement, ...] = (),
    status: str = "active",
    suspended: frozenset[str] = frozenset(),
    now: datetime = NOW,
) -> Decision:
    request = DecisionRequest(agency, action, "police-crime", level, purpose, fields)  # type: ignore[arg-type]
    facts = AgencyFacts(agency, status)  # type: ignore[arg-type]
    return decide(request, facts, agreements, now, suspended=suspended, grace_days=GRACE)


def test_nothing_agreed_is_denied() -> None:
    decision = ask()
    assert decision.as_dict() == {
        "allow": False,
        "rule": "no-active-agreement",
        "agreement": None,
        "version": None,
        "fields": [],
        "providers": [],
        "purpose": None,
        "retention_days": None,
        "window": None,
        "warning": None,
        "grants": [],
    }


def test_an_active_agreement_allows_its_recipient_to_read() -> None:
    decision = ask(agreements=(agreement(),))
    assert decision.allow and decision.rule == "allowed"
    assert (decision.agreement, decision.version) == ("isa-1", 1)
    assert decision.providers == ["gmp"]
    assert decision.fields is None
    assert decision.purpose == "strategic-assessment"
    assert decision.retention_days == 91
    assert decision.window == [day(-30).isoformat(), day(300).isoformat()]


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"agency": "mcc", "action": "push"}, "not-a-provider"),
        ({"agency": "mcc", "action": "retract"}, "not-a-provider"),
        ({"agency": "gmp", "action": "read"}, "not-a-recipient"),
        ({"level": "personal"}, "level-exceeds-agreement"),
        ({"level": None}, "allowed"),
        ({"purpose": "licensing"}, "purpose-not-agreed"),
        ({"purpose": "strategic-assessment"}, "allowed"),
        ({"agency": "salford"}, "no-active-agreement"),
        ({"status": "suspended"}, "agency-suspended"),
        ({"suspended": frozenset({"gmp"})}, "agency-suspended"),
    ],
)
def test_each_request_rule(kwargs: dict, rule: str) -> None:
    decision = ask(agreements=(agreement(),), **kwargs)
    assert decision.rule == rule
    assert decision.allow is (rule == "allowed")


@pytest.mark.parametrize(
    ("made", "rule"),
    [
        (agreement(version(signed=False)), "no-active-agreement"),
        (agreement(version(start=5)), "agreement-not-started"),
        (agreement(version(start=-400, end=-1, review=None)), "agreement-expired"),
        (agreement(state="suspended"), "agreement-suspended"),
        (agreement(state="revoked"), "agreement-revoked"),
        (agreement(version(start=-100, review=-31)), "review-overdue"),
        (agreement(version(start=-100, review=-30)), "allowed"),
    ],
)
def test_each_state_rule(made: Agreement, rule: str) -> None:
    decision = ask(agreements=(made,))
    assert decision.rule == rule
    if rule != "allowed":
        assert (decision.agreement, decision.version) == ("isa-1", 1)


def test_review_grace_allows_with_a_warning() -> None:
    decision = ask(agreements=(agreement(version(start=-100, review=-3)),))
    assert decision.allow
    assert decision.warning is not None and "isa-1" in decision.warning


def test_signatures_after_now_do_not_count() -> None:
    late = replace(version(), signatures={"gmp": NOW, "mcc": NOW + timedelta(seconds=1)})
    assert ask(agreements=(agreement(late),)).rule == "no-active-agreement"


def test_fields_allow_list() -> None:
    narrow = version(grants=(DatasetGrant("police-crime", "aggregate", ("category",)),))
    made = agreement(narrow)
    assert ask(agreements=(made,)).fields == ["category"]
    assert ask(agreements=(made,), fields=("category",)).allow
    assert ask(agreements=(made,), fields=("category", "postcode")).rule == "field-not-agreed"


def test_read_unites_providers_and_fields() -> None:
    first = agreement(
        version(grants=(DatasetGrant("police-crime", "aggregate", ("category",)),)),
        agreement_id="isa-1",
    )
    second = agreement(
        version(
            providers=("btp",),
            grants=(DatasetGrant("police-crime", "aggregate", ("outcome",)),),
            agreement_id="isa-2",
        ),
        agreement_id="isa-2",
    )
    everything = agreement(
        version(providers=("fire",), agreement_id="isa-3", purpose="licensing"),
        agreement_id="isa-3",
    )
    decision = ask(agreements=(first, second))
    assert decision.providers == ["btp", "gmp"]
    assert decision.fields == ["category", "outcome"]
    decision = ask(agreements=(first, second, everything))
    assert decision.providers == ["btp", "fire", "gmp"] and decision.fields is None
    only = ask(agreements=(first, second, everything), purpose="licensing")
    assert only.providers == ["fire"] and only.agreement == "isa-3"


def test_a_new_version_governs_only_once_in_force() -> None:
    old = version(1, grants=(DatasetGrant("police-crime", "aggregate"),))
    new = version(2, grants=(DatasetGrant("police-crime", "personal"),), signed=False)
    pending = agreement(old, new)
    assert ask(agreements=(pending,), level="personal").rule == "level-exceeds-agreement"
    assert ask(agreements=(pending,)).version == 1
    in_force = agreement(old, replace(new, signatures=old.signatures))
    decision = ask(agreements=(in_force,), level="personal")
    assert decision.allow and decision.version == 2


def test_push_answers_the_pusher_as_provider() -> None:
    decision = ask(agency="gmp", action="push", level=None, agreements=(agreement(),))
    assert decision.allow and decision.providers == ["gmp"]


# ---------------------------------------------------------------- properties

AGENCIES = ("a", "b", "c")
DATASETS = ("d1", "d2")
PURPOSES = ("p1", "p2")
FIELDS = ("f1", "f2", "f3")
LEVELS = ("aggregate", "depersonalised", "personal")

agency_sets = st.sets(st.sampled_from(AGENCIES), min_size=1).map(lambda s: tuple(sorted(s)))
grants = st.builds(
    DatasetGrant,
    st.sampled_from(DATASETS),
    st.sampled_from(LEVELS),
    st.none() | st.sets(st.sampled_from(FIELDS)).map(lambda s: tuple(sorted(s))),
)


@st.composite
def versions(draw: st.DrawFn, agreement_id: str, number: int, live: bool = False) -> Version:
    """A version; ``live`` ones are mostly signed and started, so most of them are in force."""
    providers, recipients = draw(agency_sets), draw(agency_sets)
    parties = tuple(dict.fromkeys(providers + recipients))
    start = draw(st.integers(-400, 0 if live else 30))
    signers = set(parties) if live else draw(st.sets(st.sampled_from(parties)))
    signatures = {
        p: NOW
        + timedelta(
            days=draw(st.integers(-500, -1 if live else 5)), seconds=draw(st.integers(-5, 5))
        )
        for p in signers
    }
    chosen = draw(st.lists(grants, min_size=1, max_size=2, unique_by=lambda g: g.dataset))
    return Version(
        agreement_id=agreement_id,
        version=number,
        title="t",
        purpose=draw(st.sampled_from(PURPOSES)),
        providers=providers,
        recipients=recipients,
        datasets=tuple(chosen),
        start=day(start),
        end=day(start + draw(st.integers(0, 500))),
        review_by=draw(st.none() | st.integers(start, start + 500).map(day)),
        retention_days=draw(st.integers(1, 1000)),
        signatures=signatures,
    )


@st.composite
def agreements(draw: st.DrawFn, live: bool = False) -> tuple[Agreement, ...]:
    made = []
    for index in range(draw(st.integers(0, 3))):
        agreement_id = f"isa-{index}"
        count = draw(st.integers(1, 2))
        made.append(
            Agreement(
                agreement_id,
                draw(st.sampled_from(("none", "none", "suspended", "revoked"))),
                tuple(draw(versions(agreement_id, n, live)) for n in range(1, count + 1)),
            )
        )
    return tuple(made)


requests = st.builds(
    DecisionRequest,
    agency=st.sampled_from(AGENCIES),
    action=st.sampled_from(("push", "read", "retract")),
    dataset=st.sampled_from(DATASETS),
    level=st.none() | st.sampled_from(LEVELS),
    purpose=st.none() | st.sampled_from(PURPOSES),
    fields=st.none() | st.sets(st.sampled_from(FIELDS), min_size=1).map(tuple),
)
suspensions = st.sets(st.sampled_from(AGENCIES)).map(frozenset)


def oracle_version(made: Agreement) -> Version | None:
    """Written independently of the service: the version in force, if any."""
    forced = [
        v
        for v in made.versions
        if v.start <= TODAY and all(p in v.signatures and v.signatures[p] <= NOW for p in v.parties)
    ]
    return max(forced, key=lambda v: v.version) if forced else None


def oracle_allows(made: Agreement, request: DecisionRequest, suspended: frozenset[str]) -> bool:
    if request.action == "retract":
        # A provider may always retract its own records, in any state of its agreements.
        v = oracle_version(made) or made.versions[-1]
        grant = next((g for g in v.datasets if g.dataset == request.dataset), None)
        purpose_ok = request.purpose is None or request.purpose == v.purpose
        return grant is not None and request.agency in v.providers and purpose_ok
    v = oracle_version(made)
    if v is None or made.operator_state != "none" or TODAY > v.end:
        return False
    if v.review_by is not None and TODAY > v.review_by + timedelta(days=GRACE):
        return False
    if set(v.parties) & suspended:
        return False
    grant = next((g for g in v.datasets if g.dataset == request.dataset), None)
    if grant is None:
        return False
    if request.agency not in (v.recipients if request.action == "read" else v.providers):
        return False
    if request.purpose is not None and request.purpose != v.purpose:
        return False
    wanted = LEVEL_RANK[request.level or "depersonalised"]
    if request.action == "read" and wanted > LEVEL_RANK[grant.level]:
        return False
    # A push may bring every field of a dataset it provides: allow-lists govern reads only.
    return not (
        request.action == "read"
        and request.fields
        and grant.fields is not None
        and set(request.fields) - set(grant.fields)
    )


def run(
    request: DecisionRequest, made: tuple[Agreement, ...], suspended: frozenset[str]
) -> Decision:
    status = "suspended" if request.agency in suspended else "active"
    facts = AgencyFacts(request.agency, status)  # type: ignore[arg-type]
    return decide(request, facts, made, NOW, suspended=suspended, grace_days=GRACE)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(requests, agreements(), suspensions)
def test_allows_exactly_when_an_in_force_agreement_permits(
    request: DecisionRequest, made: tuple[Agreement, ...], suspended: frozenset[str]
) -> None:
    decision = run(request, made, suspended)
    permitted = [a for a in made if oracle_allows(a, request, suspended)]
    assert decision.allow == (bool(permitted) and request.agency not in suspended)
    assert decision.rule in RULES
    if not decision.allow:
        assert decision.rule != "allowed" and decision.fields == [] and decision.providers == []
        return
    assert decision.rule == "allowed"
    chosen = next(a for a in made if a.id == decision.agreement)
    assert chosen in permitted
    cited = oracle_version(chosen)
    if request.action == "retract":
        cited = cited or chosen.versions[-1]
    assert cited is not None and cited.version == decision.version
    assert request.agency in (cited.recipients if request.action == "read" else cited.providers)
    grant = cited.grant(request.dataset)
    assert grant is not None
    if request.action == "read":
        assert LEVEL_RANK[request.level or "depersonalised"] <= LEVEL_RANK[grant.level]
        sharing = {p for a in permitted for p in oracle_version(a).providers}  # type: ignore[union-attr]
        assert set(decision.providers or []) == sharing - suspended
    if request.purpose is not None:
        assert decision.purpose == request.purpose == cited.purpose


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(requests, agreements())
def test_a_suspended_agency_is_refused_whatever_it_is_granted(
    request: DecisionRequest, made: tuple[Agreement, ...]
) -> None:
    decision = run(request, made, frozenset({request.agency}))
    assert not decision.allow and decision.rule == "agency-suspended"


@settings(max_examples=200, deadline=None)
@given(requests)
def test_default_deny(request: DecisionRequest) -> None:
    assert run(request, (), frozenset()).rule == "no-active-agreement"


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(requests, agreements(), suspensions)
def test_a_lower_level_is_allowed_whenever_a_higher_one_is(
    request: DecisionRequest, made: tuple[Agreement, ...], suspended: frozenset[str]
) -> None:
    read = replace(request, action="read")
    decision = run(read, made, suspended)
    if decision.allow:
        for level in LEVELS[: LEVEL_RANK[read.level or "depersonalised"] + 1]:
            assert run(replace(read, level=level), made, suspended).allow


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(requests, agreements(), suspensions)
def test_read_fields_never_widen_beyond_the_allow_lists(
    request: DecisionRequest, made: tuple[Agreement, ...], suspended: frozenset[str]
) -> None:
    decision = run(replace(request, action="read"), made, suspended)
    if decision.allow and decision.fields is not None:
        granted: set[str] = set()
        for a in made:
            v = oracle_version(a)
            g = None if v is None else v.grant(request.dataset)
            if g is not None and g.fields is not None:
                granted.update(g.fields)
        assert set(decision.fields) <= granted


# ---------------------------------------------------------------- grants per provider


def test_grants_are_per_provider_and_never_widened_by_another_providers_agreement() -> None:
    """Issue scenario 1: R reads from P1 (every field) and P2 (three fields); P2 shares every
    field with another recipient. P2's records must reach R with P2's three fields only."""
    p1_r = agreement(
        version(providers=("p1",), recipients=("r",), agreement_id="isa-1"),
        agreement_id="isa-1",
    )
    narrow = DatasetGrant("police-crime", "personal", ("source_ref", "occurred_at", "category"))
    p2_r = agreement(
        version(providers=("p2",), recipients=("r",), grants=(narrow,), agreement_id="isa-2"),
        agreement_id="isa-2",
    )
    p2_other = agreement(
        version(
            providers=("p2",),
            recipients=("other",),
            grants=(DatasetGrant("police-crime", "personal"),),
            agreement_id="isa-3",
        ),
        agreement_id="isa-3",
    )
    decision = ask(agency="r", level="depersonalised", agreements=(p1_r, p2_r, p2_other))
    assert decision.allow and decision.providers == ["p1", "p2"]
    by_provider = {g["provider"]: g for g in decision.as_dict()["grants"]}
    assert by_provider["p1"]["agreement"] == "isa-1" and by_provider["p1"]["fields"] is None
    assert by_provider["p2"] == {
        "provider": "p2",
        "agreement": "isa-2",
        "version": 1,
        "level": "personal",
        "fields": ["category", "occurred_at", "source_ref"],
        "from": day(-30).isoformat(),
        "to": day(300).isoformat(),
        "purpose": "strategic-assessment",
    }
    # P2 may still push every field: what comes in is not what goes out.
    push = ask(agency="p2", action="push", level=None, fields=("surname",), agreements=(p2_r,))
    assert push.allow and push.fields is None
    assert [(g.provider, g.agreement) for g in push.grants] == [("p2", "isa-2")]


def test_agreements_between_the_same_two_parties_combine() -> None:
    first = agreement(
        version(grants=(DatasetGrant("police-crime", "depersonalised", ("category",)),)),
        agreement_id="isa-1",
    )
    second = agreement(
        version(
            grants=(DatasetGrant("police-crime", "depersonalised", ("outcome",)),),
            agreement_id="isa-2",
            start=-200,
            end=-10,
        ),
        agreement_id="isa-2",
    )
    decision = ask(agreements=(first, second), level="depersonalised")
    assert [(g.provider, g.agreement, g.fields) for g in decision.grants] == [
        ("gmp", "isa-1", ["category"])
    ]  # isa-2 has ended: it grants nothing now
    second = agreement(replace(second.latest, end=day(10)), agreement_id="isa-2")
    decision = ask(agreements=(first, second), level="depersonalised")
    assert [(g.agreement, g.fields) for g in decision.grants] == [
        ("isa-1", ["category"]),
        ("isa-2", ["outcome"]),
    ]


def shown_by_oracle(
    made: tuple[Agreement, ...],
    request: DecisionRequest,
    suspended: frozenset[str],
    provider: str,
    when: date,
) -> set[str] | None:
    """Written from the contract alone: fields of ``provider``'s record dated ``when`` that may
    reach the reader (None: every field), or an empty set when nothing of it may."""
    names: set[str] = set()
    for made_one in made:
        if not oracle_allows(made_one, request, suspended):
            continue
        v = oracle_version(made_one)
        assert v is not None
        if provider not in v.providers or provider in suspended or not v.start <= when <= v.end:
            continue
        grant = v.grant(request.dataset)
        assert grant is not None
        if grant.fields is None:
            return None
        names |= set(grant.fields)
    return names


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(
    requests, agreements() | agreements(live=True), suspensions, st.sampled_from(FIELDS), st.data()
)
def test_no_field_or_record_of_a_provider_reaches_a_reader_beyond_its_own_grants(
    request: DecisionRequest,
    made: tuple[Agreement, ...],
    suspended: frozenset[str],
    name: str,
    data: st.DataObject,
) -> None:
    """What a reader sees of one provider's record, through the token's grants as the backends
    read them, is exactly what the active agreements between the two allow at that level, on
    that day, for that purpose."""
    read = replace(request, action="read")
    decision = run(read, made, suspended)
    # Mostly a provider and day some grant names, so the interesting cases come up often.
    provider = data.draw(st.sampled_from([g.provider for g in decision.grants] or list(AGENCIES)))
    when = data.draw(
        st.sampled_from([date.fromisoformat(g.start) for g in decision.grants] or [TODAY])
        | st.integers(-450, 550).map(day)
    )
    claims = InternalClaims(sub=read.agency, grants=decision.as_dict()["grants"])
    shown = slices(claims).fields_for(provider, when)
    expected = shown_by_oracle(made, read, suspended, provider, when)
    if not decision.allow or expected == set():
        # Nothing of it, unless some allowing agreement grants an empty list of fields.
        assert shown is None or (shown.names is not None and not shown.names)
        return
    assert shown is not None
    assert (name in shown) == (expected is None or name in expected)
    for grant in decision.grants:
        cited = next(a for a in made if a.id == grant.agreement)
        assert oracle_allows(cited, read, suspended)
        v = oracle_version(cited)
        assert v is not None and v.version == grant.version and grant.provider in v.providers
        assert (grant.start, grant.end, grant.purpose) == (
            v.start.isoformat(),
            v.end.isoformat(),
            v.purpose,
        )
