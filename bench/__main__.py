"""``make bench``: run every benchmark module, each in its own process, then print the table."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.results import RESULTS

MODULES = (
    "bench.ingest",
    "bench.depersonalise",
    "bench.gateway",
    "bench.report",
    "bench.linkage",
    "bench.privacy",
    "bench.hostile",
    "bench.audit_proofs",
    "bench.soak",
)


def main() -> int:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.unlink(missing_ok=True)
    failed = []
    for module in MODULES:
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
    sys.exit(main())
