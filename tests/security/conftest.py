"""The attack suite runs against the four services as real processes (the end-to-end hub)."""

from __future__ import annotations

from tests.e2e.conftest import hub

__all__ = ["hub"]
