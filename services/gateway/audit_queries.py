"""Reading the audit chain: who sees which entries, searches, verification, export, checkpoints
and proofs, and the redaction of an entry's body. Each takes the request's connection and never
commits; a limit or a refusal is a ``ProblemError`` naming the parameter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from services.gateway import chain, merkle
from services.gateway.audit_entries import (
    CHECKPOINT,
    ENTRY,
    HEAD,
    KEPT_WHEN_REDACTED,
    READ_COLUMNS,
    SIGNING_KEY,
    TREE_NODE,
    entry_dict,
    now_iso,
    provider_view,
)
from shared.errors import ProblemError

# The most digests one consistency answer carries (the tree proof alone has no such bound).
MAX_PROOF_ENTRIES = 100_000


def iter_entries(
    connection: Connection, upto: int, chunk: int = 5000, after: int = 0
) -> Iterator[dict[str, Any]]:
    columns = [ENTRY.c[name] for name in READ_COLUMNS]
    while True:
        rows = connection.execute(
            select(*columns)
            .where(ENTRY.c.seq > after, ENTRY.c.seq <= upto)
            .order_by(ENTRY.c.seq)
            .limit(chunk)
        ).all()
        for row in rows:
            yield entry_dict(row)
        if len(rows) < chunk:
            return
        after = rows[-1][0]


def read_head(connection: Connection) -> dict[str, Any]:
    row = connection.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1)).first()
    return {"seq": 0, "hash": chain.GENESIS} if row is None else {"seq": row[0], "hash": row[1]}


def checkpoints_and_keys(
    connection: Connection, upto: int
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    query = select(CHECKPOINT).where(CHECKPOINT.c.seq <= upto).order_by(CHECKPOINT.c.seq)
    checkpoints = [dict(row._mapping) for row in connection.execute(query)]
    keys = {
        row[0]: row[1]
        for row in connection.execute(select(SIGNING_KEY.c.key_id, SIGNING_KEY.c.public_key))
    }
    return checkpoints, keys


def verify_store(
    connection: Connection,
    *,
    max_gap: int | None = None,
    trusted: dict[str, str] | None = None,
    after: int | None = None,
) -> dict[str, Any]:
    """Verify the stored chain. ``trusted`` public keys (by id) replace the table's, which anyone
    with the database could extend; ``after`` (a checkpoint's seq) verifies only from there on."""
    # Read the head first and check up to it, so entries appended meanwhile do not count.
    head = read_head(connection)
    checkpoints, keys = checkpoints_and_keys(connection, head["seq"])
    keys = trusted if trusted is not None else keys
    start = None
    if after:
        start = next((c for c in checkpoints if c["seq"] == after), None)
        if start is None:
            return {"ok": False, "first_bad_entry": after, "reason": "no checkpoint there"}
        checkpoints = [c for c in checkpoints if c["seq"] > after]
    entries = iter_entries(connection, head["seq"], after=after or 0)
    return chain.verify(entries, checkpoints, keys, head, max_gap, start)


def list_checkpoints(connection: Connection, after: int, limit: int) -> list[dict[str, Any]]:
    query = (
        select(CHECKPOINT).where(CHECKPOINT.c.seq > after).order_by(CHECKPOINT.c.seq).limit(limit)
    )
    return [dict(row._mapping) for row in connection.execute(query)]


def public_keys(connection: Connection) -> dict[str, str]:
    rows = connection.execute(select(SIGNING_KEY.c.key_id, SIGNING_KEY.c.public_key))
    return {row[0]: row[1] for row in rows}


def consistency(
    connection: Connection, first: int, second: int, with_digests: bool = True
) -> dict[str, Any] | None:
    """The two checkpoints and (``with_digests``) the digests of the entries after ``first`` up to
    ``second``; None if either is not a checkpoint."""
    found = {
        row.seq: dict(row._mapping)
        for row in connection.execute(
            select(CHECKPOINT).where(CHECKPOINT.c.seq.in_([first, second]))
        )
    }
    if (first not in found and first != 0) or second not in found:
        return None
    digests = None
    if with_digests:
        digests = [
            row[0]
            for row in connection.execute(
                select(ENTRY.c.digest)
                .where(ENTRY.c.seq > first, ENTRY.c.seq <= second)
                .order_by(ENTRY.c.seq)
            )
        ]
    genesis = {
        "seq": 0, "hash": chain.GENESIS, "at": "", "signing_key_id": "", "signature": "",
        "root": merkle.EMPTY_ROOT.hex(),
    }  # fmt: skip
    return {"first": found.get(first, genesis), "second": found[second], "digests": digests}


def tree_nodes(connection: Connection) -> merkle.Nodes:
    """Perfect subtree roots: stored ones read by key, smaller ones hashed from their leaves."""
    cache: dict[tuple[int, int], bytes] = {}

    def nodes(level: int, index: int) -> bytes:
        found = cache.get((level, index))
        if found is not None:
            return found
        if level >= merkle.STORED_LEVEL:
            stored = connection.execute(
                select(TREE_NODE.c.hash).where(TREE_NODE.c.level == level, TREE_NODE.c.idx == index)
            ).scalar_one()
            found = bytes.fromhex(stored)
        else:
            first = index << level
            digests = connection.execute(
                select(ENTRY.c.digest)
                .where(ENTRY.c.seq > first, ENTRY.c.seq <= first + (1 << level))
                .order_by(ENTRY.c.seq)
            ).scalars()
            hashes = [merkle.leaf_hash(d) for d in digests]
            if len(hashes) != 1 << level:
                raise LookupError(f"no complete subtree at level {level}, index {index}")
            while len(hashes) > 1:
                hashes = [
                    merkle.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)
                ]
            found = hashes[0]
        cache[(level, index)] = found
        return found

    return nodes


