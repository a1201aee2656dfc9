"""The audit hash chain: digests of entries, the chain over them, and its verification.

Plain functions over plain dicts, so the service, the tests and the offline verifier agree.
Each entry's ``digest`` is SHA-256 of its canonical JSON content; ``hash`` is
SHA-256(prev_hash + digest) over the hex strings. The chain covers only digests, so an entry's
content can be erased later (``redacted_at`` set) while the chain still verifies: a redacted entry
stands by its digest, provided a later entry records its redaction.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.gateway import merkle

GENESIS = "0" * 64
# A redaction is itself an entry: action ``redact``, request id ``redact-<seq of the entry>``.
REDACT = "redact"
REDACT_PREFIX = "redact-"
CONTENT_FIELDS = (
    "seq",
    "at",
    "request_id",
    "phase",
    "agency",
    "key_id",
    "method",
    "route",
    "dataset",
    "action",
    "level",
    "purpose",
    "rule",
    "agreement",
    "version",
    "providers",
    "status",
    "outcome",
    "records",
    "reason",  # the CSP-Reason of a case-view read; absent from the digest when there is none
)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def digest(entry: Mapping[str, Any]) -> str:
    return digest_values([entry.get(name) for name in CONTENT_FIELDS])


def digest_values(values: Iterable[Any]) -> str:
    """The digest of an entry given as its values in ``CONTENT_FIELDS`` order."""
    content = dict(zip(CONTENT_FIELDS, values, strict=True))
    if content["reason"] is None:
        # Entries written before the reason existed keep their digests.
        del content["reason"]
    canonical = _CANONICAL.encode(content)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def link(prev_hash: str, entry_digest: str) -> str:
    return hashlib.sha256((prev_hash + entry_digest).encode("ascii")).hexdigest()


def checkpoint_message(seq: int, head: str, at: str) -> bytes:
    return f"csp-audit-checkpoint:{seq}:{head}:{at}".encode("ascii")


def public_key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def verify(
    entries: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[Mapping[str, Any]] = (),
    public_keys: Mapping[str, str] | None = None,
    head: Mapping[str, Any] | None = None,
    max_gap: int | None = None,
    start: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check the chain in seq order, then each signed checkpoint against it.

    ``public_keys`` maps signing key id to base64 raw Ed25519 public key; ``head`` is the stored
    head (seq, hash), which catches entries deleted from the end. With ``max_gap`` a signed
    checkpoint is mandatory at least every ``max_gap`` entries, up to the head: deleting
    checkpoints to rewrite what they covered fails. ``start`` (a checkpoint already verified,
    e.g. the last one a previous run checked) makes the check incremental: only entries after it
    are read, chained onto its hash. A full check also recomputes the Merkle tree and checks each
    checkpoint's signed tree head against it.
    """
    by_seq = {int(c["seq"]): c for c in checkpoints}
    keys = public_keys or {}
    expected_seq = 1
    prev = GENESIS
    count = 0
    if start is not None:
        problem = _check_checkpoint(start, str(start["hash"]), keys)
        if problem:
            return _bad(int(start["seq"]), problem)
        by_seq.pop(int(start["seq"]), None)
        count = int(start["seq"])
        expected_seq, prev = count + 1, str(start["hash"])
    signed = count
    frontier: list[bytes] | None = [] if start is None else None
    redacted: set[int] = set()
    recorded: set[int] = set()
    for entry in entries:
        seq = int(entry["seq"])
        if seq != expected_seq:
            return _bad(expected_seq, "entry missing or out of order")
        broken = _link_problem(entry, prev)
        if broken:
            return _bad(seq, broken)
        if entry.get("redacted_at"):
            redacted.add(seq)  # its body is gone: it stands by its digest, if its redaction is
        target = redaction_target(entry)
        if target is not None and target < seq:
            recorded.add(target)
        if frontier is not None:
            frontier, _ = merkle.append(frontier, seq - 1, merkle.leaf_hash(entry["digest"]))
        checkpoint = by_seq.pop(seq, None)
        if checkpoint is not None:
            problem = _check_checkpoint(checkpoint, entry["hash"], keys)
            if not problem and frontier is not None and checkpoint.get("root"):
                problem = _check_tree_head(checkpoint, merkle.root(frontier), keys)
            if problem:
                return _bad(seq, problem)
            signed = seq
        elif max_gap is not None and seq - signed > max_gap:
            return _bad(seq, f"no signed checkpoint within {max_gap} entries")
        prev = entry["hash"]
        expected_seq += 1
        count += 1
    unmatched = _end_problem(by_seq, redacted - recorded, head, count, prev)
    return unmatched or {"ok": True, "entries": count, "head": prev, "checkpoint": signed}


