"""How a stored record is known: its revision (the batch's sequence number, then its row) and,
to depersonalise, its record key (a keyed hash, never the provider's own reference)."""

from __future__ import annotations

import hashlib
import hmac

ROW_BITS = 24


def revision_range(batch_seq: int) -> tuple[int, int]:
    """The revisions of one batch: ``batch_seq << 24 | row``, so a later push is always newer."""
    return batch_seq << ROW_BITS, (batch_seq + 1) << ROW_BITS


def record_key(secret: str, provider: str, dataset: str, source_ref: str) -> str:
    """What depersonalise knows a record by: never the provider's own reference."""
    message = f"{provider}/{dataset}/{source_ref}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