def _checkpoint_at(connection: Connection, seq: int) -> dict[str, Any] | None:
    row = connection.execute(select(CHECKPOINT).where(CHECKPOINT.c.seq == seq)).first()
    return None if row is None else dict(row._mapping)


def tree_consistency(connection: Connection, first: int, second: int) -> list[str]:
    """RFC 6962 consistency proof between the trees of sizes ``first`` and ``second`` (hex)."""
    if first == 0 or first == second:
        return []
    proof = merkle.consistency_proof(first, second, tree_nodes(connection))
    return [h.hex() for h in proof]


def inclusion(connection: Connection, seq: int, size: int) -> dict[str, Any] | None:
    """Entry ``seq``'s RFC 6962 inclusion proof in the tree of checkpoint ``size``; None if there
    is no such entry or checkpoint."""
    checkpoint = _checkpoint_at(connection, size)
    found = connection.execute(select(ENTRY.c.digest).where(ENTRY.c.seq == seq)).first()
    if checkpoint is None or found is None or seq > size:
        return None
    proof = merkle.inclusion_proof(seq - 1, size, tree_nodes(connection))
    return {
        "seq": seq,
        "digest": found[0],
        "leaf_index": seq - 1,
        "leaf_hash": merkle.leaf_hash(found[0]).hex(),
        "tree_size": size,
        "proof": [h.hex() for h in proof],
        "checkpoint": checkpoint,
    }


def export_lines(connection: Connection) -> Iterator[dict[str, Any]]:
    """The whole chain for offline verification: keys, checkpoints, entries, then the head."""
    head = read_head(connection)
    checkpoints, keys = checkpoints_and_keys(connection, head["seq"])
    for key_id, public_key in keys.items():
        yield {"type": "signing_key", "key_id": key_id, "public_key": public_key}
    for checkpoint in checkpoints:
        yield {"type": "checkpoint", **checkpoint}
    for entry in iter_entries(connection, head["seq"]):
        yield {"type": "entry", **entry}
    yield {"type": "head", **head}


