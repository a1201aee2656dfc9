"""Dependencies of the depersonalise routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from services.depersonalise import store
from services.depersonalise.settings import Settings
from services.depersonalise.uploads import read_body
from shared.catalogue import Dataset, load_catalogue


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_read_engine(request: Request) -> Engine:
    """The engine answers read from: the read replica, or the writer without one."""
    engine: Engine = request.app.state.read_engine
    return engine


def get_registry(request: Request) -> store.Registry:
    """The replica's layers, reloaded first if another replica or a rebuild changed them."""
    registry = store.load_registry(request.app.state.engine, request.app.state.registry)
    request.app.state.registry = registry
    return registry


async def body_of(request: Request, limit: int, geojson_vertices: int | None = None) -> bytes:
    """The request's body, bounded as it streams (``uploads.read_body``)."""
    return await read_body(
        request.stream(), request.headers.get("content-length"), limit, geojson_vertices
    )


def get_catalogue() -> dict[str, Dataset]:
    return load_catalogue()


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ReadEngineDep = Annotated[Engine, Depends(get_read_engine)]
RegistryDep = Annotated[store.Registry, Depends(get_registry)]
CatalogueDep = Annotated[dict[str, Dataset], Depends(get_catalogue)]
