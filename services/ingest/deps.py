"""Dependencies the ingest routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine

from services.ingest.settings import Settings
from shared.errors import ProblemError
from shared.validation import CompiledDataset


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_dataset(request: Request, dataset: Annotated[str, Path()]) -> CompiledDataset:
    compiled: CompiledDataset | None = request.app.state.datasets.get(dataset)
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
DatasetDep = Annotated[CompiledDataset, Depends(get_dataset)]
