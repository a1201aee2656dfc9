"""What a push was asked to do (``PushOptions``) and what it did (``PushOutcome``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.catalogue import Dataset

if TYPE_CHECKING:  # linkage writes batches, whose rows carry an outcome's counts
    from services.ingest.linkage_fields import LinkageConfig


@dataclass
class PushOptions:
    provider: str
    atomic: bool = False
    allowed_fields: list[str] | None = None
    chunk_rows: int = 2000
    max_rows: int = 5_000_000
    max_errors: int = 1000
    idempotency: tuple[str, str, int] | None = None
    """(key, request fingerprint, hours to keep) when the sender gave an Idempotency-Key."""
    linkage: LinkageConfig | None = None
    catalogue: Mapping[str, Dataset] | None = None
    """Every dataset, so corrections can re-link the other records of the people they leave."""


@dataclass
class PushOutcome:
    batch_id: str
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    corrections: int = 0
    unlocated: int = 0
    outside_gb: int = 0
    late: int = 0
    reasons: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    """(field, message) -> rows refused for it; every row, however many errors are listed."""

    def counts(self) -> dict[str, int]:
        names = ("received", "accepted", "rejected", "corrections", "unlocated", "outside_gb")
        return {name: getattr(self, name) for name in (*names, "late")}

    def answer(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "batch_id": self.batch_id,
            "received": self.received,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "errors": self.errors,
        }
        if self.errors_total > len(self.errors):
            body["errors_total"] = self.errors_total
        return body

    def refuse_atomic(self) -> None:
        """An atomic batch with errors is refused whole: every row rejected, nothing counted."""
        valid = self.received - self.rejected
        if valid:
            self.reasons[(None, "refused with the rest of its atomic batch")] += valid
        self.rejected, self.accepted = self.received, 0
        self.corrections = self.unlocated = self.late = 0
