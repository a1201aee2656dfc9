"""``csp audit witness``: an agency keeps the hub's signed audit checkpoints and checks that each
new one extends the last it kept, so the hub cannot rewrite the log it has already shown.

Each checkpoint signs the log's RFC 6962 tree head (size and root). For every new checkpoint the
witness asks for the consistency proof from the one it holds (``GET /v1/audit/consistency``
with ``digests=false``: O(log n) hashes, however many entries came in between) and checks it
(csp_cli.tree). Signatures are checked with the public keys pinned on the first run (Ed25519,
when the ``cryptography`` package is installed). The state file keeps the newest verified
checkpoint and the pinned keys; nothing is written when a check fails. A checkpoint held from
before the hub had its tree (no ``root``) is checked once more by chaining the digests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csp_cli import tree

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()
GENESIS = {"seq": 0, "hash": "0" * 64, "root": EMPTY_ROOT}
GetJson = Callable[..., Any]


class WitnessError(Exception):
    """A checkpoint does not extend the log the witness holds, or its signature fails."""


@dataclass
class Outcome:
    verified: int = 0
    newest: dict[str, Any] = field(default_factory=lambda: dict(GENESIS))
    signatures_checked: bool = False


def default_state() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "csp" / "witness.json"


def link(prev: str, digest: str) -> str:
    return hashlib.sha256((prev + digest).encode("ascii")).hexdigest()


def signature_ok(checkpoint: dict[str, Any], public_b64: str) -> bool | None:
    """Both signatures (of the chain head and of the tree head) are good: True or False; None
    when ``cryptography`` is not installed."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return None
    message = f"csp-audit-checkpoint:{checkpoint['seq']}:{checkpoint['hash']}:{checkpoint['at']}"
    signed = [(checkpoint["signature"], message.encode("ascii"))]
    tree_head = tree.tree_head_message(
        int(checkpoint["timestamp"]), int(checkpoint["seq"]), checkpoint["root"]
    )
    signed.append((checkpoint["tree_signature"], tree_head))
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
        for signature, content in signed:
            public.verify(base64.b64decode(signature), content)
    except (InvalidSignature, ValueError):
        return False
    return True


def new_checkpoints(get_json: GetJson, after: int) -> Iterator[tuple[dict[str, Any], dict]]:
    while True:
        page = get_json("/v1/audit/checkpoints", after=after, limit=1000)
        for checkpoint in page["checkpoints"]:
            yield checkpoint, page["public_keys"]
        if page.get("next") is None:
            return
        after = int(page["next"])


def witness(get_json: GetJson, state_path: Path) -> Outcome:
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    held: dict[str, Any] = state.get("checkpoint") or dict(GENESIS)
    pinned: dict[str, str] | None = state.get("public_keys")
    outcome = Outcome(newest=held)
    for checkpoint, keys in new_checkpoints(get_json, int(held["seq"])):
        if not checkpoint.get("root") or not checkpoint.get("tree_signature"):
            raise WitnessError(f"checkpoint {checkpoint['seq']} signs no tree head")
        if pinned is None:
            pinned = dict(keys)  # first run: trust the keys the hub names now
        public = pinned.get(checkpoint["signing_key_id"])
        if public is None:
            raise WitnessError(f"checkpoint {checkpoint['seq']} is signed by a key not pinned")
        verdict = signature_ok(checkpoint, public)
        if verdict is False:
            raise WitnessError(f"checkpoint {checkpoint['seq']} has a bad signature")
        outcome.signatures_checked = verdict is True
        held = _prove(get_json, held, checkpoint)
        outcome.verified += 1
    outcome.newest = held
    if outcome.verified:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps({"checkpoint": held, "public_keys": pinned}, indent=2))
    return outcome


def _prove(get_json: GetJson, held: dict[str, Any], checkpoint: dict[str, Any]) -> dict:
    """Check ``checkpoint`` extends ``held``: the RFC 6962 consistency proof between their tree
    heads (or, for a held checkpoint from before the tree, the digests chained onto its hash)."""
    legacy = not held.get("root")
    proof = get_json(
        "/v1/audit/consistency",
        **{"from": held["seq"], "to": checkpoint["seq"], "digests": str(legacy).lower()},
    )
    first = proof["first"]
    if first["hash"] != held["hash"] or (not legacy and first.get("root") != held["root"]):
        raise WitnessError(f"the hub no longer agrees with checkpoint {held['seq']} held here")
    if legacy:
        current = held["hash"]
        for digest in proof["digests"] or []:
            current = link(current, digest)
        extends = current == checkpoint["hash"]
    else:
        extends = tree.consistency_ok(
            int(held["seq"]), held["root"], int(checkpoint["seq"]), checkpoint["root"],
            proof["proof"],
        )  # fmt: skip
    if not extends:
        raise WitnessError(
            f"checkpoint {checkpoint['seq']} does not extend checkpoint {held['seq']}"
        )
    return checkpoint
