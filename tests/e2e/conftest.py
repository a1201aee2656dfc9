"""The four services as real processes on free ports, driven only over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.hub import DEFAULT_PORTS, Hub, free_port
from tests.conftest import TEST_KEYS, create_pg_database, drop_pg_database, using_postgres

ADMIN_KEY = "csp_ops_end-to-end-test-operators-key"


@contextmanager
def running_hub(folder: Path, extra: dict[str, str] | None = None) -> Iterator[Hub]:
    """The four services on free ports over fresh databases, with ``extra`` settings."""
    if using_postgres():
        databases = {name: create_pg_database(name) for name in DEFAULT_PORTS}
    else:
        databases = {name: f"sqlite:///{folder / name}.db" for name in DEFAULT_PORTS}
    ports = {name: free_port() for name in DEFAULT_PORTS}
    lines: list[str] = []
    running = Hub(
        ports,
        databases,
        TEST_KEYS,
        {
            "CSP_ADMIN_KEY": ADMIN_KEY,
            "CSP_INGEST_RELAY_INTERVAL_SECONDS": "0.2",
            "CSP_INGEST_LINKAGE_KEY": "end-to-end-linkage-key-not-for-production",
            **(extra or {}),
        },
        sink=lines.append,
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
        if using_postgres():
            for url in databases.values():
                drop_pg_database(url)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("hub")) as running:
        yield running
