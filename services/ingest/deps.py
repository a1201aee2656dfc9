"""Dependencies the ingest routes share: settings, engine, the app's state, the dataset, and the
request's one transaction (``ReadDep`` for a read, ``WriteDep`` for a change: committed when the
route returns, before the answer is sent, rolled back on any error). Store functions take that
connection and never commit; a push (``service.push``), the outbox relay (``outbox.Relay``) and
the purges (``retention``) own their transactions, each in one visible place."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Connection, Engine
from starlette.applications import Starlette

from services.ingest.settings import Settings
from services.ingest.state import IngestState
from shared.app import state_of
from shared.db import write_transaction
from shared.errors import ProblemError
from shared.validation import CompiledDataset


def get_settings(request: Request) -> Settings:
    return state_of(request.app, "settings", Settings)


def get_engine(request: Request) -> Engine:
    return state_of(request.app, "engine", Engine)


def app_state(app: Starlette) -> IngestState:
    """What the lifespan made (``state.IngestState``)."""
    return state_of(app, "ingest", IngestState)


async def get_state(request: Request) -> IngestState:
    return app_state(request.app)


def get_dataset(request: Request, dataset: Annotated[str, Path()]) -> CompiledDataset:
    compiled = app_state(request.app).datasets.get(dataset)
    if compiled is None:
        raise ProblemError(
            404,
            f"There is no dataset {dataset[:64]!r} in the catalogue.",
            slug="unknown-dataset",
            dataset=dataset[:64],
        )
    return compiled


def read_connection(request: Request) -> Iterator[Connection]:
    """The request's read, and the personal read log's entry for it, committed together when the
    route returns (on SQLite the entry waits for the writer lock; the read never does)."""
    with get_engine(request).connect() as connection:
        yield connection
        connection.commit()


def write_connection(request: Request) -> Iterator[Connection]:
    """The request's one write transaction (``shared.db.write_transaction``)."""
    with write_transaction(get_engine(request)) as connection:
        yield connection


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StateDep = Annotated[IngestState, Depends(get_state)]
DatasetDep = Annotated[CompiledDataset, Depends(get_dataset)]
ReadDep = Annotated[Connection, Depends(read_connection, scope="function")]
WriteDep = Annotated[Connection, Depends(write_connection, scope="function")]
