"""The domain never imports the web framework: importing a rule module, or the shared libraries
it raises and reads, loads neither FastAPI nor Starlette."""

from __future__ import annotations

import subprocess
import sys

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
    "services.agreements.visibility",
    "services.gateway.audit",
    "services.gateway.audit_queries",
    "services.gateway.keys",
    "services.gateway.forwarding",
    "services.agreements.decision_answer",
    "services.gateway.key_issue",
    "services.gateway.decisions",
    "services.gateway.retention_audit",
)


PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette"))
    if loaded:
        print(name, "loads", ", ".join(loaded[:3]))
        break
"""


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


def test_names_moved_to_shared_deps_are_still_importable_from_where_they_were() -> None:
    from shared import db, deps, tokens

    assert tokens.ClaimsDep is deps.ClaimsDep
    assert tokens.AdminDep is deps.AdminDep
    assert tokens.internal_claims is deps.internal_claims
    assert db.get_session is deps.get_session
    with pytest.raises(AttributeError):
        getattr(tokens, "no_such_name")  # noqa: B009 - the module's own __getattr__ is tested
