"""The four services as real processes on free ports, driven only over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.hub import DEFAULT_PORTS, Hub, free_port
from tests.conftest import INTERNAL_SECRET, create_pg_database, drop_pg_database, using_postgres

ADMIN_KEY = "csp_ops_end-to-end-test-operators-key"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = tmp_path_factory.mktemp("hub")
    if using_postgres():
        databases = {name: create_pg_database(name) for name in DEFAULT_PORTS}
    else:
        databases = {name: f"sqlite:///{folder / name}.db" for name in DEFAULT_PORTS}
    ports = {name: free_port() for name in DEFAULT_PORTS}
    lines: list[str] = []
    running = Hub(
        ports,
        databases,
        INTERNAL_SECRET,
        {
            "CSP_ADMIN_KEY": ADMIN_KEY,
            "CSP_INGEST_RELAY_INTERVAL_SECONDS": "0.2",
            "CSP_INGEST_LINKAGE_KEY": "end-to-end-linkage-key-not-for-production",
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
