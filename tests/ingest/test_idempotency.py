"""The Idempotency-Key rule, called directly: replay, reuse, in flight, and the replicas' race."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from services.ingest import main as ingest_main
from services.ingest.idempotency import (
    InFlight,
    fingerprint,
    forget_expired_keys,
    look_up,
    push_once,
)
from services.ingest.instants import iso, utc_now
from services.ingest.models import Base
from services.ingest.tables import IDEMPOTENCY
from shared.db import make_engine, prepare_schema
from shared.errors import ProblemError

MIGRATIONS = Path(ingest_main.__file__).parent / "migrations"
FIRST = {"batch_id": "b-1", "accepted": 2}


@pytest.fixture
def engine(database_url: Callable[[str], str]) -> Iterator[Engine]:
    made = make_engine(database_url("ingest"))
    prepare_schema(made, Base.metadata, MIGRATIONS)
    yield made
    made.dispose()  # before the test database is dropped: no connection left to the collector


def remember(engine: Engine, key: str, print_: str, hours: int = 24) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(IDEMPOTENCY).values(
                agency="gmp",
                key=key,
                fingerprint=print_,
                status_code=202,
                response=msgspec.json.encode(FIRST).decode(),
                expires_at=iso(utc_now() + timedelta(hours=hours)),
            )
        )


class Push:
    """A push that counts its runs; ``then`` runs inside it (e.g. another replica's commit)."""

    def __init__(self, then: Callable[[], None] | None = None) -> None:
        self.runs = 0
        self.then = then

    async def __call__(self) -> dict[str, Any]:
        self.runs += 1
        if self.then is not None:
            self.then()
        return {"batch_id": f"b-{self.runs + 1}", "accepted": 1}


def test_a_fingerprint_changes_with_any_part() -> None:
    base = fingerprint("POST", "/v1/datasets/d/records", "", "abc", "text/csv")
    assert base == fingerprint("POST", "/v1/datasets/d/records", "", "abc", "text/csv")
    assert base != fingerprint("POST", "/v1/datasets/d/records", "atomic=true", "abc", "text/csv")
    assert base != fingerprint("POST", "/v1/datasets/d/records", "", "abd", "text/csv")


async def test_without_a_key_every_push_runs(engine: Engine) -> None:
    push = Push()
    for _ in range(2):
        _answer, replayed = await push_once(engine, InFlight(), "gmp", None, "f", push)
        assert not replayed
    assert push.runs == 2


async def test_a_repeat_gets_the_first_answer_without_running(engine: Engine) -> None:
    remember(engine, "k", "f")
    push = Push()
    assert await push_once(engine, InFlight(), "gmp", "k", "f", push) == (FIRST, True)
    assert push.runs == 0
    # The key is the agency's own: another agency's push under it runs.
    _answer, replayed = await push_once(engine, InFlight(), "tvp", "k", "f", push)
    assert not replayed and push.runs == 1


async def test_a_key_reused_for_another_request_is_422_naming_it(engine: Engine) -> None:
    remember(engine, "k", "f")
    with pytest.raises(ProblemError) as caught:
        await push_once(engine, InFlight(), "gmp", "k", "other", Push())
    assert caught.value.status == 422 and caught.value.extra["field"] == "Idempotency-Key"


async def test_a_key_in_flight_is_409_and_free_again_once_the_push_ends(engine: Engine) -> None:
    in_flight = InFlight()
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"batch_id": "b-9", "accepted": 1}

    first = asyncio.create_task(push_once(engine, in_flight, "gmp", "k", "f", slow))
    await started.wait()
    with pytest.raises(ProblemError) as caught:
        await push_once(engine, in_flight, "gmp", "k", "f", Push())
    assert caught.value.status == 409
    assert ("gmp", "k") in in_flight.running  # the refused retry did not free the first's key
    release.set()
    assert (await first)[0]["batch_id"] == "b-9"
    assert in_flight.running == set()


async def test_losing_the_race_to_another_replica_answers_as_it_did(engine: Engine) -> None:
    def other_replica_commits_first() -> None:
        remember(engine, "k", "f")
        raise IntegrityError("INSERT idempotency_key", {}, Exception("duplicate key"))

    answer, replayed = await push_once(
        engine, InFlight(), "gmp", "k", "f", Push(other_replica_commits_first)
    )
    assert (answer, replayed) == (FIRST, False)


async def test_an_integrity_error_of_another_cause_is_not_hidden(engine: Engine) -> None:
    def fails() -> None:
        raise IntegrityError("INSERT record", {}, Exception("constraint"))

    with pytest.raises(IntegrityError):
        await push_once(engine, InFlight(), "gmp", "k", "f", Push(fails))


def test_expired_keys_are_forgotten_and_no_longer_replayed(engine: Engine) -> None:
    remember(engine, "old", "f", hours=-1)
    remember(engine, "new", "f")
    assert look_up(engine, "gmp", "old", "f") is None
    assert forget_expired_keys(engine) == 1
    assert look_up(engine, "gmp", "new", "f") == FIRST
