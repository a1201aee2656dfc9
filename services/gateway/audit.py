"""The audit log: a group-commit writer that fails closed, signed checkpoints, queries.

Requests await their entry's commit before any answer reaches the client, but concurrent
requests share one transaction (group commit), so the audit costs a fraction of a write each.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr
from sqlalchemy import Table, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from services.gateway import chain, merkle
from services.gateway.models import (
    AuditCheckpoint,
    AuditEntry,
    AuditHead,
    AuditSigningKey,
    AuditTreeNode,
)
from shared.db import is_sqlite

log = logging.getLogger("csp.gateway.audit")
ENTRY: Table = AuditEntry.__table__  # type: ignore[attr-defined]
HEAD: Table = AuditHead.__table__  # type: ignore[attr-defined]
CHECKPOINT: Table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
SIGNING_KEY: Table = AuditSigningKey.__table__  # type: ignore[attr-defined]
TREE_NODE: Table = AuditTreeNode.__table__  # type: ignore[attr-defined]

ENTRY_COLUMNS = [*chain.CONTENT_FIELDS, "digest", "prev_hash", "hash"]
READ_COLUMNS = [*ENTRY_COLUMNS, "redacted_at"]
# What a redaction keeps of an entry besides its digest and links: when, and how it ended.
KEPT_WHEN_REDACTED = {"seq", "at", "phase", "outcome"}
# Clients choose some values (level, purpose, method...); PostgreSQL refuses one over its column.
COLUMN_LENGTHS: list[tuple[int, int]] = [
    (chain.CONTENT_FIELDS.index(column.name), length)
    for column in ENTRY.columns
    if isinstance(length := getattr(column.type, "length", None), int)
    and column.name in chain.CONTENT_FIELDS
]
PROVIDERS_AT = chain.CONTENT_FIELDS.index("providers")


class AuditUnavailableError(Exception):
    """The audit entry could not be written, so the request must not be served."""


class GuardRefusedError(Exception):
    """A guarded batch's guard said no (another replica wrote those entries first)."""


# Run inside a guarded batch's transaction once the head is locked: (DB-API cursor, parameter
# marker) → whether to go ahead.
Guard = Callable[[Any, str], bool]


@dataclass
class _Pending:
    entries: list[dict[str, Any]]
    future: asyncio.Future[None]
    guard: Guard | None = None


_SECOND: list[Any] = [None, ""]  # the last whole second formatted, reused within that second


def now_iso() -> str:
    """UTC now as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; called for every request, so the formatting of
    the whole second is done once a second."""
    now = time.time()
    second = int(now)
    if second != _SECOND[0]:
        _SECOND[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_SECOND[1]}.{int((now - second) * 1_000_000):06d}Z"


def outcome_of(status: int | None, phase: str) -> str:
    if phase == "intent":
        return "pending"
    if status in (401, 403):
        return "denied"
    if status is not None and status < 400:
        return "allowed"
    return "error"


def fit_values(values: list[Any]) -> list[Any]:
    """An entry's values (in ``chain.CONTENT_FIELDS`` order) as stored: a client-given value loses
    NUL (PostgreSQL text cannot hold it) and is cut to its column's length."""
    for at, length in COLUMN_LENGTHS:
        value = values[at]
        if value.__class__ is str and (len(value) > length or "\x00" in value):
            values[at] = value.replace("\x00", "")[:length]
    return values


def providers_column(providers: list[str] | None) -> str | None:
    return None if providers is None else "," + ",".join(providers) + ","


def providers_list(column: str | None) -> list[str] | None:
    return None if column is None else [p for p in column.split(",") if p]


