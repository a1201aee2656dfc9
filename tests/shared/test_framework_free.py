"""The domain never imports the web framework: importing a rule module, or the shared libraries
it raises and reads, loads neither FastAPI nor Starlette."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

# Modules whose job is not HTTP, in the areas laid out in docs/architecture.md.
FRAMEWORK_FREE = (
    "shared.errors",
    "shared.tokens",
    "shared.db",
    "shared.grants",
    "shared.http",
    "services.agreements.decisions",
    "services.agreements.dry_run",
    "services.agreements.retention",
    "services.agreements.service",
    "services.agreements.agencies",
    "services.agreements.agreement_terms",
    "services.agreements.change_log",
    "services.agreements.visibility",
    "services.gateway.audit",
    "services.gateway.audit_queries",
    "services.gateway.keys",
    "services.gateway.forwarding",
    "services.agreements.decision_answer",
    "services.gateway.key_issue",
    "services.gateway.decisions",
    "services.gateway.retention_audit",
    "services.depersonalise.aggregate_query",
    "services.depersonalise.layers",
    "services.depersonalise.record_bodies",
    "services.depersonalise.record_policy",
    "services.depersonalise.uploads",
    "services.depersonalise.boundary_files",
    "services.depersonalise.cell_table",
    "services.depersonalise.cohorts",
    "services.depersonalise.derivation",
    "services.depersonalise.generations",
    "services.depersonalise.held_records",
    "services.depersonalise.layer_registry",
    "services.depersonalise.masking_figures",
    "services.depersonalise.populations",
    "services.depersonalise.public_records",
    "services.depersonalise.record_reads",
    "services.depersonalise.releases",
    "services.depersonalise.service_state",
    "services.depersonalise.state",
    "services.depersonalise.replay",
    "services.depersonalise.reconcile",
    "services.ingest.linkage",
    "services.ingest.linkage_fields",
    "services.ingest.linkage_keys",
    "services.ingest.linkage_matching",
    "services.ingest.linkage_model",
)

# The modules whose job is HTTP: the app, its dependencies, its routes (one module or one per
# resource, ``routes_<resource>.py`` or ingest's ``<resource>_routes.py``), the gateway's proxy
# and the analysts' page it serves.
HTTP_MODULE = re.compile(r"(main|deps|routes|routes_\w+|\w+_routes)\.py")
GATEWAY_HTTP = {"proxy.py", "web.py"}


PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette"))
    if loaded:
        print(name, "loads", ", ".join(loaded[:3]))
        break
"""


@pytest.mark.slow
def test_domain_modules_load_without_fastapi_or_starlette() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *FRAMEWORK_FREE],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_only_the_http_modules_of_a_service_import_the_framework() -> None:
    services = Path(__file__).resolve().parents[2] / "services"
    framework = re.compile(r"fastapi|starlette")
    importing = [
        path
        for path in sorted(services.glob("*/*.py"))
        if framework.search(path.read_text(encoding="utf-8"))
    ]
    assert importing, "the services are where the check looks"
    strays = [
        f"{path.parent.name}/{path.name}"
        for path in importing
        if not HTTP_MODULE.fullmatch(path.name)
        and not (path.parent.name == "gateway" and path.name in GATEWAY_HTTP)
    ]
    assert strays == []


def test_the_request_dependencies_live_in_shared_deps_only() -> None:
    from shared import deps, tokens

    for name in ("ClaimsDep", "AdminDep", "internal_claims", "require_admin"):
        assert hasattr(deps, name)
        assert not hasattr(tokens, name), name
