"""Each service installs and runs alone with only its own pinned dependencies."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("gateway", "agreements", "ingest", "depersonalise")
LOCAL = {"services", "shared", "tests", "scripts", "bench", "cli", "csp_cli", "alembic_env"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(requirements: Path) -> dict[str, str]:
    pins = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            pins[_normalise(match.group(1))] = match.group(3)
    return pins


def imported_top_levels(folders: list[Path]) -> set[str]:
    modules = set().union(*(_imports_in(folder) for folder in folders))
    return {m for m in modules if m not in sys.stdlib_module_names and m not in LOCAL}


@functools.cache
def _imports_in(folder: Path) -> frozenset[str]:
    """The top-level names a folder's modules import (shared/ is read once, not per service)."""
    modules: set[str] = set()
    for path in folder.rglob("*.py"):
        if "migrations" in path.parts and "versions" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return frozenset(modules)


# Scanning every installed distribution's files takes a quarter of a second; once is enough.
_distributions = functools.cache(packages_distributions)


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_only_its_own_pinned_dependencies(service: str) -> None:
    folder = REPO / "services" / service
    if not (folder / "main.py").exists():
        pytest.fail(f"services/{service}/main.py is missing")
    pins = pinned(folder / "requirements.txt")
    distributions = _distributions()
    missing = []
    for module in sorted(imported_top_levels([folder, REPO / "shared"])):
        names = {_normalise(d) for d in distributions.get(module, [module])}
        if not names & set(pins):
            missing.append(module)
    assert not missing, f"{service} imports modules its requirements.txt does not pin: {missing}"


def test_gateway_carries_no_geospatial_stack() -> None:
    pins = pinned(REPO / "services" / "gateway" / "requirements.txt")
    assert not {"geopandas", "shapely", "pyproj", "pyogrio"} & set(pins)


@pytest.mark.parametrize(
    "requirements",
    [REPO / "requirements" / "dev.txt", REPO / "cli" / "requirements.txt"]
    + [REPO / "services" / s / "requirements.txt" for s in SERVICES],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_every_pin_carries_hashes(requirements: Path) -> None:
    text = requirements.read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    pins = [b for b in blocks if re.match(r"^[A-Za-z0-9_.\-]+(\[[^\]]*\])?==", b)]
    assert pins, f"{requirements} pins nothing"
    assert all("--hash=sha256:" in block for block in pins)


def test_no_tracked_file_names_a_registry_host_or_lock_file() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [f for f in files if re.search(r"(^|/)(uv|poetry|pdm|Pipfile)\.lock$", f)]
    hosts = ["pypi" + ".org", "pythonhosted" + ".org", "registry.npmjs" + ".org"]
    offenders = []
    for name in files:
        path = REPO / name
        if path.is_file() and path.stat().st_size < 2_000_000:
            text = path.read_text(errors="ignore")
            if any(host in text for host in hosts):
                offenders.append(name)
    assert not offenders, offenders
