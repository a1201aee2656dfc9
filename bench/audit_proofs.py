"""How the audit's RFC 6962 proofs scale with the log: ``python -m bench.audit_proofs``.

Two gateway databases (SQLite) hold a synthetic log of ``SMALL`` and of ``LARGE`` entries (the
tree built as the gateway builds it at start, checkpoints every 1,000 entries). For each, random
inclusion proofs and consistency proofs between random checkpoints are computed as the routes
compute them; the figures are the database reads and the time per proof in the large log against
the small one (same run). Re-hashing the log would cost LARGE/SMALL times more; a proof from stored
subtrees costs about log(LARGE)/log(SMALL) times more. ``CSP_BENCH_AUDIT_ENTRIES`` sets LARGE
(default 1,000,000; the issue's 10 M works the same, given the time to build it).
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert

from bench.results import record
from services.gateway import audit_chain, audit_entries, audit_queries, audit_sign
from services.gateway.models import Base
from shared.db import make_engine, prepare_schema

SMALL = 10_000
LARGE = int(os.environ.get("CSP_BENCH_AUDIT_ENTRIES", "1000000"))
PROOFS = 200
EVERY = 1000


def build(folder: Path, size: int) -> Any:
    engine = make_engine(f"sqlite:///{folder / f'gateway-{size}.db'}")
    prepare_schema(engine, Base.metadata, Path(audit_chain.__file__).parent / "migrations")
    with engine.begin() as connection:
        audit_chain.ensure_head(connection)
        signer = audit_sign.load_signer(connection, None)
        for start in range(0, size, 50_000):
            rows = [
                {"seq": seq, "at": "2026-12-01T00:00:00.000000Z", "request_id": f"r{seq}",
                 "phase": "complete", "method": "GET", "route": "/v1/me", "outcome": "allowed",
                 "digest": hashlib.sha256(str(seq).encode()).hexdigest(), "prev_hash": "",
                 "hash": ""}
                for seq in range(start + 1, min(start + 50_000, size) + 1)
            ]  # fmt: skip
            connection.execute(insert(audit_entries.ENTRY), rows)
        checkpoints = [
            {"seq": seq, "hash": "", "at": "", "signing_key_id": signer.key_id, "signature": ""}
            for seq in range(EVERY, size + 1, EVERY)
        ]
        connection.execute(insert(audit_entries.CHECKPOINT), checkpoints)
        connection.execute(audit_entries.HEAD.update().values(seq=size, frontier=None))
    with engine.begin() as connection:
        audit_chain.ensure_tree(connection, signer)
    return engine


def measure(engine: Any, size: int) -> dict[str, float]:
    reads = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        reads[0] += 1

    chooser = random.Random(size)
    started = time.perf_counter()
    for _ in range(PROOFS):
        seq = chooser.randrange(1, size + 1)
        with engine.connect() as connection:
            answer = audit_queries.inclusion(connection, seq, size - size % EVERY)
        assert answer is None or answer["proof"] is not None
    inclusion = time.perf_counter() - started
    inclusion_reads = reads[0] / PROOFS
    reads[0] = 0
    started = time.perf_counter()
    for _ in range(PROOFS):
        first = chooser.randrange(1, size // EVERY) * EVERY
        with engine.connect() as connection:
            audit_queries.tree_consistency(connection, first, size - size % EVERY)
    consistency = time.perf_counter() - started
    return {
        "inclusion_ms": inclusion / PROOFS * 1000,
        "inclusion_reads": inclusion_reads,
        "consistency_ms": consistency / PROOFS * 1000,
        "consistency_reads": reads[0] / PROOFS,
    }


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="csp-bench-audit-") as folder:
        figures = {}
        for size in (SMALL, LARGE):
            started = time.perf_counter()
            engine = build(Path(folder), size)
            built = time.perf_counter() - started
            figures[size] = {**measure(engine, size), "build_seconds": built}
            engine.dispose()
    small, large = figures[SMALL], figures[LARGE]
    for name, unit in (("inclusion_ms", "ms"), ("consistency_ms", "ms"),
                       ("inclusion_reads", "reads"), ("consistency_reads", "reads")):  # fmt: skip
        record(
            f"audit_proof_{name}_at_{LARGE}", large[name], unit, baseline=small[name],
            higher_is_better=True, target=None, small_log=SMALL, large_log=LARGE,
            log_ratio=round(LARGE / SMALL, 1), build_seconds=round(large["build_seconds"], 1),
            measured="on a shared 2-core machine under load",
        )  # fmt: skip
        print(f"{name}: {small[name]:.2f} at {SMALL:,} entries, {large[name]:.2f} at {LARGE:,} "
              f"({large[name] / small[name]:.2f}x for {LARGE // SMALL}x the entries)")  # fmt: skip
    print(f"tree built from {LARGE:,} stored digests in {large['build_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
