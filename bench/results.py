"""Writes a benchmark figure to the terminal and to ``var/bench/results.json``."""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(os.environ.get("CSP_BENCH_RESULTS", "var/bench/results.json"))


def record(
    figure: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    target: float | None = None,
    higher_is_better: bool = True,
    ceiling: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Store one figure; ``ratio`` is value/baseline (baseline/value when lower is better).
    ``target`` is a ratio to reach; ``ceiling`` instead bounds the value itself (a count of
    cells that must stay 0, say), and is stored as the target."""
    ratio = None
    if baseline:
        ratio = value / baseline if higher_is_better else baseline / value if value else None
    entry: dict[str, Any] = {
        "value": round(value, 4),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 4),
        "ratio": None if ratio is None else round(ratio, 4),
        "target": target if ceiling is None else ceiling,
    }
    entry.update(extra)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[figure] = entry
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    verdict = ""
    if ceiling is not None:
        verdict = "  meets target" if value <= ceiling else "  ABOVE TARGET"
    elif target is not None and ratio is not None:
        verdict = "  meets target" if ratio >= target else "  BELOW TARGET"
    shown_ratio = "n/a" if ratio is None else f"{ratio:.3f}"
    print(
        f"{figure}: {value:,.3f} {unit} (baseline {baseline}, ratio {shown_ratio}, "
        f"target {target if ceiling is None else ceiling}){verdict}",
        flush=True,
    )
    return entry


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or its waited-for children), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def best_of(action: Callable[[], object], repeats: int = 2) -> float:
    """The fastest of ``repeats`` runs of ``action``, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)
