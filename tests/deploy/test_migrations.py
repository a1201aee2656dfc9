"""Each service's Alembic migrations build, from empty and from every earlier revision, exactly
the schema its models declare, on SQLite and on PostgreSQL; the Kubernetes Job's command works,
and replicas migrating together do not race."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from shared.db import make_engine, prepare_schema
from shared.migrations import not_a_partition
from tests.conftest import REPO, create_pg_database, drop_pg_database
from tests.deploy.files import SERVICES

BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.slow))


def migrations(service: str) -> Path:
    return REPO / "services" / service / "migrations"


def metadata(service: str) -> Any:
    return importlib.import_module(f"services.{service}.models").Base.metadata


def alembic_config(service: str, engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations(service)))
    config.attributes["engine"] = engine
    return config


@pytest.fixture
def fresh_url(tmp_path: Path) -> Iterator[Any]:
    created: list[str] = []

    def make(service: str, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / service}.db"
        url = create_pg_database(f"mig_{service}")
        created.append(url)
        return url

    yield make
    for url in created:
        drop_pg_database(url)


def schema_differences(service: str, engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "render_as_batch": True,
                "include_object": not_a_partition(metadata(service)),
            },
        )
        return list(compare_metadata(context, metadata(service)))


def head(service: str) -> str:
    script = ScriptDirectory(str(migrations(service)))
    heads = script.get_heads()
    assert len(heads) == 1, f"{service} has several migration heads {heads}: merge them"
    return heads[0]


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("service", SERVICES)
def test_migrations_build_the_models_schema_from_every_revision(
    service: str, backend: str, fresh_url: Any
) -> None:
    assert (migrations(service) / "env.py").exists(), f"{service} has no migrations"
    script = ScriptDirectory(str(migrations(service)))
    revisions = list(reversed(list(script.walk_revisions())))  # oldest first
    for revision in revisions:
        # Start from the state just before this revision (empty for the first), go to head.
        engine = make_engine(fresh_url(service, backend))
        try:
            config = alembic_config(service, engine)
            if revision.down_revision is not None:
                command.upgrade(config, str(revision.down_revision))
            prepare_schema(engine, metadata(service), migrations(service))
            assert current(engine) == head(service)
            differences = schema_differences(service, engine)
            assert not differences, (
                f"{service}'s models differ from its migrations: {differences}. "
                "Add a revision (see deploy/README.md, Upgrading)."
            )
            prepare_schema(engine, metadata(service), migrations(service))  # a no-op at head
            assert current(engine) == head(service)
        finally:
            engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
def test_downgrade_to_empty_and_back(service: str, fresh_url: Any) -> None:
    engine = make_engine(fresh_url(service, "postgresql"))
    try:
        config = alembic_config(service, engine)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        command.upgrade(config, "head")
        assert not schema_differences(service, engine)
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
def test_database_made_before_migrations_is_adopted_only_if_identical(
    service: str, fresh_url: Any
) -> None:
    engine = make_engine(fresh_url(service, "sqlite"))
    try:
        metadata(service).create_all(engine)  # what the service did before it had migrations
        prepare_schema(engine, metadata(service), migrations(service))
        assert current(engine) == head(service)
    finally:
        engine.dispose()
    drifted = make_engine(fresh_url(service, "postgresql"))
    try:
        metadata(service).create_all(drifted)
        table = sorted(metadata(service).tables)[0]
        with drifted.begin() as connection:
            connection.execute(text(f'ALTER TABLE "{table}" ADD COLUMN unexpected integer'))
        with pytest.raises(RuntimeError, match="no migration version"):
            prepare_schema(drifted, metadata(service), migrations(service))
        assert current(drifted) is None
    finally:
        drifted.dispose()


def job_environment(service: str, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSP_")}
    env.update({f"CSP_{service.upper()}_DATABASE_URL": url})
    return env


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
def test_migration_job_command_upgrades_to_head(service: str, fresh_url: Any) -> None:
    url = fresh_url(service, "postgresql")
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}.migrations"],
        cwd=REPO,
        env=job_environment(service, url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    engine = make_engine(url)
    try:
        assert current(engine) == head(service)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_replicas_migrating_together_do_not_race(fresh_url: Any) -> None:
    url = fresh_url("ingest", "postgresql")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "services.ingest.migrations"],
            cwd=REPO,
            env=job_environment("ingest", url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [v[0] for v in versions] == [head("ingest")]
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", ["env.py", "__main__.py", "script.py.mako"])
def test_every_service_uses_the_same_migration_environment(name: str) -> None:
    """The four copies differ only by the service's name and its lock key."""
    texts = {}
    keys = set()
    for service in SERVICES:
        text = (migrations(service) / name).read_text()
        key = re.search(r"^LOCK_KEY = (\d+)$", text, flags=re.M)
        if key:
            keys.add(key.group(1))
            text = text.replace(key.group(1), "<key>")
        texts[service] = text.replace(service, "<service>")
    assert len(set(texts.values())) == 1
    assert len(keys) in (0, len(SERVICES))


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
def test_new_migration_check_finds_nothing_to_add(service: str) -> None:
    result = subprocess.run(
        [sys.executable, "deploy/new_migration.py", service, "--check"],
        cwd=REPO,
        env=job_environment(service, "sqlite://"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
