"""Database setup: one engine per service, SQLite by default and PostgreSQL in production."""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Table, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlmodel import create_engine


def table_of(model: type[Any]) -> Table:
    """The Core table of a SQLModel table class, typed (``Model.__table__`` is not)."""
    table = inspect(model).local_table
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to one table")
    return table


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine tuned for the backend the URL names."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run while the outbox relay or a batch writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def write_lock(engine: Engine) -> threading.Lock:
    """The one writer lock of a SQLite engine in this process."""
    with _LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(engine)
        if lock is None:
            lock = _WRITE_LOCKS[engine] = threading.Lock()
        return lock


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction, committed on leaving and rolled back on an error.

    SQLite admits one writer: writers of this process queue on one lock, with no timeout, and take
    the database's write lock at ``BEGIN IMMEDIATE``, so a writer waits its turn instead of failing
    with "database is locked" (or on a stale read snapshot); readers never wait (WAL). PostgreSQL
    writers run in parallel."""
    if not is_sqlite(engine):
        with engine.begin() as connection:
            yield connection
        return
    with write_lock(engine), engine.connect() as connection:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


P = ParamSpec("P")
T = TypeVar("T")


def in_write_transaction(
    engine: Engine, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``work(connection, ...)`` in a write transaction of its own: how a background job (a relay
    round, a purge chunk) owns its transaction in one visible place, off a request."""
    with write_transaction(engine) as connection:
        return work(connection, *args, **kwargs)


def in_read_transaction(
    engine: Engine, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``work(connection, ...)`` on a connection of its own that only reads (never committed)."""
    with engine.connect() as connection:
        return work(connection, *args, **kwargs)


def ping(engine: Engine) -> None:
    """Raise if the database does not answer."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def prepare_schema(engine: Engine, metadata: Any, migrations_dir: Path | None = None) -> None:
    """Bring the database to the service's current schema on start.

    With an Alembic folder (``migrations/`` beside the service) it upgrades to head; otherwise it
    creates the tables the metadata declares.
    """
    if migrations_dir is not None and (migrations_dir / "env.py").exists():
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
        if current and current == _heads(migrations_dir):
            return  # at head already: nothing for the migration environment to do
        config = _alembic_config(migrations_dir)
        config.attributes["engine"] = engine
        command.upgrade(config, "head")
        return
    metadata.create_all(engine)


def _alembic_config(migrations_dir: Path) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    return config


@functools.cache
def _heads(migrations_dir: Path) -> set[str]:
    """The head revisions of a service's migrations, read once per process (reading them loads
    every revision's file, which took most of a start on a database already at head)."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(_alembic_config(migrations_dir)).get_heads())
