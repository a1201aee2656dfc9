"""The audit chain in the database: the writer that links batches onto the head (raw DB-API
calls, its own connection), checkpoint rows, and the head and Merkle tree made at start.

The writer commits: it is the audit log's group commit (``audit.AuditLog``), the one place
entries are written, on a connection of its own apart from any request's transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from services.gateway import chain, merkle
from services.gateway.audit_entries import (
    CHECKPOINT,
    ENTRY,
    ENTRY_COLUMNS,
    HEAD,
    PROVIDERS_AT,
    TREE_NODE,
    fit_values,
    now_iso,
    providers_column,
)
from services.gateway.audit_sign import Signer

log = logging.getLogger("csp.gateway.audit")


class GuardRefusedError(Exception):
    """A guarded batch's guard said no (another replica wrote those entries first)."""


# Run inside a guarded batch's transaction once the head is locked: (DB-API cursor, parameter
# marker) → whether to go ahead.
Guard = Callable[[Any, str], bool]


Head = tuple[int, str, int, float, str]  # seq, hash, checkpoint seq and time, Merkle frontier


_LOCK_HEAD = (
    "UPDATE audit_head SET seq = seq WHERE id = 1"
    " RETURNING seq, hash, checkpoint_seq, checkpoint_at, frontier"
)


class ChainWriter:
    """Extends the chain over its own database connection, remembering the head it last wrote.

    A batch first moves the head from the remembered value to the new one with a conditional
    UPDATE, which also takes the head's lock (the row lock on PostgreSQL, the write lock on
    SQLite). When another replica has extended the chain meanwhile, the UPDATE matches nothing;
    the writer then reads the head under the lock and links the batch onto it, so replicas
    sharing a database extend one chain in turn. Plain DB-API calls on the hot path: statement
    compilation and connection checkout were most of the audit's cost.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None
        self._head: Head | None = None
        self.marker = marker = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        columns = ", ".join(ENTRY_COLUMNS)
        self._insert = (
            f"INSERT INTO audit_entry ({columns})"
            f" VALUES ({', '.join([marker] * len(ENTRY_COLUMNS))})"
        )
        self._insert_checkpoint = (
            f"INSERT INTO audit_checkpoint ({', '.join(CHECKPOINT_COLUMNS)})"
            f" VALUES ({', '.join([marker] * len(CHECKPOINT_COLUMNS))})"
        )
        self._insert_nodes = (
            f"INSERT INTO audit_tree_node (level, idx, hash) VALUES ({marker}, {marker}, {marker})"
        )
        moves = (
            f"UPDATE audit_head SET seq = {marker}, hash = {marker}, checkpoint_seq = {marker},"
            f" checkpoint_at = {marker}, frontier = {marker} WHERE id = 1"
        )
        self._move_head = f"{moves} AND seq = {marker} AND hash = {marker}"
        self._set_head = moves

    def append(
        self,
        entries: list[dict[str, Any]],
        due: Callable[[int, int, float], bool],
        signer: Signer,
        guard: Guard | None = None,
    ) -> None:
        reused = self._connection is not None
        try:
            self._append(entries, due, signer, guard)
        except GuardRefusedError:
            raise
        except Exception:
            if not reused:
                raise
            # A kept connection may have gone stale (database restarted, idle timeout), so the
            # batch is tried once more on a fresh one before its requests are refused. Only a
            # commit whose answer was lost could leave its entries written twice; never lost.
            log.warning("audit write retried on a fresh connection")
            self._append(entries, due, signer, guard)

    def _append(
        self,
        entries: list[dict[str, Any]],
        due: Callable[[int, int, float], bool],
        signer: Signer,
        guard: Guard | None,
    ) -> None:
        connection = self._connection or self._connect()
        try:
            cursor = connection.cursor()
            head = self._head
            moved = False
            if head is not None:
                rows, checkpoints, nodes, new_head = _link_batch(entries, head, due, signer)
                cursor.execute(self._move_head, (*new_head, head[0], head[1]))
                moved = cursor.rowcount == 1
            if not moved:
                cursor.execute(_LOCK_HEAD)
                found = cursor.fetchone()
                head = (int(found[0]), str(found[1]), int(found[2]), float(found[3]), found[4])
                rows, checkpoints, nodes, new_head = _link_batch(entries, head, due, signer)
                cursor.execute(self._set_head, new_head)
            if guard is not None and not guard(cursor, self.marker):
                raise GuardRefusedError
            cursor.executemany(self._insert, rows)
            if nodes:
                cursor.executemany(self._insert_nodes, nodes)
            if checkpoints:
                cursor.executemany(self._insert_checkpoint, checkpoints)
            connection.commit()
        except GuardRefusedError:
            connection.rollback()  # the head stays where this writer remembers it
            raise
        except BaseException:
            self._discard()
            raise
        self._head = new_head

    def _connect(self) -> Any:
        self._connection = self.engine.raw_connection()
        return self._connection

    def _discard(self) -> None:
        """After a failure nothing is trusted: not the connection, not the remembered head."""
        self._head = None
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.rollback()
            except Exception as exc:  # noqa: BLE001 - the connection is being thrown away anyway
                log.warning("audit rollback failed", extra={"error": type(exc).__name__})
            connection.invalidate()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _link_batch(
    entries: list[dict[str, Any]],
    head: Head,
    due: Callable[[int, int, float], bool],
    signer: Signer,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[int, int, str]], Head]:
    """The rows of a batch chained onto ``head``, the checkpoint rows that fall due in it (so no
    more than ``checkpoint_every`` entries ever go unsigned, whatever the batch size), the Merkle
    subtrees it completes, the new head."""
    seq, prev, checkpoint_seq, checkpoint_at, frontier_text = head
    if frontier_text is None:
        raise RuntimeError("the audit Merkle tree is not built (audit.ensure_tree)")
    frontier = merkle.frontier_of(frontier_text)
    rows = []
    checkpoints = []
    nodes = []
    for entry in entries:
        seq += 1
        entry["seq"] = seq
        values = fit_values([entry.get(name) for name in chain.CONTENT_FIELDS])
        entry_digest = chain.digest_values(values)
        frontier, completed = merkle.append(frontier, seq - 1, merkle.leaf_hash(entry_digest))
        nodes += [(lv, i, h.hex()) for lv, i, h in completed if lv >= merkle.STORED_LEVEL]
        link = chain.link(prev, entry_digest)
        values[PROVIDERS_AT] = providers_column(values[PROVIDERS_AT])
        rows.append((*values, entry_digest, prev, link))
        prev = link
        if due(seq, checkpoint_seq, checkpoint_at):
            checkpoints.append(_checkpoint_row(signer, seq, prev, now_iso(), frontier))
            checkpoint_seq, checkpoint_at = seq, time.time()
    if not entries and due(seq, checkpoint_seq, checkpoint_at):
        checkpoints.append(_checkpoint_row(signer, seq, prev, now_iso(), frontier))
        checkpoint_seq, checkpoint_at = seq, time.time()
    new_head = (seq, prev, checkpoint_seq, checkpoint_at, merkle.frontier_text(frontier))
    return rows, checkpoints, nodes, new_head


CHECKPOINT_COLUMNS = (
    "seq", "hash", "at", "signing_key_id", "signature", "root", "timestamp", "tree_signature"
)  # fmt: skip


def _checkpoint_row(
    signer: Signer, seq: int, head: str, at: str, frontier: list[bytes]
) -> tuple[Any, ...]:
    root = merkle.root(frontier)
    stamp = int(time.time() * 1000)
    signed = signer.sign_tree(stamp, seq, root)
    return (seq, head, at, signer.key_id, signer.sign(seq, head, at), root.hex(), stamp, signed)


def ensure_head(connection: Connection) -> None:
    """The chain's head row, at the genesis hash on a new log. Two replicas starting at once may
    both insert it: the caller's transaction then fails with IntegrityError (main.py lets it)."""
    if connection.execute(select(HEAD.c.id).where(HEAD.c.id == 1)).first() is None:
        connection.execute(
            insert(HEAD).values(
                id=1,
                seq=0,
                hash=chain.GENESIS,
                checkpoint_seq=0,
                checkpoint_at=time.time(),
                frontier="",
            )
        )


