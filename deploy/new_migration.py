"""Adds an Alembic revision to a service after its models changed (for developers):

    python deploy/new_migration.py ingest "add a retention column to batch"
    python deploy/new_migration.py ingest --check     # exit 1 if the models need a revision

It upgrades a scratch PostgreSQL database to the current head, compares it with the models,
writes the differences as a new revision under services/<name>/migrations/versions/ and formats
it with ruff. Review the file before committing: autogenerate does not see renames.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("gateway", "agreements", "ingest", "depersonalise")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="add an Alembic revision to a service")
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("message", nargs="?", help="what the revision changes")
    parser.add_argument("--check", action="store_true", help="only say whether one is needed")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "CSP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server where a scratch database may be created",
    )
    args = parser.parse_args(argv)
    if not args.check and not args.message:
        parser.error("a message is required (or --check)")
    sys.path.insert(0, str(REPO))
    models = importlib.import_module(f"services.{args.service}.models")
    from shared.db import make_engine
    from shared.migrations import not_a_partition

    scratch = f"csp_newmig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{scratch}"'))
    engine = make_engine(make_url(args.pg_url).set(database=scratch).render_as_string(False))
    try:
        config = Config()
        folder = REPO / "services" / args.service / "migrations"
        config.set_main_option("script_location", str(folder))
        config.set_main_option(
            "file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"
        )
        config.attributes["engine"] = engine
        command.upgrade(config, "head")
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "include_object": not_a_partition(models.Base.metadata),
                },
            )
            differences = compare_metadata(context, models.Base.metadata)
        if args.check:
            for difference in differences:
                print(difference)
            print(f"{args.service}: {'a revision is needed' if differences else 'up to date'}")
            return 1 if differences else 0
        if not differences:
            print(f"{args.service}: the migrations already match the models")
            return 0
        script = command.revision(config, message=args.message, autogenerate=True)
        path = str(script.path) if script is not None and not isinstance(script, list) else ""
        ruff = Path(sys.executable).parent / "ruff"
        # Generated code in the repo's style, so `make lint` passes; argv is fixed, not input.
        subprocess.run([str(ruff), "check", "--fix", "--quiet", path], check=False)  # noqa: S603
        subprocess.run([str(ruff), "format", "--quiet", path], check=True)  # noqa: S603
        print(f"wrote {path}: review it, then run tests/deploy/test_migrations.py")
        return 0
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
