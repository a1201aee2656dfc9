"""The digest ingest and depersonalise both compute for the reconciler (docs/architecture.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def revision_digest(revisions: Iterable[int]) -> str:
    """SHA-256 over the sorted revisions held for one dataset x provider.

    Revisions are unique across the hub and change with every correction, so equal digests mean
    the same records at the same revisions on both sides."""
    return hashlib.sha256(",".join(map(str, sorted(revisions))).encode()).hexdigest()
