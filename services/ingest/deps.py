"""Dependencies the ingest routes share: settings, engine, the app's state, the dataset."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine
from starlette.applications import Starlette

from services.ingest.settings import Settings
from services.ingest.state import IngestState
from shared.app import state_of
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


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StateDep = Annotated[IngestState, Depends(get_state)]
DatasetDep = Annotated[CompiledDataset, Depends(get_dataset)]