def search(
    connection: Connection,
    *,
    agency: str | None = None,
    dataset: str | None = None,
    provider: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    columns = [ENTRY.c[name] for name in READ_COLUMNS]
    query = select(*columns).where(ENTRY.c.seq > after)
    if agency:
        query = query.where(ENTRY.c.agency == agency)
    if dataset:
        query = query.where(ENTRY.c.dataset == dataset)
    if provider:
        query = query.where(ENTRY.c.providers.like(f"%,{provider},%"))
    if outcome:
        query = query.where(ENTRY.c.outcome == outcome)
    if since:
        query = query.where(ENTRY.c.at >= since)
    if until:
        query = query.where(ENTRY.c.at < until)
    query = query.order_by(ENTRY.c.seq).limit(limit)
    return [entry_dict(row) for row in connection.execute(query)]


def redactable(connection: Connection, seq: int) -> str | None:
    """Why entry ``seq`` cannot be redacted (missing, already redacted), or None."""
    row = connection.execute(
        select(ENTRY.c.redacted_at, ENTRY.c.action).where(ENTRY.c.seq == seq)
    ).first()
    if row is None:
        return "missing"
    if row[0] is not None:
        return "redacted"
    return None


def check_redactable(connection: Connection, seq: int) -> None:
    """404 for no such entry, 409 for one already redacted."""
    problem = redactable(connection, seq)
    if problem == "missing":
        raise ProblemError(404, f"No audit entry {seq}.", slug="entry-not-found", field="seq")
    if problem == "redacted":
        raise ProblemError(409, f"Audit entry {seq} is already redacted.", slug="already-redacted")


def redact(connection: Connection, seq: int) -> bool:
    """Erase entry ``seq``'s body, keeping its digest and links (and so the chain)."""
    erased = {
        name: ("" if not ENTRY.c[name].nullable else None)
        for name in chain.CONTENT_FIELDS
        if name not in KEPT_WHEN_REDACTED
    }
    result = connection.execute(
        update(ENTRY)
        .where(ENTRY.c.seq == seq, ENTRY.c.redacted_at.is_(None))
        .values(**erased, redacted_at=now_iso())
    )
    return bool(result.rowcount)


def trail(
    connection: Connection,
    viewer: str | None,
    parties: set[str],
    *,
    until: str | None = None,
    **filters: Any,
) -> list[dict[str, Any]]:
    """A page of the trail as ``viewer`` may see it: an operator (``None``) every entry; an agency
    every access to the data it provided, each entry in its provider's view (``parties``: the
    agreements it is party to). ``until`` as a date is inclusive."""
    if until is not None and len(until) == 10:
        until += "T24"  # sorts after every time on that day
    entries = search(connection, provider=viewer, until=until, **filters)
    if viewer is None:
        return entries
    return [provider_view(e, viewer, parties) for e in entries]


def consistency_answer(
    connection: Connection, first: int, second: int, with_digests: bool
) -> dict[str, Any]:
    """The consistency proof between checkpoints ``first`` and ``second`` (see ``consistency``),
    with the RFC 6962 ``proof``; 422 for a range out of bounds, 404 for a non-checkpoint."""
    if second <= first:
        raise ProblemError(422, "`to` must be after `from`.", slug="invalid", field="to")
    if with_digests and second - first > MAX_PROOF_ENTRIES:
        raise ProblemError(
            422,
            f"At most {MAX_PROOF_ENTRIES} digests per answer: ask with digests=false for the "
            "tree proof alone, or go through checkpoints in between.",
            slug="invalid",
            field="to",
        )
    proof = consistency(connection, first, second, with_digests)
    if proof is None:
        raise ProblemError(
            404, "`from` and `to` must both be signed checkpoints.", slug="no-checkpoint"
        )
    proof["proof"] = tree_consistency(connection, first, second)
    return proof


def inclusion_answer(connection: Connection, seq: int, size: int) -> dict[str, Any]:
    """Entry ``seq``'s inclusion proof at checkpoint ``size`` (see ``inclusion``), or 422/404."""
    if seq > size:
        raise ProblemError(422, "`size` must be at least the entry's seq.", field="size")
    found = inclusion(connection, seq, size)
    if found is None:
        raise ProblemError(
            404, "No such entry, or `size` is not a signed checkpoint.", slug="no-checkpoint"
        )
    return found
