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
from dataclasses import dataclass, field
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
    walk = _Walk({int(c["seq"]): c for c in checkpoints}, public_keys or {}, max_gap)
    problem = walk.resume(start) if start is not None else None
    problem = problem or walk.take_all(entries) or walk.end_problem(head)
    return problem or {
        "ok": True,
        "entries": walk.count,
        "head": walk.prev,
        "checkpoint": walk.signed,
    }


@dataclass
class _Walk:
    """How far ``verify`` has come along the chain: the last hash, the entries read, the last
    signed checkpoint, the Merkle frontier (a full check only) and the redactions seen."""

    checkpoints: dict[int, Mapping[str, Any]]
    keys: Mapping[str, str]
    max_gap: int | None
    prev: str = GENESIS
    count: int = 0
    signed: int = 0
    frontier: list[bytes] | None = field(default_factory=list)
    redacted: set[int] = field(default_factory=set)
    recorded: set[int] = field(default_factory=set)

    def resume(self, start: Mapping[str, Any]) -> dict[str, Any] | None:
        """Continue after a checkpoint already verified; its problem if it is not valid."""
        problem = _check_checkpoint(start, str(start["hash"]), self.keys)
        if problem:
            return _bad(int(start["seq"]), problem)
        self.checkpoints.pop(int(start["seq"]), None)
        self.count = self.signed = int(start["seq"])
        self.prev = str(start["hash"])
        self.frontier = None
        return None

    def take(self, entry: Mapping[str, Any]) -> dict[str, Any] | None:
        """Chain the next entry on; what is wrong with it, or None."""
        seq = int(entry["seq"])
        if seq != self.count + 1:
            return _bad(self.count + 1, "entry missing or out of order")
        broken = _link_problem(entry, self.prev)
        if broken:
            return _bad(seq, broken)
        if entry.get("redacted_at"):
            self.redacted.add(seq)  # its body is gone: it stands by its digest, if its redaction is
        target = redaction_target(entry)
        if target is not None and target < seq:
            self.recorded.add(target)
        if self.frontier is not None:
            self.frontier, _ = merkle.append(
                self.frontier, seq - 1, merkle.leaf_hash(entry["digest"])
            )
        problem = self._signed_problem(seq, entry["hash"])
        if problem:
            return _bad(seq, problem)
        self.prev = entry["hash"]
        self.count += 1
        return None

    def take_all(self, entries: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
        """Every entry in turn, up to the first that is wrong."""
        for entry in entries:
            problem = self.take(entry)
            if problem:
                return problem
        return None

    def end_problem(self, head: Mapping[str, Any] | None) -> dict[str, Any] | None:
        unrecorded = self.redacted - self.recorded
        return _end_problem(self.checkpoints, unrecorded, head, self.count, self.prev)

    def _signed_problem(self, seq: int, entry_hash: str) -> str:
        """The entry's checkpoint checked (and its tree head, on a full check), or the gap since
        the last one within ``max_gap``."""
        checkpoint = self.checkpoints.pop(seq, None)
        if checkpoint is None:
            if self.max_gap is not None and seq - self.signed > self.max_gap:
                return f"no signed checkpoint within {self.max_gap} entries"
            return ""
        problem = _check_checkpoint(checkpoint, entry_hash, self.keys)
        if not problem and self.frontier is not None and checkpoint.get("root"):
            problem = _check_tree_head(checkpoint, merkle.root(self.frontier), self.keys)
        if not problem:
            self.signed = seq
        return problem


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
