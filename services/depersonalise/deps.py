"""Dependencies of the depersonalise routes: settings, engines, the app's state
(``state.DepersonaliseState``, ``StateDep``), the replica's registry of layers, the catalogue,
and the request's one read connection (``ReadDep`` on the read engine for answers,
``WriterReadDep`` on the writer for what must see the latest write), closed when the route
returns, before the answer is sent; nothing is committed on it. Writes own their transaction in
one visible place each: a delivery of events (``derivation.apply_events``), a layer, snap layer
or population load, a release recorded (``releases.record_release``); the rebuild
(``replay.rebuild``) and the reconciler own theirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Connection, Engine
from starlette.applications import Starlette

from services.depersonalise.layer_registry import Registry, load_registry
from services.depersonalise.settings import Settings
from services.depersonalise.state import DepersonaliseState
from services.depersonalise.uploads import read_body
from shared.app import state_of
from shared.catalogue import Dataset, load_catalogue
from shared.deps import ClaimsDep
from shared.tokens import InternalClaims


def get_settings(request: Request) -> Settings:
    return state_of(request.app, "settings", Settings)


def get_engine(request: Request) -> Engine:
    return state_of(request.app, "engine", Engine)


def app_state(app: Starlette) -> DepersonaliseState:
    """What the lifespan made (``state.DepersonaliseState``)."""
    return state_of(app, "depersonalise", DepersonaliseState)


def get_state(request: Request) -> DepersonaliseState:
    return app_state(request.app)


def get_read_engine(request: Request) -> Engine:
    """The engine answers read from: the read replica, or the writer without one."""
    return app_state(request.app).read_engine


def get_registry(request: Request) -> Registry:
    """The replica's layers, reloaded first if another replica or a rebuild changed them."""
    state = app_state(request.app)
    state.registry = load_registry(state.engine, state.registry)
    return state.registry


def registries(request: Request, first: Registry) -> Callable[[int], Registry]:
    """The layers of each attempt of an answer (layer_registry.on_served_generation): a copy of
    ``first``, then of the layers reloaded; a copy, so that another request's reload cannot
    change the generation under the answer."""

    def attempt(number: int) -> Registry:
        return replace(first if number == 0 else get_registry(request))

    return attempt


def read_connection(request: Request) -> Iterator[Connection]:
    """The request's read on the read engine: every query of one answer in one transaction."""
    with get_read_engine(request).connect() as connection:
        yield connection


def writer_read_connection(request: Request) -> Iterator[Connection]:
    """The request's read on the writer (a release just recorded, operators' figures)."""
    with get_engine(request).connect() as connection:
        yield connection


async def body_of(request: Request, limit: int, geojson_vertices: int | None = None) -> bytes:
    """The request's body, bounded as it streams (``uploads.read_body``)."""
    return await read_body(
        request.stream(), request.headers.get("content-length"), limit, geojson_vertices
    )


def get_catalogue() -> dict[str, Dataset]:
    return load_catalogue()


SettingsDep = Annotated[Settings, Depends(get_settings)]
StateDep = Annotated[DepersonaliseState, Depends(get_state)]
EngineDep = Annotated[Engine, Depends(get_engine)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
CatalogueDep = Annotated[dict[str, Dataset], Depends(get_catalogue)]
ReadDep = Annotated[Connection, Depends(read_connection, scope="function")]
WriterReadDep = Annotated[Connection, Depends(writer_read_connection, scope="function")]


@dataclass(frozen=True)
class ReleaseRequest:
    """What an answer recorded as a release needs (aggregates, a page of records): the caller,
    the layers served, settings and catalogue, the request's read (on the read engine) and the
    writer the release is recorded on."""

    claims: InternalClaims
    registry: Registry
    settings: Settings
    catalogue: dict[str, Dataset]
    conn: Connection
    writer: Engine


def release_request(
    claims: ClaimsDep,
    writer: EngineDep,
    registry: RegistryDep,  # before the held read: the layers' reload takes a writer connection
    conn: ReadDep,
    settings: SettingsDep,
    catalogue: CatalogueDep,
) -> ReleaseRequest:
    return ReleaseRequest(claims, registry, settings, catalogue, conn, writer)


ReleaseRequestDep = Annotated[ReleaseRequest, Depends(release_request)]