class Signer:
    """The Ed25519 key that signs checkpoints."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_b64 = base64.b64encode(public_raw).decode("ascii")
        self.key_id = chain.public_key_id(public_raw)

    def sign(self, seq: int, head: str, at: str) -> str:
        return base64.b64encode(self.private.sign(chain.checkpoint_message(seq, head, at))).decode()

    def sign_tree(self, timestamp_ms: int, size: int, root: bytes) -> str:
        message = merkle.tree_head_message(timestamp_ms, size, root)
        return base64.b64encode(self.private.sign(message)).decode()


def configured_seed(value: SecretStr | None, file: str | None) -> str | None:
    """The signing seed from outside the database: the setting, else the file it names."""
    if value is not None:
        return value.get_secret_value().strip() or None
    if file:
        return Path(file).read_text(encoding="ascii").strip() or None
    return None


def trusted_keys(signer: Signer, earlier: list[str]) -> dict[str, str]:
    """The public keys a verifier may trust: the configured signer's and earlier ones given."""
    keys = {signer.key_id: signer.public_b64}
    for public in earlier:
        keys[chain.public_key_id(base64.b64decode(public))] = public
    return keys


def load_signer(engine: Engine, configured_seed: str | None) -> Signer:
    """The configured key, else the newest key generated into the DB, else a new one stored there.

    Every public key stays in the table, so checkpoints signed before a rotation still verify.
    """
    with engine.begin() as connection:
        if configured_seed:
            signer = Signer(Ed25519PrivateKey.from_private_bytes(base64.b64decode(configured_seed)))
            seed = None
        else:
            row = connection.execute(
                select(SIGNING_KEY.c.private_seed)
                .where(SIGNING_KEY.c.private_seed.is_not(None))
                .order_by(SIGNING_KEY.c.created_at.desc())
                .limit(1)
            ).first()
            if row is not None:
                signer = Signer(Ed25519PrivateKey.from_private_bytes(base64.b64decode(row[0])))
                return _register(connection, signer, None)
            private = Ed25519PrivateKey.generate()
            signer = Signer(private)
            seed = base64.b64encode(private.private_bytes_raw()).decode("ascii")
        return _register(connection, signer, seed)


def _register(connection: Connection, signer: Signer, seed: str | None) -> Signer:
    known = connection.execute(
        select(SIGNING_KEY.c.key_id).where(SIGNING_KEY.c.key_id == signer.key_id)
    ).first()
    if known is None:
        connection.execute(
            insert(SIGNING_KEY).values(
                key_id=signer.key_id,
                public_key=signer.public_b64,
                private_seed=seed,
                created_at=time.time(),
            )
        )
    return signer


def ensure_head(engine: Engine) -> None:
    try:
        with engine.begin() as connection:
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
    except IntegrityError:
        pass  # another replica starting at the same moment created it


