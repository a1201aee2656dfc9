"""``csp audit witness``: an agency keeps the hub's signed audit checkpoints and checks that each
new one extends the last it kept, so the hub cannot rewrite the log it has already shown.

For every new checkpoint the witness asks for the digests of the entries since the last one it
holds (``GET /v1/audit/consistency``) and chains them onto the held hash: each checkpoint passed on
the way, and the newest, must come out exactly. Signatures are checked with the public keys pinned
on the first run (Ed25519, when the ``cryptography`` package is installed). The state file keeps
the newest verified checkpoint and the pinned keys; nothing is written when a check fails.
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

GENESIS = {"seq": 0, "hash": "0" * 64}
MAX_PROOF_ENTRIES = 100_000  # the gateway's bound on one proof
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
    """True or False; None when ``cryptography`` is not installed."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return None
    message = f"csp-audit-checkpoint:{checkpoint['seq']}:{checkpoint['hash']}:{checkpoint['at']}"
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64)).verify(
            base64.b64decode(checkpoint["signature"]), message.encode("ascii")
        )
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
    pending: list[dict[str, Any]] = []
    for checkpoint, keys in new_checkpoints(get_json, int(held["seq"])):
        if pinned is None:
            pinned = dict(keys)  # first run: trust the keys the hub names now
        public = pinned.get(checkpoint["signing_key_id"])
        if public is None:
            raise WitnessError(f"checkpoint {checkpoint['seq']} is signed by a key not pinned")
        verdict = signature_ok(checkpoint, public)
        if verdict is False:
            raise WitnessError(f"checkpoint {checkpoint['seq']} has a bad signature")
        outcome.signatures_checked = verdict is True
        if pending and int(checkpoint["seq"]) - int(held["seq"]) > MAX_PROOF_ENTRIES:
            held = _prove(get_json, held, pending)
            pending = []
        pending.append(checkpoint)
        outcome.verified += 1
    if pending:
        held = _prove(get_json, held, pending)
    outcome.newest = held
    if outcome.verified:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps({"checkpoint": held, "public_keys": pinned}, indent=2))
    return outcome


def _prove(get_json: GetJson, held: dict[str, Any], pending: list[dict[str, Any]]) -> dict:
    """Chain the digests from ``held`` to the last of ``pending``; every one must come out."""
    last = pending[-1]
    proof = get_json("/v1/audit/consistency", **{"from": held["seq"], "to": last["seq"]})
    if proof["first"]["hash"] != held["hash"]:
        raise WitnessError(f"the hub no longer agrees with checkpoint {held['seq']} held here")
    expected = {int(c["seq"]): c["hash"] for c in pending}
    current, seq = held["hash"], int(held["seq"])
    for digest in proof["digests"]:
        current, seq = link(current, digest), seq + 1
        if seq in expected and expected[seq] != current:
            raise WitnessError(f"checkpoint {seq} does not extend checkpoint {held['seq']}")
    if seq != int(last["seq"]) or current != last["hash"]:
        raise WitnessError(f"checkpoint {last['seq']} does not extend checkpoint {held['seq']}")
    return last
