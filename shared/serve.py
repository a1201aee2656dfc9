"""The process entrypoint every service shares: ``python -m services.<name>``.

Host and port come from the service's settings, so the container command, ``make run`` and the
end-to-end tests start a service the same way.
"""

from __future__ import annotations

import os

import uvicorn

from shared.logging import configure_logging
from shared.settings import ServiceSettings

MAX_HEADER_BYTES = 16 * 1024


def serve(service: str, settings: ServiceSettings, factory: str) -> None:
    # Database files (SQLite and its -wal/-shm), keys and logs a service creates are its own only.
    os.umask(0o077)
    configure_logging(service, settings.log_level)
    uvicorn.run(
        factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        # Bounds the headers the server buffers while they arrive; the gateway checks the total.
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
