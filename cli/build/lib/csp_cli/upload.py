"""Pushes a file chunk by chunk, each under its own Idempotency-Key, resuming where it stopped.

Completed chunks are remembered in a state file (``$XDG_STATE_HOME/csp/pushes/``) so a re-run
skips them; if that file is lost, the Idempotency-Keys still make the gateway answer repeated
chunks from its first answer instead of storing them again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csp_cli.chunks import Chunk, FileFormat, chunks, file_digest, idempotency_key
from csp_cli.gateway import Gateway

MAX_ERRORS_KEPT = 1000


@dataclass
class PushTotals:
    chunks: int = 0
    resumed_chunks: int = 0
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    batch_ids: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, chunk: Chunk, answer: dict[str, Any]) -> None:
        self.chunks += 1
        self.received += int(answer.get("received", chunk.rows))
        self.accepted += int(answer.get("accepted", 0))
        self.rejected += int(answer.get("rejected", 0))
        if answer.get("batch_id"):
            self.batch_ids.append(str(answer["batch_id"]))
        for error in answer.get("errors", []):
            if len(self.errors) >= MAX_ERRORS_KEPT:
                break
            row = error.get("row")
            # The gateway numbers rows within the chunk from 1; report them as rows of the file.
            file_row = chunk.first_row + int(row) - 1 if isinstance(row, int) else row
            self.errors.append({**error, "row": file_row})


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "csp" / "pushes"


class PushState:
    """The answers already received for one file's chunks (keyed by Idempotency-Key)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.answers: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            self.answers = json.loads(path.read_text())

    def record(self, key: str, answer: dict[str, Any]) -> None:
        self.answers[key] = answer
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.answers))
        temporary.replace(self.path)  # atomic: an interruption never leaves half a state file

    def finish(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()


def push_file(
    gateway: Gateway,
    dataset: str,
    path: Path,
    fmt: FileFormat,
    *,
    chunk_rows: int,
    atomic: bool = False,
    resume: bool = True,
    on_progress: Callable[[int], None] = lambda _read: None,
) -> PushTotals:
    digest = file_digest(path)
    state_path = state_dir() / f"{dataset}-{digest[:40]}-{chunk_rows}.json" if resume else None
    state = PushState(state_path)
    totals = PushTotals()
    params = {"atomic": "true"} if atomic else None
    for chunk in chunks(path, fmt, chunk_rows):
        key = idempotency_key(digest, chunk_rows, chunk.index)
        answer = state.answers.get(key)
        if answer is not None:
            totals.resumed_chunks += 1
        else:
            response = gateway.request(
                "POST",
                f"/v1/datasets/{dataset}/records",
                content=chunk.body,
                params=params,
                headers={"Content-Type": chunk.content_type, "Idempotency-Key": key},
            )
            answer = response.json()
            state.record(key, answer)
        totals.add(chunk, answer)
        on_progress(chunk.bytes_read)
    state.finish()
    return totals
