"""Generates the hub's secrets for a new deployment (standard library only; run from the repo).

python deploy/generate_secrets.py compose > .env              # for docker compose
python deploy/generate_secrets.py k8s deploy/k8s/secrets --pg-host db.internal
python deploy/generate_secrets.py value internal-secret       # one new value, for rotation
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

SERVICES = ("gateway", "agreements", "ingest", "depersonalise")


def new_value(kind: str) -> str:
    """A fresh random value; operators' and agency keys share the ``csp_`` prefix of issued keys."""
    if kind == "admin-key":
        # The gateway's own key format: csp_<public key id>_<secret>.
        return f"csp_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    if kind in ("audit-signing-key", "oauth-signing-key"):
        return base64.b64encode(secrets.token_bytes(32)).decode("ascii")  # an Ed25519 seed
    if kind in ("internal-secret", "linkage-key"):
        return secrets.token_urlsafe(48)
    if kind == "password":
        return secrets.token_urlsafe(24)
    raise ValueError(f"unknown kind {kind!r}")


def compose_env() -> dict[str, str]:
    values = {
        "POSTGRES_PASSWORD": new_value("password"),
        "CSP_INTERNAL_SECRET": new_value("internal-secret"),
        "CSP_ADMIN_KEY": new_value("admin-key"),
        "CSP_GATEWAY_AUDIT_SIGNING_KEY": new_value("audit-signing-key"),
        "CSP_GATEWAY_OAUTH_SIGNING_KEY": new_value("oauth-signing-key"),
        "CSP_INGEST_LINKAGE_KEY": new_value("linkage-key"),
    }
    for service in SERVICES:
        values[f"CSP_{service.upper()}_DB_PASSWORD"] = new_value("password")
    return values


def database_url(service: str, password: str, host: str, port: int, prefix: str) -> str:
    name = prefix + service
    return f"postgresql+psycopg://{name}:{password}@{host}:{port}/{name}"


def k8s_env_files(host: str, port: int, prefix: str) -> dict[str, dict[str, str]]:
    """One env file per Kubernetes Secret the manifests reference (see deploy/k8s/base)."""
    files: dict[str, dict[str, str]] = {
        "internal.env": {"CSP_INTERNAL_SECRET": new_value("internal-secret")},
        "db-passwords.env": {},
    }
    for service in SERVICES:
        password = new_value("password")
        files["db-passwords.env"][f"CSP_{service.upper()}_DB_PASSWORD"] = password
        files[f"{service}.env"] = {
            f"CSP_{service.upper()}_DATABASE_URL": database_url(
                service, password, host, port, prefix
            )
        }
    files["gateway.env"]["CSP_ADMIN_KEY"] = new_value("admin-key")
    files["gateway.env"]["CSP_GATEWAY_AUDIT_SIGNING_KEY"] = new_value("audit-signing-key")
    files["gateway.env"]["CSP_GATEWAY_OAUTH_SIGNING_KEY"] = new_value("oauth-signing-key")
    files["ingest.env"]["CSP_INGEST_LINKAGE_KEY"] = new_value("linkage-key")
    return files


def render(values: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


def write_private(path: Path, text: str) -> None:
    # Created owner-only from the start, so the secret is never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("compose", help="print a .env for docker compose")
    k8s = commands.add_parser("k8s", help="write one env file per Kubernetes Secret")
    k8s.add_argument("directory", type=Path)
    k8s.add_argument("--pg-host", required=True)
    k8s.add_argument("--pg-port", type=int, default=5432)
    k8s.add_argument("--db-prefix", default="csp_")
    value = commands.add_parser("value", help="print one new value")
    value.add_argument(
        "kind",
        choices=(
            "admin-key",
            "internal-secret",
            "linkage-key",
            "password",
            "audit-signing-key",
            "oauth-signing-key",
        ),
    )
    args = parser.parse_args(argv)

    if args.command == "compose":
        sys.stdout.write(render(compose_env()))
    elif args.command == "k8s":
        args.directory.mkdir(parents=True, exist_ok=True)
        for name, values in k8s_env_files(args.pg_host, args.pg_port, args.db_prefix).items():
            write_private(args.directory / name, render(values))
            print(f"wrote {args.directory / name}")
    else:
        print(new_value(args.kind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
