"""Verify an exported audit chain offline: ``python scripts/verify_audit.py audit.jsonl``.

The file is what ``GET /v1/audit/export`` answers (JSON lines of signing keys, checkpoints,
entries and the head). Needs only Python and ``cryptography``; it shares no code with the hub on
purpose, so it is an independent check of docs/audit.md. Prints a JSON verdict; exit 0 if intact.
Pass ``--public-key <base64>`` (repeatable) to trust only keys you hold, not those in the file.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CONTENT_FIELDS = (
    "seq", "at", "request_id", "phase", "agency", "key_id", "method", "route", "dataset",
    "action", "level", "purpose", "rule", "agreement", "version", "providers", "status",
    "outcome", "records",
)  # fmt: skip


def sha256_hex(data: str) -> str:
    return hashlib.sha256(data.encode("ascii")).hexdigest()


def entry_digest(entry: dict[str, Any]) -> str:
    content = {name: entry.get(name) for name in CONTENT_FIELDS}
    return sha256_hex(json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True))


def signature_ok(checkpoint: dict[str, Any], public_b64: str) -> bool:
    message = f"csp-audit-checkpoint:{checkpoint['seq']}:{checkpoint['hash']}:{checkpoint['at']}"
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64)).verify(
            base64.b64decode(checkpoint["signature"]), message.encode("ascii")
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(
    lines: list[dict[str, Any]], trusted: dict[str, str] | None, every: int = 0
) -> dict[str, Any]:
    """``every`` > 0: a signed checkpoint is required at least every ``every`` entries."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        kinds.setdefault(line["type"], []).append(line)
    keys = trusted or {k["key_id"]: k["public_key"] for k in kinds.get("signing_key", [])}
    checkpoints = {int(c["seq"]): c for c in kinds.get("checkpoint", [])}
    entries = sorted(kinds.get("entry", []), key=lambda e: int(e["seq"]))
    heads = kinds.get("head", [])
    prev, count, signed = "0" * 64, 0, 0
    redacted, recorded = [], set()
    for expected, entry in enumerate(entries, start=1):
        seq = int(entry["seq"])
        if seq != expected:
            return bad(expected, "entry missing or duplicated")
        if entry["prev_hash"] != prev:
            return bad(seq, "previous hash does not match")
        # A redacted entry's body was erased: it is taken by its digest, if a later entry
        # (action "redact", request id "redact-<seq>") records the redaction.
        if entry.get("redacted_at"):
            redacted.append(seq)
        elif entry_digest(entry) != entry["digest"]:
            return bad(seq, "content does not match its digest")
        request = str(entry.get("request_id") or "")
        target = request[len("redact-") :]
        if entry.get("action") == "redact" and request.startswith("redact-") and target.isdigit():
            recorded.update([target] if int(target) < seq else [])
        if sha256_hex(prev + entry["digest"]) != entry["hash"]:
            return bad(seq, "hash does not match the chain")
        checkpoint = checkpoints.pop(seq, None)
        if checkpoint is not None:
            if checkpoint["hash"] != entry["hash"]:
                return bad(seq, "signed checkpoint does not match the chain")
            public = keys.get(checkpoint["signing_key_id"])
            if public is None or not signature_ok(checkpoint, public):
                return bad(seq, "checkpoint signature is not valid")
            signed = seq
        elif every and seq - signed > every:
            return bad(seq, f"no signed checkpoint within {every} entries")
        prev, count = entry["hash"], seq
    if checkpoints:
        return bad(min(checkpoints), "a signed checkpoint names an entry that is missing")
    unrecorded = [seq for seq in redacted if str(seq) not in recorded]
    if unrecorded:
        return bad(unrecorded[0], "entry redacted without a recorded redaction")
    if heads and (int(heads[-1]["seq"]) != count or (count and heads[-1]["hash"] != prev)):
        return bad(count + 1, "the exported head does not match the last entry")
    return {"ok": True, "entries": count, "head": prev}


def bad(seq: int, reason: str) -> dict[str, Any]:
    return {"ok": False, "first_bad_entry": seq, "reason": reason}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", help="file from GET /v1/audit/export")
    parser.add_argument("--public-key", action="append", default=[], help="trusted base64 key")
    parser.add_argument(
        "--checkpoint-every", type=int, default=1000,
        help="the hub's CSP_GATEWAY_AUDIT_CHECKPOINT_EVERY: a longer unsigned run fails (0: off)",
    )  # fmt: skip
    args = parser.parse_args()
    with open(args.export, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    trusted = None
    if args.public_key:
        trusted = {hashlib.sha256(base64.b64decode(k)).hexdigest()[:16]: k for k in args.public_key}
    result = verify(lines, trusted, args.checkpoint_every)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
