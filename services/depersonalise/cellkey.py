"""Stable record keys for cell-key perturbation and for keyed cube cells.

Every derived record (and every linked person) has a key in 0..255 that is a fixed, secret
function of its identity: the same record keeps its key through corrections and rebuilds, so a
cell's key — the sum of its records' keys modulo 256 — is the same in every answer that counts
exactly those records. Recipients never see a key and cannot compute one without the secret.
"""

from __future__ import annotations

import hashlib
import hmac

KEY_RANGE = 256  # record keys are 0..255; a cell's key is the sum of its records' keys mod 256


def key_secret(internal_secret: str, configured: str | None = None) -> bytes:
    """The secret record keys are made with: ``configured`` when set, otherwise one derived from
    the internal secret under its own label (so neither key can be computed from the other)."""
    if configured:
        return configured.encode()
    return hmac.new(internal_secret.encode(), b"csp cell-key record keys v1", "sha256").digest()


def record_key_value(secret: bytes, identity: str) -> int:
    """The key (0..255) of a record (its ``record_key``) or of a person (its pseudonym)."""
    return hmac.new(secret, identity.encode(), hashlib.sha256).digest()[0]


def cell_key(key_sum: int) -> int:
    """A cell's key from the sum of its records' (or people's) keys."""
    return key_sum % KEY_RANGE
