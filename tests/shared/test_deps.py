"""The request's one transaction (``shared.deps.get_connection``): what a route wrote is committed
before its answer leaves, and nothing of it stays when the route fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.engine import Connection

from shared.app import build_app
from shared.db import make_engine
from shared.deps import get_connection
from shared.errors import ProblemError

ConnectionDep = Annotated[Connection, Depends(get_connection, scope="function")]


def make_app(url: str) -> FastAPI:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE note (body VARCHAR(20))"))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = build_app("example", lifespan=lifespan)
    app.state.engine = engine

    def count(connection: Connection) -> int:
        return int(connection.execute(text("SELECT count(*) FROM note")).scalar_one())

    @app.post("/notes")
    def write(connection: ConnectionDep, fail: bool = False) -> dict[str, Any]:
        connection.execute(text("INSERT INTO note VALUES ('kept')"))
        if fail:
            raise ProblemError(422, "Refused after writing.", field="fail")
        return {"written": True}

    @app.get("/notes")
    def read() -> dict[str, int]:
        with engine.connect() as connection:  # a connection of its own: sees committed rows only
            return {"count": count(connection)}

    return app


async def test_a_route_that_returns_is_committed_and_one_that_fails_leaves_nothing(
    database_url: Callable[[str], str],
) -> None:
    app = make_app(database_url("example"))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.post("/notes")).status_code == 200
        assert (await client.get("/notes")).json() == {"count": 1}
        refused = await client.post("/notes", params={"fail": "true"})
        assert refused.status_code == 422 and refused.json()["field"] == "fail"
        assert (await client.get("/notes")).json() == {"count": 1}
