"""The names of a person that leave linkage, each a keyed hash of the person id under the
linkage key (or a key derived from it), and the key's fingerprint: the id itself never leaves
ingest, and a rotated key changes every name (``linkage.rekey`` re-sends the records)."""

from __future__ import annotations

import hashlib
import hmac


def person_pseudonym(key: str, person_id: int) -> str:
    """The person's pseudonym inside the hub (level ``personal`` at most)."""
    return hmac.new(key.encode(), f"person/{person_id}".encode(), hashlib.sha256).hexdigest()


def share_pseudonym(key: str, person_id: int) -> str:
    """The depersonalise-only pseudonym: the same id under a key derived from the linkage key,
    so it can count distinct people but matches nothing ingest publishes."""
    derived = hmac.new(key.encode(), b"csp-depersonalise-pseudonym", hashlib.sha256).digest()
    return hmac.new(derived, f"person/{person_id}".encode(), hashlib.sha256).hexdigest()


def person_handle(key: str, recipient: str, person_id: int) -> str:
    """The case view's name for a person, issued to one recipient only: it matches neither the
    hub's pseudonym nor any other recipient's handle of the same person."""
    derived = hmac.new(key.encode(), b"csp-case-view-handle", hashlib.sha256).digest()
    text = f"{recipient}/person/{person_id}".encode()
    return "p-" + hmac.new(derived, text, hashlib.sha256).hexdigest()[:32]


def key_fingerprint(key: str) -> str:
    """Names a linkage key without revealing it (a keyed hash of a constant)."""
    return hmac.new(key.encode(), b"csp-linkage-key-fingerprint", hashlib.sha256).hexdigest()
