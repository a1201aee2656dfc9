"""Fixtures every test can use: a fresh database per service, and the shared open data folder.

``CSP_TEST_DATABASE=postgresql`` runs the suite against PostgreSQL (``CSP_TEST_PG_URL``, default the
local server): each test gets its own fresh database, dropped afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from scripts.hub import SERVICES, HubKeys
from shared.db import make_engine, prepare_schema
from shared.tokens import SIGNERS

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CSP_DATA_DIR", REPO.parent / "shared" / "data"))
# Fixed keys for the whole suite; every service reads its own from the environment.
TEST_KEYS = HubKeys(
    {
        name: base64.b64encode(
            hashlib.sha256(f"csp test token key {name}".encode()).digest()
        ).decode()
        for name in SIGNERS
    },
    record_key_secret="test-record-key-secret-not-for-production",
    cell_key_secret="test-cell-key-secret-not-for-production",
)
GATEWAY_KEY = TEST_KEYS.token_key("gateway")
RECORD_KEY_SECRET = TEST_KEYS.record_key_secret
PG_ADMIN_URL = os.environ.get(
    "CSP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def using_postgres() -> bool:
    return os.environ.get("CSP_TEST_DATABASE", "sqlite") == "postgresql"


def key_settings(service: str) -> dict[str, str]:
    """The test keys as settings arguments, for settings made outside a test (module fixtures)."""
    prefix = f"CSP_{service.upper()}_"
    return {
        name.removeprefix(prefix).removeprefix("CSP_").lower(): value
        for name, value in TEST_KEYS.environment(service).items()
    }


@pytest.fixture(autouse=True)
def _hub_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for service in SERVICES:
        for name, value in TEST_KEYS.environment(service).items():
            monkeypatch.setenv(name, value)


def create_pg_database(prefix: str) -> str:
    name = f"csp_{prefix}_{uuid.uuid4().hex[:10]}".replace("-", "_")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``migrated_sqlite("ingest")``: a SQLite file that service's migrations brought to head,
    made once per session, for tests to copy (migrating each test's database took most of its
    start-up)."""
    made: dict[str, Path] = {}

    def template(service: str) -> Path:
        if service not in made:
            models = importlib.import_module(f"services.{service}.models")
            path = tmp_path_factory.mktemp("migrated") / f"{service}.db"
            engine = make_engine(f"sqlite:///{path}")
            migrations = REPO / "services" / service / "migrations"
            prepare_schema(engine, models.Base.metadata, migrations)
            with engine.connect() as connection:
                # Still in WAL mode (a copy opens without converting), its log folded back in: the
                # last connection to close removes the log, leaving one self-contained file.
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine.dispose()
            assert not path.with_name(path.name + "-wal").exists()
            made[service] = path
        return made[service]

    return template


@pytest.fixture
def database_url(
    tmp_path: Path, migrated_sqlite: Callable[[str], Path]
) -> Iterator[Callable[[str], str]]:
    """``database_url("ingest")`` gives a fresh database URL for that service in this test. On
    SQLite a service's database is a copy of its migrated schema (start-up then finds it at head);
    other names, and every PostgreSQL database, start empty."""
    created: list[str] = []

    def make(service: str) -> str:
        if using_postgres():
            url = create_pg_database(service)
            created.append(url)
            return url
        path = tmp_path / (service + "-" + uuid.uuid4().hex[:6] + ".db")
        if service in SERVICES:
            shutil.copyfile(migrated_sqlite(service), path)
        return f"sqlite:///{path}"

    yield make
    for url in created:
        drop_pg_database(url)


def require_data(*relative: str) -> Path:
    """The path to a file of the shared open data; skip (or fail under CI=true) when absent."""
    path = DATA_DIR.joinpath(*relative)
    if not path.exists():
        message = f"open data file {path} is absent (the shared data folder is not beside the repo)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