def ensure_tree(engine: Engine, signer: Signer, chunk: int = 5000) -> int:
    """Build the Merkle tree of a log written before it existed (the head's frontier NULL): its
    stored subtrees, the frontier, and a signed tree head for every earlier checkpoint. Under the
    head's lock, so one replica builds it; the number of entries taken in (0 if built already)."""
    with engine.begin() as connection:
        found = connection.execute(text(_LOCK_HEAD)).first()
        if found is None or found[4] is not None:
            return 0
        size = int(found[0])
        due = {
            int(row[0])
            for row in connection.execute(
                select(CHECKPOINT.c.seq).where(CHECKPOINT.c.root.is_(None))
            )
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


LINGER_PASSES = 3


class AuditLog:
    """Appends entries in batches; ``append`` returns once its entry is committed.

    On SQLite the batch is written on the event loop: it is an in-process library call of about
    a millisecond, and a worker thread would cost more than it saves, because the writer thread
    and the loop take turns on the GIL at every statement. A networked database is written from
    a worker thread, where the round trips do not hold up the loop.
    """

    def __init__(
        self,
        engine: Engine,
        signer: Signer,
        *,
        enabled: bool = True,
        batch_max: int = 256,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
    ) -> None:
        self.engine = engine
        self.signer = signer
        self.enabled = enabled
        self.batch_max = batch_max
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.writer = ChainWriter(engine)
        self._inline = is_sqlite(engine)
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self.enabled:
            try:
                await asyncio.to_thread(self._checkpoint_now)
            except Exception as exc:  # noqa: BLE001 - shutting down; the next start checkpoints
                log.warning("final checkpoint failed", extra={"error": type(exc).__name__})
        self.writer.close()

    async def append(self, entry: dict[str, Any]) -> None:
        await self._enqueue([entry], None)

    async def append_guarded(self, entries: list[dict[str, Any]], guard: Guard) -> bool:
        """Writes ``entries`` in a transaction of their own if ``guard`` agrees in it; False if
        it did not. For entries taken in from elsewhere, so two replicas never both take them."""
        try:
            await self._enqueue(entries, guard)
        except GuardRefusedError:
            return False
        return True

    async def _enqueue(self, entries: list[dict[str, Any]], guard: Guard | None) -> None:
        if not self.enabled:
            return
        if self._closing or self._task is None or self._task.done():
            raise AuditUnavailableError("the audit writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(entries, future, guard))
        self._wake.set()
        await future

    async def _gather(self, passes: int = LINGER_PASSES) -> None:
        """Lets the loop run while entries keep arriving (a few passes at most, each well under a
        millisecond): requests whose answers are on their way join this batch instead of the
        next, so under load there are fewer, larger writes."""
        for _ in range(passes):
            waiting = len(self._pending)
            if waiting >= self.batch_max:
                return
            await asyncio.sleep(0)
            if len(self._pending) == waiting:
                return

    def _take(self) -> list[_Pending]:
        """The next batch: one guarded item alone, or requests' entries up to ``batch_max``."""
        if self._pending[0].guard is not None:
            return [self._pending.pop(0)]
        count, limit = 0, min(len(self._pending), self.batch_max)
        while count < limit and self._pending[count].guard is None:
            count += 1
        batch = self._pending[:count]
        del self._pending[:count]
        return batch

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._inline:
                await self._gather()
            batch = self._take()
            entries = [entry for item in batch for entry in item.entries]
            guard = batch[0].guard
            failure: Exception | None = None
            try:
                if self._inline:
                    self._write(entries, guard)
                else:
                    await asyncio.to_thread(self._write, entries, guard)
            except GuardRefusedError as exc:
                failure = exc
            except Exception as exc:  # noqa: BLE001 - any store failure refuses the batch's requests
                log.error(
                    "audit write failed", extra={"error": type(exc).__name__, "n": len(entries)}
                )
                failure = AuditUnavailableError(type(exc).__name__)
            for item in batch:
                if item.future.done():
                    continue
                if failure is None:
                    item.future.set_result(None)
                else:
                    item.future.set_exception(failure)
            if self._inline:
                await asyncio.sleep(0)  # let the answered requests go before the next batch

    def _write(self, entries: list[dict[str, Any]], guard: Guard | None = None) -> None:
        self.writer.append(entries, self._checkpoint_due, self.signer, guard)

    def _checkpoint_due(self, seq: int, checkpoint_seq: int, checkpoint_at: float) -> bool:
        return seq - checkpoint_seq >= self.checkpoint_every or (
            time.time() - checkpoint_at >= self.checkpoint_seconds
        )

    def _checkpoint_now(self) -> None:
        """Signs the head if anything was written since the last checkpoint: an empty batch."""
        self.writer.append([], lambda seq, checkpoint_seq, _at: seq > checkpoint_seq, self.signer)


Head = tuple[int, str, int, float, str]  # seq, hash, checkpoint seq and time, Merkle frontier


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


_LOCK_HEAD = (
    "UPDATE audit_head SET seq = seq WHERE id = 1"
    " RETURNING seq, hash, checkpoint_seq, checkpoint_at, frontier"
)


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


def entry_dict(row: Any) -> dict[str, Any]:
    entry = dict(row._mapping)
    entry["providers"] = providers_list(entry.get("providers"))
    return entry


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
    engine: Engine,
    *,
    max_gap: int | None = None,
    trusted: dict[str, str] | None = None,
    after: int | None = None,
) -> dict[str, Any]:
    """Verify the stored chain. ``trusted`` public keys (by id) replace the table's, which anyone
    with the database could extend; ``after`` (a checkpoint's seq) verifies only from there on."""
    # Read the head first and check up to it, so entries appended meanwhile do not count.
    with engine.connect() as connection:
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


def list_checkpoints(engine: Engine, after: int, limit: int) -> list[dict[str, Any]]:
    query = (
        select(CHECKPOINT).where(CHECKPOINT.c.seq > after).order_by(CHECKPOINT.c.seq).limit(limit)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def public_keys(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(select(SIGNING_KEY.c.key_id, SIGNING_KEY.c.public_key))
        return {row[0]: row[1] for row in rows}


def consistency(
    engine: Engine, first: int, second: int, with_digests: bool = True
) -> dict[str, Any] | None:
    """The two checkpoints and (``with_digests``) the digests of the entries after ``first`` up to
    ``second``; None if either is not a checkpoint."""
    with engine.connect() as connection:
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


def tree_consistency(engine: Engine, first: int, second: int) -> list[str]:
    """RFC 6962 consistency proof between the trees of sizes ``first`` and ``second`` (hex)."""
    if first == 0 or first == second:
        return []
    with engine.connect() as connection:
        proof = merkle.consistency_proof(first, second, tree_nodes(connection))
    return [h.hex() for h in proof]


def inclusion(engine: Engine, seq: int, size: int) -> dict[str, Any] | None:
    """Entry ``seq``'s RFC 6962 inclusion proof in the tree of checkpoint ``size``; None if there
    is no such entry or checkpoint."""
    with engine.connect() as connection:
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


def export_lines(engine: Engine) -> Iterator[dict[str, Any]]:
    """The whole chain for offline verification: keys, checkpoints, entries, then the head."""
    with engine.connect() as connection:
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
    engine: Engine,
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
    with engine.connect() as connection:
        return [entry_dict(row) for row in connection.execute(query)]


def provider_view(entry: dict[str, Any], agency: str, agreements: set[str]) -> dict[str, Any]:
    """An entry as a provider sees it: who read its data, and nothing of other providers' sharing
    (the providers list narrowed to itself, an agreement it is not party to left out). The digest
    and hashes still cover the whole entry as stored."""
    shown = dict(entry)
    if shown.get("providers") is not None:
        shown["providers"] = [p for p in shown["providers"] if p == agency]
    if shown.get("agreement") is not None and shown["agreement"] not in agreements:
        shown["agreement"] = None
        shown["version"] = None
    return shown


def redaction_entry(seq: int, agency: str, key_id: str) -> dict[str, Any]:
    """The entry that records an operator's redaction of entry ``seq``."""
    return {
        "at": now_iso(),
        "request_id": f"{chain.REDACT_PREFIX}{seq}",
        "phase": "complete",
        "agency": agency,
        "key_id": key_id,
        "method": "POST",
        "route": "/v1/audit/{seq}/redact",
        "dataset": None,
        "action": chain.REDACT,
        "level": None,
        "purpose": None,
        "rule": None,
        "agreement": None,
        "version": None,
        "providers": None,
        "status": 200,
        "outcome": "allowed",
        "records": 1,
    }


def redactable(engine: Engine, seq: int) -> str | None:
    """Why entry ``seq`` cannot be redacted (missing, already redacted), or None."""
    with engine.connect() as connection:
        row = connection.execute(
            select(ENTRY.c.redacted_at, ENTRY.c.action).where(ENTRY.c.seq == seq)
        ).first()
    if row is None:
        return "missing"
    if row[0] is not None:
        return "redacted"
    return None


def redact(engine: Engine, seq: int) -> bool:
    """Erase entry ``seq``'s body, keeping its digest and links (and so the chain)."""
    erased = {
        name: ("" if not ENTRY.c[name].nullable else None)
        for name in chain.CONTENT_FIELDS
        if name not in KEPT_WHEN_REDACTED
    }
    with engine.begin() as connection:
        result = connection.execute(
            update(ENTRY)
            .where(ENTRY.c.seq == seq, ENTRY.c.redacted_at.is_(None))
            .values(**erased, redacted_at=now_iso())
        )
    return bool(result.rowcount)