def ensure_tree(connection: Connection, signer: Signer, chunk: int = 5000) -> int:
    """Build the Merkle tree of a log written before it existed (the head's frontier NULL): its
    stored subtrees, the frontier, and a signed tree head for every earlier checkpoint. Under the
    head's lock, so one replica builds it; the number of entries taken in (0 if built already)."""
    found = connection.execute(text(_LOCK_HEAD)).first()
    if found is None or found[4] is not None:
        return 0
    size = int(found[0])
    due = {
        int(row[0])
        for row in connection.execute(select(CHECKPOINT.c.seq).where(CHECKPOINT.c.root.is_(None)))
    }
    frontier: list[bytes] = []
    count = 0
    for start in range(0, size, chunk):
        digests = connection.execute(
            select(ENTRY.c.digest)
            .where(ENTRY.c.seq > start, ENTRY.c.seq <= min(start + chunk, size))
            .order_by(ENTRY.c.seq)
        ).scalars()
        nodes = []
        for entry_digest in digests:
            frontier, completed = merkle.append(frontier, count, merkle.leaf_hash(entry_digest))
            count += 1
            nodes += [n for n in completed if n[0] >= merkle.STORED_LEVEL]
            if count in due:
                _sign_tree_head(connection, signer, count, merkle.root(frontier))
        if nodes:
            connection.execute(
                insert(TREE_NODE),
                [{"level": lv, "idx": i, "hash": h.hex()} for lv, i, h in nodes],
            )
    connection.execute(
        update(HEAD).where(HEAD.c.id == 1).values(frontier=merkle.frontier_text(frontier))
    )
    log.info("audit Merkle tree built", extra={"n": count})
    return count


def _sign_tree_head(connection: Connection, signer: Signer, size: int, root: bytes) -> None:
    stamp = int(time.time() * 1000)
    connection.execute(
        update(CHECKPOINT)
        .where(CHECKPOINT.c.seq == size)
        .values(
            root=root.hex(),
            timestamp=stamp,
            tree_signature=signer.sign_tree(stamp, size, root),
        )
    )
