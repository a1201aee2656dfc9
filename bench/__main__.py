"""``make bench``: run every benchmark module, each in its own process, then print the table.

``python -m bench aggregates`` (names without ``bench.``) runs only the modules named, keeping the
other figures already in the results file."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.results import RESULTS

MODULES = (
    "bench.ingest",
    "bench.depersonalise",
    "bench.aggregates",
    "bench.gateway",
    "bench.report",
    "bench.linkage",
    "bench.privacy",
    "bench.hostile",
    "bench.audit_proofs",
    "bench.soak",
    "bench.disclosure",
)


def main(names: list[str]) -> int:
    chosen = [f"bench.{name}" for name in names] or list(MODULES)
    unknown = [module for module in chosen if module not in MODULES]
    if unknown:
        print(f"no benchmark {', '.join(unknown)}; known: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not names:
        RESULTS.unlink(missing_ok=True)
    failed = []
    for module in chosen:
        print(f"\n--- {module} ---", flush=True)
        if subprocess.call([sys.executable, "-m", module]) != 0:
            failed.append(module)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    print(f"\n{len(results)} figures in {RESULTS}:")
    for figure, entry in sorted(results.items()):
        print(f"  {figure}: ratio {entry.get('ratio')} (target {entry.get('target')})")
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
