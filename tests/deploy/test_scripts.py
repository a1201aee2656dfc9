"""The ops scripts of deploy/ do what the runbook says: secrets, databases, rendering, checks."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from shared.tokens import SIGNERS, parse_public_keys, private_key, public_text
from tests.conftest import PG_ADMIN_URL, REPO
from tests.deploy.files import SERVICES, interpolate, required_variables

sys.path.insert(0, str(REPO / "deploy"))
from render_manifests import KustomizeError, render


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300
    )


def test_generated_env_satisfies_every_required_compose_variable() -> None:
    result = run(sys.executable, "deploy/generate_secrets.py", "compose")
    assert result.returncode == 0, result.stderr
    values = dict(line.split("=", 1) for line in result.stdout.splitlines())
    compose_text = (REPO / "docker-compose.yml").read_text()
    assert required_variables(compose_text) <= set(values)
    interpolate(compose_text, values)  # raises if any required variable is missing
    assert values["CSP_ADMIN_KEY"].startswith("csp_")
    assert len(values["CSP_INGEST_RECORD_KEY_SECRET"]) >= 48
    # Each signer's public key, as the backends will check it, is that of its own seed.
    keys = parse_public_keys(values["CSP_INTERNAL_PUBLIC_KEYS"])
    for name in SIGNERS:
        seed = values[f"CSP_{name.upper()}_TOKEN_KEY"]
        assert public_text(keys[name]) == public_text(private_key(seed).public_key())
    again = run(sys.executable, "deploy/generate_secrets.py", "compose").stdout
    assert set(again.splitlines()).isdisjoint(result.stdout.splitlines()), "values are random"


def test_a_new_linkage_key_for_rotation_is_random_and_long() -> None:
    first = run(sys.executable, "deploy/generate_secrets.py", "value", "linkage-key")
    second = run(sys.executable, "deploy/generate_secrets.py", "value", "linkage-key")
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.strip()) >= 48 and first.stdout != second.stdout


def test_k8s_secret_files_are_private(tmp_path: Path) -> None:
    result = run(
        sys.executable, "deploy/generate_secrets.py", "k8s", str(tmp_path), "--pg-host", "db"
    )
    assert result.returncode == 0, result.stderr
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"internal.env", "db-passwords.env"} | {f"{s}.env" for s in SERVICES}
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o077 == 0
    gateway = dict(
        line.split("=", 1) for line in (tmp_path / "gateway.env").read_text().splitlines()
    )
    url = make_url(gateway["CSP_GATEWAY_DATABASE_URL"])
    assert (url.host, url.database, url.username) == ("db", "csp_gateway", "csp_gateway")
    assert len(base64.b64decode(gateway["CSP_GATEWAY_AUDIT_SIGNING_KEY"])) == 32  # Ed25519 seed
    assert len(base64.b64decode(gateway["CSP_GATEWAY_OAUTH_SIGNING_KEY"])) == 32
    assert len(base64.b64decode(gateway["CSP_GATEWAY_TOKEN_KEY"])) == 32
    internal = (tmp_path / "internal.env").read_text()
    assert internal.startswith("CSP_INTERNAL_PUBLIC_KEYS=") and "TOKEN_KEY" not in internal
    ingest = dict(line.split("=", 1) for line in (tmp_path / "ingest.env").read_text().splitlines())
    # ingest's own linkage key, in ingest's Secret only (never a token or key secret)
    assert len(ingest["CSP_INGEST_LINKAGE_KEY"]) >= 48
    assert ingest["CSP_INGEST_LINKAGE_KEY"] not in (tmp_path / "internal.env").read_text()
    assert "CSP_INGEST_LINKAGE_KEY" not in (tmp_path / "gateway.env").read_text()


@pytest.fixture
def init_prefix() -> Iterator[str]:
    prefix = f"csp_t{uuid.uuid4().hex[:8]}_"
    yield prefix
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for service in SERVICES:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{prefix}{service}" WITH (FORCE)'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{prefix}{service}"'))
    admin.dispose()


def pg_env(prefix: str) -> dict[str, str]:
    admin = make_url(PG_ADMIN_URL)
    return {
        **os.environ,
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "PGUSER": admin.username or "postgres",
        "CSP_DB_NAME_PREFIX": prefix,
        **{f"CSP_{s.upper()}_DB_PASSWORD": f"pw-{s}'quote" for s in SERVICES},
    }


@pytest.mark.slow
def test_init_script_creates_one_private_database_per_service(init_prefix: str) -> None:
    admin = make_url(PG_ADMIN_URL)
    env = pg_env(init_prefix)
    for _ in range(2):  # a second run (a restarted volume init, a re-run by hand) is harmless
        result = run("bash", "deploy/postgres/init-databases.sh", env=env)
        assert result.returncode == 0, result.stderr
    for service in SERVICES:
        own = admin.set(database=f"{init_prefix}{service}", username=f"{init_prefix}{service}")
        engine = create_engine(own)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE probe (id integer)"))  # owns its schema
        engine.dispose()
    other = admin.set(database=f"{init_prefix}ingest", username=f"{init_prefix}gateway")
    engine = create_engine(other)
    with pytest.raises(OperationalError, match="permission denied"):
        engine.connect().close()
    engine.dispose()


def test_renderer_applies_overlays_and_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    production = render(REPO / "deploy" / "k8s" / "overlays" / "production")
    gateway = next(
        m for m in production if m["kind"] == "Deployment" and m["metadata"]["name"] == "gateway"
    )
    assert gateway["metadata"]["namespace"] == "csp-hub"
    assert gateway["spec"]["template"]["spec"]["containers"][0]["image"].endswith("/gateway:0.1.0")
    assert (
        gateway["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "csp-hub"
    )
    namespace = next(m for m in production if m["kind"] == "Namespace")
    assert "namespace" not in namespace["metadata"]

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(REPO / "deploy" / "k8s" / "base", overlay)
    (overlay / "kustomization.yaml").write_text(f"resources: [{base}]\npatches: []\n")
    with pytest.raises(KustomizeError, match="patches"):
        render(overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{base}]\nimages: [{{name: csp-nothing, newTag: x}}]\n"
    )
    with pytest.raises(KustomizeError, match="csp-nothing"):
        render(overlay)


@pytest.mark.slow
def test_check_script_passes_and_catches_a_broken_manifest(tmp_path: Path) -> None:
    result = run("bash", "deploy/check.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deploy checks passed" in result.stdout

    copy = tmp_path / "repo"
    for part in ("services", "deploy", "docker-compose.yml", "docker-compose.override.yml"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(
                source, copy / part, ignore=shutil.ignore_patterns("__pycache__", "secrets")
            )
        else:
            shutil.copy(source, copy / part)
    job = copy / "deploy" / "k8s" / "base" / "migrate-job.yaml"
    job.write_text(job.read_text().replace("backoffLimit: 4", "backoffLimit: four"))
    env = {**os.environ, "VENV": str(Path(sys.executable).parent.parent)}
    broken = subprocess.run(
        ["bash", str(copy / "deploy" / "check.sh")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert broken.returncode != 0
    assert "backoffLimit" in broken.stdout + broken.stderr


@pytest.mark.slow
def test_backup_then_restore_brings_every_database_back(init_prefix: str, tmp_path: Path) -> None:
    env = pg_env(init_prefix)
    assert run("bash", "deploy/postgres/init-databases.sh", env=env).returncode == 0
    admin = make_url(PG_ADMIN_URL)

    def execute(service: str, statement: str) -> list[tuple[object, ...]]:
        url = admin.set(database=f"{init_prefix}{service}", username=f"{init_prefix}{service}")
        engine = create_engine(url)
        with engine.begin() as connection:
            result = connection.execute(text(statement))
            rows = [tuple(row) for row in result] if result.returns_rows else []
        engine.dispose()
        return rows

    for service in SERVICES:
        execute(service, "CREATE TABLE kept (id integer primary key, note text)")
        execute(service, f"INSERT INTO kept VALUES (1, 'before {service}')")
    backup = run("bash", "deploy/backup.sh", str(tmp_path / "dumps"), env=env)
    assert backup.returncode == 0, backup.stderr
    assert (tmp_path / "dumps").stat().st_mode & 0o077 == 0
    for service in SERVICES:
        execute(service, "UPDATE kept SET note = 'damaged'")
        execute(service, "CREATE TABLE after_backup (id integer)")
    restore = run("bash", "deploy/restore.sh", str(tmp_path / "dumps"), env=env)
    assert restore.returncode == 0, restore.stderr
    for service in SERVICES:
        assert execute(service, "SELECT note FROM kept") == [(f"before {service}",)]
        # Restored objects belong to the service's role, so the service can migrate them later.
        owner = execute(service, "SELECT tableowner FROM pg_tables WHERE tablename = 'kept'")
        assert owner == [(f"{init_prefix}{service}",)]
        assert execute(service, "SELECT to_regclass('after_backup') IS NULL") == [(True,)]
    missing = run("bash", "deploy/restore.sh", str(tmp_path / "nothing"), "gateway", env=env)
    assert missing.returncode != 0