def _end_problem(
    checkpoints_left: Mapping[int, Any],
    unrecorded: set[int],
    head: Mapping[str, Any] | None,
    count: int,
    prev: str,
) -> dict[str, Any] | None:
    """What is wrong once every entry is read: a checkpoint of a missing entry, a redaction no
    entry records, a head that is not the last entry's; None when nothing is."""
    if checkpoints_left:
        return _bad(min(checkpoints_left), "a signed checkpoint names an entry that is missing")
    if unrecorded:
        return _bad(min(unrecorded), "entry redacted without a recorded redaction")
    if head is not None and (int(head["seq"]) != count or (count and head["hash"] != prev)):
        return _bad(count + 1 if int(head["seq"]) > count else count, "chain head does not match")
    return None


def _link_problem(entry: Mapping[str, Any], prev: str) -> str | None:
    """Why ``entry`` does not extend the chain whose last hash is ``prev``, or None. A redacted
    entry's body is gone, so it is not checked against its digest."""
    if entry["prev_hash"] != prev:
        return "previous hash does not match"
    if not entry.get("redacted_at") and digest(entry) != entry["digest"]:
        return "content does not match its digest"
    if link(prev, entry["digest"]) != entry["hash"]:
        return "hash does not match the chain"
    return None


def redaction_target(entry: Mapping[str, Any]) -> int | None:
    """The seq an entry records the redaction of, or None."""
    request = str(entry.get("request_id") or "")
    if entry.get("action") != REDACT or not request.startswith(REDACT_PREFIX):
        return None
    number = request[len(REDACT_PREFIX) :]
    return int(number) if number.isdigit() else None


def _check_checkpoint(
    checkpoint: Mapping[str, Any], entry_hash: str, keys: Mapping[str, str]
) -> str:
    if checkpoint["hash"] != entry_hash:
        return "signed checkpoint does not match the chain"
    public = keys.get(checkpoint["signing_key_id"])
    if public is None:
        return "checkpoint signed by an unknown key"
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public)).verify(
            base64.b64decode(checkpoint["signature"]),
            checkpoint_message(int(checkpoint["seq"]), checkpoint["hash"], checkpoint["at"]),
        )
    except (InvalidSignature, ValueError):
        return "checkpoint signature is not valid"
    return ""


def _check_tree_head(checkpoint: Mapping[str, Any], root: bytes, keys: Mapping[str, str]) -> str:
    if checkpoint["root"] != root.hex():
        return "signed tree head does not match the entries"
    message = merkle.tree_head_message(int(checkpoint["timestamp"]), int(checkpoint["seq"]), root)
    try:
        Ed25519PublicKey.from_public_bytes(
            base64.b64decode(keys[checkpoint["signing_key_id"]])
        ).verify(base64.b64decode(checkpoint["tree_signature"] or ""), message)
    except (InvalidSignature, ValueError, KeyError):
        return "tree head signature is not valid"
    return ""


def _bad(seq: int, reason: str) -> dict[str, Any]:
    return {"ok": False, "first_bad_entry": seq, "reason": reason}


def consistent(first_hash: str, digests: Iterable[str], second_hash: str) -> bool:
    """Whether chaining ``digests`` onto ``first_hash`` gives ``second_hash``: the log at the
    second checkpoint extends the log at the first, unchanged."""
    current = first_hash
    for entry_digest in digests:
        current = link(current, entry_digest)
    return current == second_hash
