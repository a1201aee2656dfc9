"""An answer read while a rebuild switches generations is read again on the generation now
served (layer_registry.on_served_generation): the old generation's cells go with the switch,
so a read across it could find none of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.depersonalise import cube, layer_registry
from services.depersonalise.layer_registry import Registry
from services.depersonalise.models import Base
from services.depersonalise.service_state import bump, ensure_state, read_state, still_held
from shared.db import make_engine, prepare_schema, write_transaction
from shared.errors import ProblemError


def _engine(database_url: Any) -> Any:
    engine = make_engine(database_url("depersonalise"))
    prepare_schema(engine, Base.metadata, Path(cube.__file__).parent / "migrations")
    ensure_state(engine)
    return engine


def _switch(engine: Any) -> None:
    with write_transaction(engine) as conn:
        bump(conn, generation=read_state(conn)["generation"] + 1)


def test_an_answer_read_across_a_switch_is_read_again_on_the_new_generation(
    database_url: Any,
) -> None:
    engine = _engine(database_url)
    asked: list[int] = []

    def work(registry: Registry) -> int:
        asked.append(registry.generation)
        if len(asked) == 1:
            _switch(engine)  # the rebuild's switch commits while the first answer reads
        return registry.generation

    with engine.connect() as conn:

        def registry_of(attempt: int) -> Registry:
            return Registry(generation=read_state(conn)["generation"])

        registry, answer = layer_registry.on_served_generation(conn, registry_of, work)
    assert asked == [1, 2] and answer == 2 and registry.generation == 2
    engine.dispose()


def test_an_answer_that_never_settles_is_a_503_to_ask_again(database_url: Any) -> None:
    engine = _engine(database_url)

    def work(registry: Registry) -> None:
        _switch(engine)

    with engine.connect() as conn, pytest.raises(ProblemError) as refused:
        layer_registry.on_served_generation(
            conn, lambda attempt: Registry(generation=read_state(conn)["generation"]), work
        )
    assert refused.value.status == 503 and refused.value.slug == "generation-switched"
    engine.dispose()


def test_a_generation_still_being_built_where_it_is_read_is_held(database_url: Any) -> None:
    """A read replica that has not yet replayed the switch shows the rebuilt generation as being
    built: its cells are there, so an answer on it is not read again."""
    engine = _engine(database_url)
    with write_transaction(engine) as conn:
        bump(conn, building=2)
    with engine.connect() as conn:
        assert still_held(conn, 1) and still_held(conn, 2) and not still_held(conn, 3)
        calls: list[int] = []
        registry, _ = layer_registry.on_served_generation(
            conn, lambda attempt: Registry(generation=2), lambda r: calls.append(r.generation)
        )
    assert calls == [2] and registry.generation == 2
    engine.dispose()
