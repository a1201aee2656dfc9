"""The audit log: a group-commit writer that fails closed.

Requests await their entry's commit before any answer reaches the client, but concurrent
requests share one transaction (group commit), so the audit costs a fraction of a write each.
The chain it extends is ``audit_chain``; entries are shaped in ``audit_entries``, read in
``audit_queries``, and checkpoints signed with ``audit_sign``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from services.gateway.audit_chain import ChainWriter, Guard, GuardRefusedError
from services.gateway.audit_sign import Signer
from shared.db import is_sqlite

log = logging.getLogger("csp.gateway.audit")


class AuditUnavailableError(Exception):
    """The audit entry could not be written, so the request must not be served."""


@dataclass
class _Pending:
    entries: list[dict[str, Any]]
    future: asyncio.Future[None]
    guard: Guard | None = None


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
