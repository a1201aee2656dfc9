"""The attack suite runs against the four services as real processes (the end-to-end hub), with
checkpoints every few entries and the replay memory shared through Redis, as in production."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.hub import Hub
from tests.e2e.conftest import running_hub

SETTINGS = {"CSP_GATEWAY_AUDIT_CHECKPOINT_EVERY": "4", "CSP_REDIS_URL": "redis://127.0.0.1:6379/0"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("hub"), SETTINGS) as running:
        yield running
