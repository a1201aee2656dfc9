"""Property-based API fuzzing of the gateway's public OpenAPI with schemathesis.

Starts the four services on free ports with fresh SQLite files, seeds the demo, then runs
``st run`` authenticated as operators and as an agency: no 5xx and no response that breaks its
declared schema. Bounded in examples and time; traffic only to 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.demo import seed
from scripts.hub import DEFAULT_PORTS, Hub, free_port

ADMIN_KEY = "csp_ops_schemathesis-operators-key"


def main() -> int:
    examples = os.environ.get("CSP_FUZZ_EXAMPLES", "15")
    max_time = os.environ.get("CSP_FUZZ_SECONDS", "150")
    with tempfile.TemporaryDirectory() as folder:
        databases = {name: f"sqlite:///{Path(folder) / name}.db" for name in DEFAULT_PORTS}
        ports = {name: free_port() for name in DEFAULT_PORTS}
        log = Path(folder) / "services.log"
        with log.open("w") as sink:
            hub = Hub(
                ports,
                databases,
                "schemathesis-internal-secret",
                {"CSP_ADMIN_KEY": ADMIN_KEY},
                sink=lambda line: print(line, file=sink, flush=True),
            )
            hub.start()
            try:
                keys = seed(hub.gateway_url, ADMIN_KEY)
                failures = 0
                for who, key in (("operators", ADMIN_KEY), ("agency", keys["demo-council"])):
                    print(f"--- schemathesis as {who} ---", flush=True)
                    failures += subprocess.call(
                        [
                            str(Path(sys.executable).parent / "st"),
                            "run",
                            f"{hub.gateway_url}/openapi.json",
                            "--header",
                            f"Authorization: Bearer {key}",
                            "--checks",
                            "not_a_server_error,response_schema_conformance",
                            "--max-examples",
                            examples,
                            "--max-time",
                            max_time,
                            "--request-timeout",
                            "30",
                            "--workers",
                            "1",
                            "--suppress-health-check",
                            "all",
                            "--warnings",
                            "off",
                        ]
                    )
                crashed = [s.name for s in hub.services.values() if not s.alive()]
                if crashed:
                    print(f"services that died: {crashed}", file=sys.stderr)
                    failures += 1
            finally:
                hub.stop()
        if failures:
            print(log.read_text()[-5000:], file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
